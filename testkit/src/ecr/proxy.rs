//! The proxy in front of the storage registry: its shared state, the answers it builds, and
//! the routing of each `/v2/` request to a rule (auth, rate limits, repository check) and a
//! handler.

use super::api::{IssuedTokens, TokenState, TOKEN_EXPIRED};
use super::control_plane::{ControlPlane, ControlPlaneError};
use super::manifests::{manifest_put, referrers};
use super::route::Route;
use super::rules::Bucket;
use super::s3::blob_redirect;
use super::uploads::{part_too_small, upload_part};
use super::{EcrAction, EcrCounts, EcrRules, RateLimits};
use base64::Engine as _;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http_body_util::{combinators::BoxBody, BodyExt, BodyStream, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{HeaderMap, Method, Request, Response};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a repository moto listed is taken to exist without asking again. Short, because
/// tests create and delete repositories between requests; manifest PUTs always ask afresh.
const REPOSITORY_CACHE_TTL: Duration = Duration::from_secs(1);

/// What the proxy, the S3 stand-in and the API listener share: addresses, the control plane,
/// the rules in force, rate buckets and counts, and what is kept between requests.
pub(super) struct State {
    pub(super) host: String,
    /// moto's fixed password for the account (accepted while no token lifetime is enforced).
    pub(super) password: String,
    /// The tokens the API listener issued.
    pub(super) tokens: IssuedTokens,
    pub(super) own: String,
    pub(super) storage: String,
    pub(super) s3: String,
    /// Signs the S3 stand-in's URLs.
    pub(super) secret: String,
    pub(super) moto: ControlPlane,
    pub(super) http: reqwest::Client,
    pub(super) rules: Mutex<EcrRules>,
    pub(super) buckets: Mutex<HashMap<EcrAction, Bucket>>,
    pub(super) counts: Mutex<EcrCounts>,
    /// Repositories moto listed, and when.
    pub(super) known_repos: Mutex<HashMap<String, Instant>>,
    /// One lock per repository around check, store and register of a manifest PUT, so two
    /// concurrent pushes to one immutable tag cannot both pass the check.
    pub(super) manifest_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Bytes received by the latest PATCH of each upload session.
    pub(super) last_parts: Mutex<HashMap<String, Arc<AtomicU64>>>,
    /// Referrer descriptors by (repository, subject digest).
    pub(super) referrers: Mutex<HashMap<(String, String), Vec<Value>>>,
    /// Blobs (configs and layers) a committed manifest references, by repository: what ECR
    /// lets another repository mount from it when blob mounting is on.
    pub(super) committed_blobs: Mutex<HashMap<String, std::collections::HashSet<String>>>,
    pub(super) lose_manifest_puts: AtomicU64,
}

pub(super) type Body = BoxBody<Bytes, std::io::Error>;

pub(super) fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A distribution-style error answer: `{"errors":[{"code":…,"message":…}]}`.
pub(super) fn registry_error(status: u16, code: &str, message: &str) -> Response<Body> {
    let body = json!({"errors": [{"code": code, "message": message}]}).to_string();
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .header("docker-distribution-api-version", "registry/2.0")
        .body(full(body))
        .unwrap()
}

pub(super) fn control_plane_failure(e: &ControlPlaneError) -> Response<Body> {
    registry_error(500, "UNKNOWN", &format!("ECR control plane (moto): {e}"))
}

/// Query parameters of a path-and-query, decoded.
pub(super) fn query_pairs(pq: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://stand-in{pq}"))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

/// Whether a request carries body bytes (a length above zero, or a chunked body).
fn has_body(headers: &HeaderMap) -> bool {
    match headers.get("content-length") {
        Some(len) => len.to_str().ok().and_then(|l| l.parse::<u64>().ok()) != Some(0),
        None => headers.contains_key("transfer-encoding"),
    }
}

/// The password of a Basic `AWS:<password>` header, if the request carries one.
fn aws_password(headers: &HeaderMap) -> Option<String> {
    let encoded = headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    String::from_utf8(decoded)
        .ok()?
        .strip_prefix("AWS:")
        .map(str::to_string)
}

impl State {
    /// The 401 to answer, unless the request carries a token the rules accept.
    fn auth_refusal(&self, headers: &HeaderMap, rules: &EcrRules) -> Option<Response<Body>> {
        let Some(password) = aws_password(headers) else {
            return Some(self.unauthorized("Not Authorized"));
        };
        let issued = self.tokens.state(&password);
        match rules.token_lifetime {
            Some(_) if issued == TokenState::Valid => None,
            // ECR's answer to a stale token; moto's fixed one is refused alike.
            Some(_) => Some(self.unauthorized(TOKEN_EXPIRED)),
            None if password == self.password || issued != TokenState::Unknown => None,
            None => Some(self.unauthorized("Not Authorized")),
        }
    }

    /// 401 `DENIED` with ECR's Basic challenge.
    fn unauthorized(&self, message: &str) -> Response<Body> {
        let mut resp = registry_error(401, "DENIED", message);
        resp.headers_mut().insert(
            "www-authenticate",
            format!(
                "Basic realm=\"https://{}/\",service=\"ecr.amazonaws.com\"",
                self.host
            )
            .parse()
            .unwrap(),
        );
        resp
    }

    /// Counts a call of `action`; false when its bucket is empty (the call is throttled).
    pub(super) fn admit(&self, action: EcrAction, limits: Option<&RateLimits>) -> bool {
        let admitted = match limits {
            None => true,
            Some(limits) => {
                let rate = f64::from(limits.rate(action).max(1));
                let burst = f64::from(limits.burst(action).max(1));
                let mut buckets = self.buckets.lock().unwrap();
                let now = Instant::now();
                buckets
                    .entry(action)
                    .or_insert(Bucket::full(burst, now))
                    .take(rate, burst, now)
            }
        };
        self.counts.lock().unwrap().record(action, !admitted);
        admitted
    }

    /// `Ok` when moto has the repository; else the answer to give (404 `NAME_UNKNOWN`).
    async fn check_repository(&self, repo: &str) -> Result<(), Response<Body>> {
        if let Some(seen) = self.known_repos.lock().unwrap().get(repo) {
            if seen.elapsed() < REPOSITORY_CACHE_TTL {
                return Ok(());
            }
        }
        match self.moto.repository(repo).await {
            Ok(Some(_)) => {
                self.known_repos
                    .lock()
                    .unwrap()
                    .insert(repo.to_string(), Instant::now());
                Ok(())
            }
            Ok(None) => Err(self.name_unknown(repo)),
            Err(e) => Err(control_plane_failure(&e)),
        }
    }

    pub(super) fn name_unknown(&self, repo: &str) -> Response<Body> {
        registry_error(
            404,
            "NAME_UNKNOWN",
            &format!(
                "The repository with name '{repo}' does not exist in the registry with id '{}'",
                self.moto.account
            ),
        )
    }

    /// A request to the storage registry with the client's headers, minus hop-by-hop ones and
    /// `Authorization` (storage has no auth). `keep_length`: keep `Content-Length` (for
    /// streamed bodies; a buffered body sets its own).
    pub(super) fn storage_request(
        &self,
        method: &Method,
        headers: &HeaderMap,
        pq: &str,
        keep_length: bool,
    ) -> reqwest::RequestBuilder {
        let mut rb = self
            .http
            .request(method.clone(), format!("{}{pq}", self.storage));
        for (k, v) in headers {
            let skip = matches!(
                k.as_str(),
                "host" | "connection" | "transfer-encoding" | "keep-alive" | "authorization"
            ) || (k.as_str() == "content-length" && !keep_length);
            if !skip {
                rb = rb.header(k, v);
            }
        }
        rb
    }

    /// Passes a request on with its body streamed, and relays the answer.
    pub(super) async fn forward(
        &self,
        req: Request<Incoming>,
        pq: &str,
    ) -> Result<Response<Body>, std::io::Error> {
        let (parts, body) = req.into_parts();
        let body = BodyStream::new(body).try_filter_map(|f| async move { Ok(f.into_data().ok()) });
        let resp = self
            .storage_request(&parts.method, &parts.headers, pq, true)
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await
            .map_err(std::io::Error::other)?;
        Ok(self.relay(resp))
    }

    /// The storage registry's answer, streamed, with `Location` pointing at the proxy.
    pub(super) fn relay(&self, resp: reqwest::Response) -> Response<Body> {
        let mut out = Response::builder().status(resp.status().as_u16());
        for (k, v) in resp.headers() {
            match k.as_str() {
                "connection" | "transfer-encoding" | "keep-alive" => {}
                "location" => {
                    let loc = v.to_str().unwrap_or("").replace(&self.storage, &self.own);
                    out = out.header(k, loc);
                }
                _ => out = out.header(k, v),
            }
        }
        let stream = resp
            .bytes_stream()
            .map(|chunk| chunk.map(Frame::data).map_err(std::io::Error::other));
        out.body(BodyExt::boxed(StreamBody::new(stream))).unwrap()
    }
}

pub(super) async fn handle(
    req: Request<Incoming>,
    st: Arc<State>,
) -> Result<Response<Body>, std::io::Error> {
    let path = req.uri().path().to_string();
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| path.clone());
    let Some(rest) = path.strip_prefix("/v2/").or((path == "/v2").then_some("")) else {
        return Ok(registry_error(404, "NOT_FOUND", "not a registry API path"));
    };
    let rules = st.rules.lock().unwrap().clone();
    if rules.require_auth {
        if let Some(refused) = st.auth_refusal(req.headers(), &rules) {
            return Ok(refused);
        }
    }
    let route = Route::parse(rest);
    let method = req.method().clone();
    if let Some(action) = route.action(&method) {
        if !st.admit(action, rules.rate_limits.as_ref()) {
            return Ok(registry_error(429, "TOOMANYREQUESTS", "Rate exceeded"));
        }
    }
    if let Route::Manifest { repo, reference } = &route {
        if method == Method::PUT {
            return manifest_put(req, &st, &rules, repo, reference).await;
        }
    }
    if let Some(repo) = route.repo() {
        if let Err(answer) = st.check_repository(repo).await {
            return Ok(answer);
        }
    }
    match (&route, &method) {
        (Route::Blob { repo, digest }, &Method::GET) if rules.redirect_blob_gets => {
            blob_redirect(req, &st, repo, digest, &pq).await
        }
        (Route::UploadStart { repo }, &Method::POST) if pq.contains("mount=") => {
            // ECR's default refuses every mount; with blob mounting on, only a blob a
            // committed manifest of the source repository references, between repositories
            // with the same encryption. A refused mount is answered as a plain upload start.
            let allowed = rules.blob_mounting && st.may_mount(repo, &pq).await;
            let pq = if allowed {
                pq.clone()
            } else {
                without_mount(&pq)
            };
            st.forward(req, &pq).await
        }
        (Route::Upload { id, .. }, &Method::PATCH) => upload_part(req, &st, &rules, id, &pq).await,
        (Route::Upload { id, .. }, &Method::PUT) => {
            if let Some(refused) = part_too_small(&st, &rules, id, has_body(req.headers())) {
                return Ok(refused);
            }
            let resp = st.forward(req, &pq).await;
            st.last_parts.lock().unwrap().remove(id);
            resp
        }
        (Route::Referrers { repo, digest }, &Method::GET) => Ok(referrers(&st, repo, digest, &pq)),
        _ => st.forward(req, &pq).await,
    }
}

/// `pq` without its `mount` and `from` parameters.
fn without_mount(pq: &str) -> String {
    let mut url = reqwest::Url::parse(&format!("http://stand-in{pq}")).unwrap();
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .into_owned()
        .filter(|(k, _)| k != "mount" && k != "from")
        .collect();
    if kept.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(kept);
    }
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}

impl State {
    /// Whether ECR (with blob mounting on) would mount `?mount=<digest>&from=<repo>` into
    /// `repo`: a committed manifest in the source repository references the blob, and both
    /// repositories have the same encryption settings.
    async fn may_mount(&self, repo: &str, pq: &str) -> bool {
        let url = reqwest::Url::parse(&format!("http://stand-in{pq}")).unwrap();
        let param = |name: &str| {
            url.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        let (Some(digest), Some(from)) = (param("mount"), param("from")) else {
            return false;
        };
        let referenced = self
            .committed_blobs
            .lock()
            .unwrap()
            .get(&from)
            .is_some_and(|blobs| blobs.contains(&digest));
        if !referenced {
            return false;
        }
        match (
            self.moto.repository(&from).await,
            self.moto.repository(repo).await,
        ) {
            (Ok(Some(a)), Ok(Some(b))) => {
                a["encryptionConfiguration"] == b["encryptionConfiguration"]
            }
            _ => false,
        }
    }
}
