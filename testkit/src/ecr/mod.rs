//! A local stand-in for one ECR registry host (`{account}.dkr.ecr.{region}.amazonaws.com`):
//! moto holds the control plane (repositories, tag mutability, images), a `docker-registry`
//! without auth holds the bytes, and a proxy of ours in front of it applies what ECR's registry
//! API does differently from a plain distribution registry. An API listener in front of moto
//! ([`LocalEcr::api_endpoint`], for `AWS_ENDPOINT_URL_ECR`) issues ECR's short-lived
//! authorization tokens. Each rule can be switched off ([`EcrRules`]), at start or at run time:
//!
//! 1. **Auth** — every `/v2/` request needs Basic `AWS:<token password>`, else 401 `DENIED`.
//!    The API listener's `GetAuthorizationToken` issues a new token per call, with `expiresAt`
//!    its end (12 hours, or [`EcrRules::token_lifetime`]). Without a token lifetime rule, moto's
//!    fixed password for the account ([`LocalEcr::password`]) and every issued token are
//!    accepted; with one, only issued tokens until they expire — a stale token (or moto's, which
//!    moto itself says expired in 2015) gets 401 `DENIED` "Your authorization token has expired.
//!    Reauthenticate and try again.". The header is stripped before the storage registry sees
//!    the request.
//! 2. **Repositories exist in moto** — a request on a repository that moto's
//!    `DescribeRepositories` does not list answers 404 `NAME_UNKNOWN`.
//! 3. **Tag immutability as moto holds it** — a manifest PUT to an existing tag in an immutable
//!    position answers 400 `TAG_INVALID`, even when the manifest is the same.
//! 4. **Pushed images are registered in moto** (`PutImage` with the exact manifest bytes and
//!    their sha256), so `DescribeImages` lists real digests and tags.
//! 5. **Rate limits** — a token bucket per ECR API action; over the limit: 429
//!    `TOOMANYREQUESTS`, without `Retry-After`.
//! 6. **Chunked uploads** — a non-final layer part under 5 MiB is refused (400
//!    `LAYER_PART_TOO_SMALL`) when the next part (or a final PUT carrying bytes) arrives.
//! 7. **Blob GETs redirect** (307) to a second listener standing in for S3's pre-signed URLs,
//!    which refuses requests that also carry an `Authorization` header.
//! 8. **No cross-repository mounts** unless switched on (ECR's account default is off): a
//!    mount request gets a fresh upload session. Switched on, as ECR's blob mounting: only a
//!    blob that a manifest committed in the source repository references, between
//!    repositories with the same encryption settings.
//! 9. **Referrers API** (OCI 1.1), which distribution 2.8 lacks, from an in-memory index of the
//!    manifests pushed through the proxy.
//! 10. **Lost responses** — [`LocalEcr::lose_next_manifest_put_response`]: the next manifest PUT
//!     takes full effect, then the connection closes without an answer.
//!
//! Every request is named by the ECR API action it costs (manifest PUT = `PutImage`, …; see
//! [`EcrAction`]) for rate limits and [`EcrCounts`]; so is `GetAuthorizationToken` on the API
//! listener (20/s after a burst of 200; `ThrottlingException` beyond). Anything else is passed
//! to the storage registry unchanged, with its `Location` headers rewritten to the proxy; the
//! API listener passes every other call to moto unchanged.
//!
//! moto picks the account from the `x-moto-account-id` header (an unknown access key maps to
//! 123456789012), so every control-plane call here sends the stand-in's account, and the API
//! listener adds it to calls that name none.
//!
//! # Layout
//!
//! - `rules` — [`EcrRules`], [`RateLimits`], [`EcrAction`], [`EcrCounts`], token buckets, tag
//!   immutability and ECR's wildcard exclusion filters.
//! - `control_plane` — moto's ECR API ([`ControlPlaneError`]).
//! - `api` — the API listener in front of moto, and the authorization tokens it issues.
//! - `route` — what a `/v2/…` path names and the ECR action it costs.
//! - `proxy` — the proxy's state and the routing of each request (auth, rate limits,
//!   repository check).
//! - `manifests` — manifest PUTs and the referrers API.
//! - `uploads` — chunked uploads and their minimum part size.
//! - `s3` — blob redirects and the S3 stand-in serving them.

mod api;
mod control_plane;
mod manifests;
mod proxy;
mod route;
mod rules;
mod s3;
mod uploads;

pub use control_plane::ControlPlaneError;
pub use rules::{EcrAction, EcrCounts, EcrRules, RateLimits, MIN_PART_BYTES};

use crate::registry::{RegistryOpts, RegistryProcess};
use api::IssuedTokens;
use control_plane::ControlPlane;
use proxy::State;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A running ECR stand-in: its own storage registry, the proxy, the S3 stand-in and the API
/// listener. Everything stops when it is dropped (moto belongs to the caller).
pub struct LocalEcr {
    storage: RegistryProcess,
    port: u16,
    api_port: u16,
    state: Arc<State>,
    tasks: [tokio::task::JoinHandle<()>; 3],
}

