//! A registry token server (the Docker/OCI bearer-token flow) for a `docker-registry` run with
//! `auth: token`: it checks Basic credentials, grants what each `scope` asks for, and signs an
//! ES256 JWT whose `x5c` header carries a self-signed certificate the registry trusts
//! (`rootcertbundle`). The registry does the real validation: issuer, audience, expiry,
//! signature and the granted actions.
//!
//! Requests with wrong credentials get 401; requests without credentials get a token that
//! grants nothing (anonymous), as public registries do.

use crate::openssl;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The `service` (JWT audience) the registry and the token server agree on.
pub const SERVICE: &str = "ecr-sync-test-registry";
/// The JWT issuer the registry expects.
pub const ISSUER: &str = "ecr-sync-test-token-server";
/// How long a token lasts.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// What a registry needs to trust this server's tokens.
#[derive(Debug, Clone)]
pub struct TokenAuth {
    /// The token endpoint (`http://127.0.0.1:PORT/token`).
    pub realm: String,
    /// The certificate whose key signs the tokens.
    pub cert_file: PathBuf,
}

struct State {
    user: String,
    password: String,
    key: aws_lc_rs::signature::EcdsaKeyPair,
    cert_der: Vec<u8>,
    /// Every token request: (user, "USER (wrong password)" or "anonymous"; the scopes).
    requests: Mutex<Vec<(String, Vec<String>)>>,
}

/// A running token server; stops when dropped.
pub struct TokenServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
    dir: tempfile::TempDir,
}

impl TokenServer {
    /// Starts a token server accepting `user`/`password`.
    pub async fn start(user: &str, password: &str) -> TokenServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        crate::openssl_new_p256(d, "token", "/CN=ecr-sync test token signer", true, &[]);
        openssl(
            d,
            &[
                "pkcs8",
                "-topk8",
                "-nocrypt",
                "-in",
                "token.key",
                "-outform",
                "DER",
                "-out",
                "token.pk8",
            ],
        );
        openssl(
            d,
            &[
                "x509",
                "-in",
                "token.pem",
                "-outform",
                "DER",
                "-out",
                "token.der",
            ],
        );
        let key = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &std::fs::read(d.join("token.pk8")).unwrap(),
        )
        .expect("a P-256 PKCS#8 key");
        let state = Arc::new(State {
            user: user.to_string(),
            password: password.to_string(),
            key,
            cert_der: std::fs::read(d.join("token.der")).unwrap(),
            requests: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let st = state.clone();
        let task = crate::serve(listener, move |req| {
            let st = st.clone();
            async move { Ok::<_, std::convert::Infallible>(answer(&req, &st)) }
        });
        TokenServer {
            port,
            state,
            task,
            dir,
        }
    }

    /// What a registry needs to trust this server.
    pub fn auth(&self) -> TokenAuth {
        TokenAuth {
            realm: format!("http://127.0.0.1:{}/token", self.port),
            cert_file: self.dir.path().join("token.pem"),
        }
    }

    /// Every token request so far: (user, `USER (wrong password)` or `anonymous`; scopes).
    pub fn requests(&self) -> Vec<(String, Vec<String>)> {
        self.state.requests.lock().unwrap().clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn reply(status: u16, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// The Basic credentials of a request, if any.
fn basic(req: &Request<Incoming>) -> Option<(String, String)> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn answer(req: &Request<Incoming>, st: &State) -> Response<Full<Bytes>> {
    if req.uri().path() != "/token" {
        return reply(404, r#"{"details":"not found"}"#.into());
    }
    let scopes: Vec<String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.strip_prefix("scope="))
        .map(percent_decode)
        .collect();
    let user = match basic(req) {
        Some((u, p)) if u == st.user && p == st.password => u,
        Some((u, _)) => {
            let who = format!("{u} (wrong password)");
            st.requests.lock().unwrap().push((who, scopes));
            return reply(
                401,
                r#"{"details":"incorrect username or password"}"#.into(),
            );
        }
        None => "anonymous".to_string(),
    };
    st.requests
        .lock()
        .unwrap()
        .push((user.clone(), scopes.clone()));
    let access: Vec<serde_json::Value> = if user == "anonymous" {
        Vec::new()
    } else {
        scopes
            .iter()
            .filter_map(|s| {
                let mut parts = s.splitn(3, ':');
                let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                Some(serde_json::json!({
                    "type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()
                }))
            })
            .collect()
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header =
        serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [STANDARD.encode(&st.cert_der)]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": user, "aud": SERVICE, "iat": now, "nbf": now - 10,
        "exp": now + TOKEN_LIFETIME.as_secs(), "jti": format!("{now}-{}", st.requests.lock().unwrap().len()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = st
        .key
        .sign(
            &aws_lc_rs::rand::SystemRandom::new(),
            signing_input.as_bytes(),
        )
        .expect("signing");
    let token = format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.as_ref())
    );
    reply(
        200,
        serde_json::json!({"token": token, "access_token": token, "expires_in": TOKEN_LIFETIME.as_secs()})
            .to_string(),
    )
}

/// Decodes `%XX` escapes (and `+` as space) in a query value.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
