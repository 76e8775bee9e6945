//! A counting, fault-injecting HTTP proxy for one upstream registry. Every request is recorded
//! (method and path); each fault hits a request with probability 1/n, drawn from a seeded
//! generator, so retries see fresh draws and no retry period can line up with the fault pattern
//! (a fixed "every n-th request" rule failed one lone retry loop on every try when its requests
//! kept landing on multiples of n):
//! connection resets, 500s, 429 with `Retry-After: 1`, corrupted or always-failing blob GETs, and
//! slow blob GETs.

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http_body_util::{combinators::BoxBody, BodyExt, BodyStream, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Which faults to inject. `0` disables one; `n` hits one request in n on average (`1`: all).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Close the connection without answering.
    pub reset_every: u64,
    /// Answer 500.
    pub error_every: u64,
    /// Answer 429 with `Retry-After: 1`.
    pub throttle_every: u64,
    /// Answer 429 with no `Retry-After`, as ECR throttles.
    pub throttle_bare_every: u64,
    /// Hold the request [`Faults::slow_by`] before passing it on (a slow answer).
    pub slow_every: u64,
    /// How long a slow answer is held.
    pub slow_by: std::time::Duration,
    /// Flip one byte in every blob GET body (same length: only a digest check can tell).
    pub corrupt_blobs: bool,
    /// Answer every blob GET with 500 (a source that can never serve a layer).
    pub fail_blob_gets: bool,
    /// Hold every blob GET this long before answering, so a copy is surely in flight for a
    /// while (kill and drain tests).
    pub blob_delay: std::time::Duration,
    /// Answer this many manifest PUTs (from when the faults are set) with 400
    /// `DIGEST_INVALID`, as distribution does when a blob the manifest references is being
    /// rewritten by a concurrent upload or mount; they do not reach the registry.
    pub digest_invalid_manifest_puts: u64,
}

struct State {
    upstream: String,
    own: String,
    faults: Mutex<Faults>,
    injected: AtomicU64,
    rng: Mutex<fastrand::Rng>,
    seen: Mutex<Vec<(String, String)>>,
    client: reqwest::Client,
}

/// A running proxy; stops when dropped.
pub struct Proxy {
    /// Its port on 127.0.0.1.
    pub port: u16,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

type Body = BoxBody<Bytes, std::io::Error>;

fn full(status: u16, headers: &[(&str, &str)]) -> Response<Body> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed(),
    )
    .unwrap()
}

async fn handle(req: Request<Incoming>, st: Arc<State>) -> Result<Response<Body>, std::io::Error> {
    let method = req.method().clone();
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    st.seen
        .lock()
        .unwrap()
        .push((method.to_string(), pq.clone()));
    let faults = st.faults.lock().unwrap().clone();
    let hit = |every: u64| {
        let hit = every > 0 && st.rng.lock().unwrap().u64(..every) == 0;
        if hit {
            st.injected.fetch_add(1, Ordering::Relaxed);
        }
        hit
    };
    if hit(faults.reset_every) {
        return Err(std::io::Error::other("injected connection reset"));
    }
    if hit(faults.error_every) {
        return Ok(full(500, &[]));
    }
    if hit(faults.throttle_every) {
        return Ok(full(429, &[("retry-after", "1")]));
    }
    if hit(faults.throttle_bare_every) {
        return Ok(full(429, &[]));
    }
    if hit(faults.slow_every) {
        tokio::time::sleep(faults.slow_by).await;
    }
    if method == hyper::Method::PUT && pq.contains("/manifests/") {
        let mut f = st.faults.lock().unwrap();
        if f.digest_invalid_manifest_puts > 0 {
            f.digest_invalid_manifest_puts -= 1;
            st.injected.fetch_add(1, Ordering::Relaxed);
            let body = r#"{"errors":[{"code":"DIGEST_INVALID","message":"provided digest did not match uploaded content"}]}"#;
            return Ok(Response::builder()
                .status(400)
                .header("content-type", "application/json")
                .body(
                    Full::new(Bytes::from(body))
                        .map_err(|never| match never {})
                        .boxed(),
                )
                .unwrap());
        }
    }
    let blob_get = method == hyper::Method::GET && pq.contains("/blobs/sha256:");
    if blob_get && faults.fail_blob_gets {
        return Ok(full(500, &[]));
    }
    if blob_get && !faults.blob_delay.is_zero() {
        tokio::time::sleep(faults.blob_delay).await;
    }
    let mut rb = st
        .client
        .request(method.clone(), format!("{}{pq}", st.upstream));
    for (k, v) in req.headers() {
        if !matches!(
            k.as_str(),
            "host" | "connection" | "transfer-encoding" | "keep-alive"
        ) {
            rb = rb.header(k, v);
        }
    }
    let body =
        BodyStream::new(req.into_body()).try_filter_map(|f| async move { Ok(f.into_data().ok()) });
    let resp = rb
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .map_err(std::io::Error::other)?;
    let mut out = Response::builder().status(resp.status().as_u16());
    for (k, v) in resp.headers() {
        if matches!(
            k.as_str(),
            "connection" | "transfer-encoding" | "keep-alive"
        ) {
            continue;
        }
        if k.as_str() == "location" {
            let rewritten = v.to_str().unwrap_or("").replace(&st.upstream, &st.own);
            out = out.header(k, rewritten);
        } else {
            out = out.header(k, v);
        }
    }
    let corrupt = faults.corrupt_blobs && blob_get;
    let mut first = true;
    let stream = resp.bytes_stream().map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        if corrupt && first && !chunk.is_empty() {
            first = false;
            let mut v = chunk.to_vec();
            v[0] ^= 0xff;
            return Ok(Frame::data(Bytes::from(v)));
        }
        Ok(Frame::data(chunk))
    });
    Ok(out.body(BodyExt::boxed(StreamBody::new(stream))).unwrap())
}

impl Proxy {
    /// Starts a proxy in front of `upstream` (`http://127.0.0.1:PORT`).
    pub async fn start(upstream: &str, faults: Faults) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            upstream: upstream.trim_end_matches('/').to_string(),
            own: format!("http://127.0.0.1:{port}"),
            faults: Mutex::new(faults),
            injected: AtomicU64::new(0),
            rng: Mutex::new(fastrand::Rng::with_seed(0x5eed_fa17)),
            seen: Mutex::new(Vec::new()),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        });
        let st = state.clone();
        let task = crate::serve(listener, move |req| handle(req, st.clone()));
        Proxy { port, state, task }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Every request seen so far, as (method, path and query).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Forgets the requests seen so far.
    pub fn reset_counts(&self) {
        self.state.seen.lock().unwrap().clear();
    }

    /// Requests whose path contains `/blobs/` (GET, HEAD, uploads, mounts, PUTs).
    pub fn blob_requests(&self) -> usize {
        self.requests()
            .iter()
            .filter(|(_, p)| p.contains("/blobs/"))
            .count()
    }

    /// Faults injected so far (resets, 500s, 429s).
    pub fn injected(&self) -> u64 {
        self.state.injected.load(Ordering::Relaxed)
    }

    /// Changes the faults from now on.
    pub fn set_faults(&self, faults: Faults) {
        *self.state.faults.lock().unwrap() = faults;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