impl LocalEcr {
    /// Starts a stand-in for `{account}.dkr.ecr.{region}.amazonaws.com`, with moto's ECR at
    /// `moto_endpoint` (`http://127.0.0.1:PORT`) as its control plane.
    pub async fn start(
        moto_endpoint: &str,
        account: &str,
        region: &str,
        rules: EcrRules,
    ) -> LocalEcr {
        let storage = RegistryProcess::start(RegistryOpts::default()).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s3_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let s3_port = s3_listener.local_addr().unwrap().port();
        let api_port = api_listener.local_addr().unwrap().port();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let state = Arc::new(State {
            host: format!("{account}.dkr.ecr.{region}.amazonaws.com"),
            password: format!("{account}-auth-token"),
            tokens: IssuedTokens::default(),
            own: format!("http://127.0.0.1:{port}"),
            storage: storage.url(),
            s3: format!("http://127.0.0.1:{s3_port}"),
            secret: format!("{:016x}", fastrand::u64(..)),
            moto: ControlPlane {
                endpoint: moto_endpoint.trim_end_matches('/').to_string(),
                account: account.to_string(),
                region: region.to_string(),
                http: http.clone(),
            },
            http,
            rules: Mutex::new(rules),
            buckets: Mutex::new(HashMap::new()),
            counts: Mutex::new(EcrCounts::default()),
            known_repos: Mutex::new(HashMap::new()),
            manifest_locks: Mutex::new(HashMap::new()),
            last_parts: Mutex::new(HashMap::new()),
            referrers: Mutex::new(HashMap::new()),
            committed_blobs: Mutex::new(HashMap::new()),
            lose_manifest_puts: AtomicU64::new(0),
        });
        let (st, s3_st, api_st) = (state.clone(), state.clone(), state.clone());
        let tasks = [
            crate::serve(listener, move |req| proxy::handle(req, st.clone())),
            crate::serve(s3_listener, move |req| s3::handle_s3(req, s3_st.clone())),
            crate::serve(api_listener, move |req| {
                api::handle_api(req, api_st.clone())
            }),
        ];
        LocalEcr {
            storage,
            port,
            api_port,
            state,
            tasks,
        }
    }

    /// `http://127.0.0.1:PORT`, the endpoint to map [`LocalEcr::host`] to
    /// (`registries.HOST.endpoint`, with `plain_http`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The ECR registry host it stands for: `{account}.dkr.ecr.{region}.amazonaws.com`.
    pub fn host(&self) -> String {
        self.state.host.clone()
    }

    /// `http://127.0.0.1:PORT`, the ECR API endpoint to give the SDK (`AWS_ENDPOINT_URL_ECR`):
    /// moto's ECR API, except that `GetAuthorizationToken` issues tokens that expire (rule 1).
    pub fn api_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// moto's fixed Basic-auth password (user `AWS`), the one in moto's own
    /// `GetAuthorizationToken` answer for the account: `{account}-auth-token`. Accepted while
    /// [`EcrRules::token_lifetime`] is `None`.
    pub fn password(&self) -> String {
        self.state.password.clone()
    }

    /// The rules in force.
    pub fn rules(&self) -> EcrRules {
        self.state.rules.lock().unwrap().clone()
    }

    /// Switches the rules from the next request on; rate buckets start full again.
    pub fn set_rules(&self, rules: EcrRules) {
        *self.state.rules.lock().unwrap() = rules;
        self.state.buckets.lock().unwrap().clear();
    }

    /// Calls and throttled calls per ECR action so far.
    pub fn counts(&self) -> EcrCounts {
        self.state.counts.lock().unwrap().clone()
    }

    /// Makes the next manifest PUT that succeeds take full effect (storage and moto) and then
    /// close the connection without an answer — a timeout after ECR committed. Calls add up:
    /// twice loses the next two.
    pub fn lose_next_manifest_put_response(&self) {
        self.state.lose_manifest_puts.fetch_add(1, Ordering::SeqCst);
    }

    /// The digest `repo:tag` holds in storage (`None` when absent), bypassing every rule.
    pub async fn digest(&self, repo: &str, tag: &str) -> Option<String> {
        self.storage.digest(repo, tag).await
    }

    /// The storage registry behind the proxy (no auth, no rules), e.g. to check what it holds.
    pub fn storage(&self) -> &RegistryProcess {
        &self.storage
    }

    /// Calls moto's ECR API as this stand-in's account and region — e.g. `CreateRepository`,
    /// `PutImageTagMutability`, `DescribeImages` with their JSON input — and returns the JSON
    /// answer.
    pub async fn control_plane(
        &self,
        action: &str,
        input: Value,
    ) -> Result<Value, ControlPlaneError> {
        self.state.moto.call(action, &input).await
    }
}

impl Drop for LocalEcr {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
