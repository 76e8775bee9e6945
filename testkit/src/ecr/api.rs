//! The ECR API listener ([`LocalEcr::api_endpoint`](super::LocalEcr::api_endpoint)): every
//! control-plane call passes to moto unchanged, except that `GetAuthorizationToken`'s answer
//! carries a token issued here — a new one per call, with an expiry — so that the registry
//! proxy can refuse tokens once they expire, as ECR does. moto's own answer is one fixed
//! password per account that "expired" in 2015.

use super::control_plane::ECR_TARGET;
use super::proxy::{full, Body, State};
use super::EcrAction;
use base64::Engine as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How long an ECR authorization token lasts when [`EcrRules::token_lifetime`] does not say:
/// ECR's 12 hours.
///
/// [`EcrRules::token_lifetime`]: super::EcrRules::token_lifetime
pub(super) const ECR_TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// ECR's registry message (401 `DENIED`) for a token past its expiry.
pub(super) const TOKEN_EXPIRED: &str =
    "Your authorization token has expired. Reauthenticate and try again.";

/// What the registry proxy knows of a Basic password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TokenState {
    /// Not issued by the API listener.
    Unknown,
    Valid,
    Expired,
}

/// The tokens the API listener issued: password → when it expires.
#[derive(Default)]
pub(super) struct IssuedTokens {
    expiry: Mutex<HashMap<String, Instant>>,
    issued: AtomicU64,
}

impl IssuedTokens {
    /// A new password, valid for `lifetime`: moto's `{registry}-auth-token` with a serial
    /// number and a random part appended, so it is still shaped like moto's.
    fn issue(&self, moto_password: &str, lifetime: Duration) -> String {
        let serial = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let password = format!("{moto_password}-{serial}-{:016x}", fastrand::u64(..));
        self.expiry
            .lock()
            .unwrap()
            .insert(password.clone(), Instant::now() + lifetime);
        password
    }

    pub(super) fn state(&self, password: &str) -> TokenState {
        match self.expiry.lock().unwrap().get(password) {
            None => TokenState::Unknown,
            Some(until) if Instant::now() < *until => TokenState::Valid,
            Some(_) => TokenState::Expired,
        }
    }
}

/// A call on the API listener: `GetAuthorizationToken` is counted, rate limited and answered
/// with new tokens; anything else goes to moto as it came, as the stand-in's account unless
/// it names one (`x-moto-account-id`).
pub(super) async fn handle_api(
    req: Request<Incoming>,
    st: Arc<State>,
) -> Result<Response<Body>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let token_call = parts
        .headers
        .get("x-amz-target")
        .and_then(|t| t.to_str().ok())
        .and_then(|t| t.strip_prefix(ECR_TARGET))
        == Some(".GetAuthorizationToken");
    let rules = st.rules.lock().unwrap().clone();
    if token_call && !st.admit(EcrAction::GetAuthorizationToken, rules.rate_limits.as_ref()) {
        let body = json!({"__type": "ThrottlingException", "message": "Rate exceeded"});
        return Ok(Response::builder()
            .status(400)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amzn-errortype", "ThrottlingException")
            .body(full(body.to_string()))
            .unwrap());
    }
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let mut rb = st
        .http
        .request(parts.method.clone(), format!("{}{pq}", st.moto.endpoint));
    for (k, v) in &parts.headers {
        if !matches!(
            k.as_str(),
            "host" | "connection" | "transfer-encoding" | "keep-alive" | "content-length"
        ) {
            rb = rb.header(k, v);
        }
    }
    if !parts.headers.contains_key("x-moto-account-id") {
        rb = rb.header("x-moto-account-id", &st.moto.account);
    }
    let resp = rb.body(body).send().await.map_err(std::io::Error::other)?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let mut bytes = resp.bytes().await.map_err(std::io::Error::other)?;
    if token_call && status.is_success() {
        let lifetime = rules.token_lifetime.unwrap_or(ECR_TOKEN_LIFETIME);
        bytes = with_new_tokens(&st.tokens, &bytes, lifetime).into();
    }
    let mut out = Response::builder().status(status.as_u16());
    for (k, v) in &headers {
        if !matches!(
            k.as_str(),
            "connection" | "transfer-encoding" | "keep-alive" | "content-length"
        ) {
            out = out.header(k, v);
        }
    }
    Ok(out.body(full(bytes)).unwrap())
}

/// moto's `GetAuthorizationToken` answer with each entry's token replaced by a new one and
/// `expiresAt` set to its end, in epoch seconds as the AWS JSON protocol sends timestamps.
/// `proxyEndpoint` stays as moto gave it.
fn with_new_tokens(tokens: &IssuedTokens, moto_answer: &[u8], lifetime: Duration) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut answer: Value = serde_json::from_slice(moto_answer).unwrap_or(Value::Null);
    let expires_at = (SystemTime::now() + lifetime)
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as f64
        / 1000.0;
    for data in answer["authorizationData"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        let moto_password = data["authorizationToken"]
            .as_str()
            .and_then(|t| b64.decode(t).ok())
            .and_then(|t| String::from_utf8(t).ok())
            .and_then(|t| t.strip_prefix("AWS:").map(str::to_string))
            .unwrap_or_default();
        let password = tokens.issue(&moto_password, lifetime);
        data["authorizationToken"] = b64.encode(format!("AWS:{password}")).into();
        data["expiresAt"] = expires_at.into();
    }
    answer.to_string().into_bytes()
}
