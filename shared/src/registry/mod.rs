//! The OCI distribution API client: one [`Registry`] per registry host, holding its HTTP client
//! (TLS settings, connection pool), its authorization state and its shared backoff gate.
//!
//! Every request goes through one path: wait for the host's gate, authorize, send, classify.
//! Standalone calls (manifests, tag lists, blob HEADs) retry transient failures per the
//! [`RetryPolicy`]; the calls a blob transfer is made of (upload start or mount, blob GET, blob
//! PUT) try once, because the copy engine retries the transfer as a whole — one retry layer per
//! operation, so a failing blob is fetched at most `max_retries + 1` times. Blob bodies are
//! [`ByteStream`]s: callers never see the HTTP client's types.

mod auth;
mod error;
mod http;
mod pacing;
mod referrers;

pub use crate::manifest::Manifest;
pub use auth::{Credentials, TokenSource};
pub use error::{ErrorKind, RegistryError};
pub use pacing::{Budget, MANIFEST_PUT};
pub use referrers::{is_schema_tag, schema_tag, Listing, Referrer};

use crate::digest::Digest;
use crate::manifest;
use crate::retry::{RetryPolicy, Transient};
use auth::{parse_challenge, Authorizer, Scheme};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{http_client, tls_config};
use pacing::HostGate;
use reqwest::header::{
    HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LINK, LOCATION,
    WWW_AUTHENTICATE,
};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Tag list page size. ECR rejects `n` above 1000.
const TAG_PAGE_SIZE: u32 = 1000;
/// Longest a request keeps waiting its pace while the registry throttles it (429) before it
/// fails: throttling is waited out in place, not failed, yet a registry that never lets a
/// request through does not hold a job forever.
const MAX_THROTTLED: Duration = Duration::from_secs(600);

/// How to reach and authenticate to one registry.
pub struct RegistryOptions {
    /// The registry host as users write it (`111122223333.dkr.ecr.us-east-1.amazonaws.com`).
    pub host: String,
    /// Where its traffic actually goes: `https://host` unless overridden (`http://127.0.0.1:5001`).
    pub base_url: String,
    /// Extra trusted CA certificates (PEM).
    pub ca_pem: Option<Vec<u8>>,
    /// Credentials.
    pub credentials: Credentials,
    /// Retry policy for requests.
    pub retry: RetryPolicy,
    /// Rate budgets by kind of request (`PUT manifest`: the destination's PutImage quota).
    pub budgets: HashMap<&'static str, Arc<Budget>>,
}

/// Requests made, by kind; for reports and benchmarks.
#[derive(Debug, Default)]
pub struct RequestCounts {
    /// Every HTTP request sent, retries and token requests included.
    pub total: AtomicU64,
    /// Blob GETs, HEADs, upload starts, mounts and PUTs.
    pub blob: AtomicU64,
}

/// One registry: its client, authorization and throttling state.
pub struct Registry {
    host: String,
    base: String,
    /// Manifests, tags, uploads: HTTP/2 where the registry offers it (one connection, no
    /// handshake per concurrent request).
    http: reqwest::Client,
    /// Blob bodies: HTTP/1.1, one connection per stream. Over HTTP/2 a 512 MiB layer took half
    /// again the CPU (16 KiB frames and window updates) and longer.
    blob_http: reqwest::Client,
    auth: Authorizer,
    gate: HostGate,
    /// Per kind of request, the pace after a 429 without `Retry-After`.
    pacers: pacing::Pacers,
    retry: RetryPolicy,
    /// Repositories whose referrers API answered 404: the registry has none, and their
    /// referrers are read from the tag schema without asking again.
    no_referrers_api: Mutex<std::collections::HashSet<String>>,
    /// Requests made to this registry.
    pub counts: RequestCounts,
}

/// A blob body: chunks of bytes, or the error that cut it short.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, RegistryError>> + Send>>;

/// What a mount attempt achieved.
pub enum Mount {
    /// The blob is now in the repository.
    Mounted,
    /// Not mounted; an upload session was opened at this URL instead.
    Upload(String),
}

impl Transient for RegistryError {
    fn is_transient(&self) -> bool {
        self.is_retryable()
    }
    fn retry_after(&self) -> Option<Duration> {
        self.kind.retry_after()
    }
}

fn pull_scope(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

fn push_scope(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

impl Registry {
    /// Builds the client. Fails only on a bad CA certificate.
    pub fn new(opts: RegistryOptions) -> Result<Registry, RegistryError> {
        // One TLS setup (platform roots read once) for both clients; they differ in ALPN only.
        let tls = tls_config(&opts).map_err(|message| RegistryError {
            op: "TLS settings",
            url: opts.base_url.clone(),
            kind: ErrorKind::Protocol(message),
        })?;
        let http = http_client(&opts, tls.clone(), false)?;
        let blob_http = http_client(&opts, tls, true)?;
        Ok(Registry {
            host: opts.host,
            base: opts.base_url.trim_end_matches('/').to_string(),
            http,
            blob_http,
            auth: Authorizer::new(opts.credentials),
            gate: HostGate::default(),
            pacers: pacing::Pacers::new(opts.budgets),
            retry: opts.retry,
            no_referrers_api: Mutex::default(),
            counts: RequestCounts::default(),
        })
    }

    /// The registry host as written in the config.
    pub fn host(&self) -> &str {
        &self.host
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            self.url(location)
        }
    }

    /// Learns the auth scheme from `GET /v2/` once per registry.
    async fn ensure_scheme(&self) -> Result<(), RegistryError> {
        self.auth
            .scheme
            .get_or_try_init(|| async {
                let url = self.url("/v2/");
                let resp = self
                    .retry
                    .run("ping", || async {
                        self.gate.wait().await;
                        self.counts.total.fetch_add(1, Ordering::Relaxed);
                        let r = self
                            .http
                            .get(&url)
                            .send()
                            .await
                            .map_err(|e| error::transport("GET /v2/", &url, e))?;
                        if r.status().is_server_error()
                            || r.status() == StatusCode::TOO_MANY_REQUESTS
                        {
                            return Err(error::from_response("GET /v2/", &url, r).await);
                        }
                        Ok(r)
                    })
                    .await?;
                let scheme = match resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                {
                    Some(h) if resp.status() == StatusCode::UNAUTHORIZED => parse_challenge(h),
                    _ => Scheme::None,
                };
                // ECR answers with a Basic challenge; credentials are sent proactively from now on.
                let scheme = match (&self.auth.credentials, scheme) {
                    (Credentials::Tokens(_), Scheme::None) => Scheme::Basic,
                    (_, s) => s,
                };
                Ok::<_, RegistryError>(Mutex::new(scheme))
            })
            .await?;
        Ok(())
    }

    /// After a 429 or 503: a `Retry-After` closes the whole host for that long (the server
    /// asked); a 429 without one paces that kind of request ([`pacing`]); a 503 without one
    /// closes the host briefly.
    fn note_throttling(&self, op: &'static str, err: &RegistryError) {
        let ErrorKind::Status { status, .. } = &err.kind else {
            return;
        };
        match (status, err.kind.retry_after()) {
            (429 | 503, Some(wait)) => self.gate.close_for(wait.min(self.retry.max_retry_after)),
            (429, None) => self.pacers.throttled(op),
            (503, None) => self.gate.close_for(self.retry.min_delay),
            _ => {}
        }
    }

    /// Sends a request with auth, shared backoff and retries. Non-2xx answers become errors
    /// (404 as [`ErrorKind::NotFound`]); `build` is called again for each try. Throttling
    /// does not use up the retries: a request the registry keeps throttling waits its pace
    /// for up to [`MAX_THROTTLED`] before it fails.
    async fn send<F>(
        &self,
        op: &'static str,
        url: &str,
        scope: &str,
        build: F,
    ) -> Result<Response, RegistryError>
    where
        F: Fn(&reqwest::Client) -> RequestBuilder,
    {
        self.ensure_scheme().await?;
        let started = Instant::now();
        loop {
            match self
                .retry
                .run(op, || self.send_once(op, url, scope, &build))
                .await
            {
                Err(e) if e.is_throttled() && started.elapsed() < MAX_THROTTLED => continue,
                r => return r,
            }
        }
    }

    async fn send_once<F>(
        &self,
        op: &'static str,
        url: &str,
        scope: &str,
        build: &F,
    ) -> Result<Response, RegistryError>
    where
        F: Fn(&reqwest::Client) -> RequestBuilder,
    {
        let mut refreshed = false;
        loop {
            self.gate.wait().await;
            self.pacers.wait(op).await;
            let mut req = build(&self.http);
            if let Some(h) = self.auth.header(&self.http, scope).await? {
                req = req.header(AUTHORIZATION, h);
            }
            self.counts.total.fetch_add(1, Ordering::Relaxed);
            let resp = req.send().await.map_err(|e| {
                self.pacers.passed(op);
                error::transport(op, url, e)
            })?;
            let status = resp.status();
            if status != StatusCode::TOO_MANY_REQUESTS {
                self.pacers.passed(op);
            }
            if status.is_success() {
                return Ok(resp);
            }
            if status == StatusCode::UNAUTHORIZED && !refreshed {
                // A new challenge (first contact, expired token, wider scope needed): follow it once.
                refreshed = true;
                if let Some(h) = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                {
                    let scheme = parse_challenge(h);
                    if scheme != Scheme::None {
                        self.auth.set_scheme(scheme);
                    }
                }
                self.auth.invalidate(scope);
                continue;
            }
            let err = error::from_response(op, url, resp).await;
            self.note_throttling(op, &err);
            return Err(err);
        }
    }

    /// Like [`Registry::send`], with 404 read as `None`.
    async fn send_opt<F>(
        &self,
        op: &'static str,
        url: &str,
        scope: &str,
        build: F,
    ) -> Result<Option<Response>, RegistryError>
    where
        F: Fn(&reqwest::Client) -> RequestBuilder,
    {
        match self.send(op, url, scope, build).await {
            Ok(r) => Ok(Some(r)),
            Err(RegistryError {
                kind: ErrorKind::NotFound { .. },
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// All tags of `repo`, following `Link` pagination; `None` when the repository does not exist.
    pub async fn list_tags(&self, repo: &str) -> Result<Option<Vec<String>>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct Page {
            tags: Option<Vec<String>>,
        }
        let scope = pull_scope(repo);
        let mut url = self.url(&format!("/v2/{repo}/tags/list?n={TAG_PAGE_SIZE}"));
        let mut tags = Vec::new();
        loop {
            let Some(resp) = self
                .send_opt("GET tags", &url, &scope, |c| c.get(&url))
                .await?
            else {
                return Ok(None);
            };
            let next = next_link(resp.headers());
            let body = resp
                .bytes()
                .await
                .map_err(|e| error::transport("GET tags", &url, e))?;
            let page: Page = serde_json::from_slice(&body).map_err(|e| RegistryError {
                op: "GET tags",
                url: url.clone(),
                kind: ErrorKind::Protocol(format!("tag list is not JSON: {e}")),
            })?;
            tags.extend(page.tags.unwrap_or_default());
            match next {
                Some(link) => url = self.absolute(&link),
                None => return Ok(Some(tags)),
            }
        }
    }

    /// Fetches a manifest by tag or digest, verifying its digest; `None` when it does not exist.
    pub async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<Manifest>, RegistryError> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let op = "GET manifest";
        let Some(resp) = self
            .send_opt(op, &url, &pull_scope(repo), |c| {
                c.get(&url).header(ACCEPT, manifest::ACCEPT)
            })
            .await?
        else {
            return Ok(None);
        };
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| error::transport(op, &url, e))?;
        let digest = Digest::of(&bytes);
        let expected = if reference.starts_with("sha256:") {
            Some(reference.to_string())
        } else {
            header_digest
        };
        if let Some(expected) = expected.filter(|e| e.starts_with("sha256:")) {
            if expected != digest.as_str() {
                return Err(RegistryError {
                    op,
                    url,
                    kind: ErrorKind::DigestMismatch {
                        expected,
                        actual: digest.to_string(),
                    },
                });
            }
        }
        let media_type = manifest::media_type_of(content_type.as_deref(), &bytes);
        Ok(Some(Manifest {
            media_type,
            bytes,
            digest,
        }))
    }

    /// The digest a tag or digest reference resolves to; `None` when it does not exist.
    pub async fn head_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<Digest>, RegistryError> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let op = "HEAD manifest";
        let Some(resp) = self
            .send_opt(op, &url, &pull_scope(repo), |c| {
                c.head(&url).header(ACCEPT, manifest::ACCEPT)
            })
            .await?
        else {
            return Ok(None);
        };
        match resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
        {
            Some(d) => Digest::parse(d).map(Some).map_err(|e| RegistryError {
                op,
                url: url.clone(),
                kind: ErrorKind::Protocol(e.to_string()),
            }),
            // Without the header the only way to know is to read the body.
            None => Ok(self.get_manifest(repo, reference).await?.map(|m| m.digest)),
        }
    }

    /// Pushes manifest bytes under a tag or digest. Returns the digest the registry reports.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        m: &Manifest,
    ) -> Result<(), RegistryError> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        self.send(MANIFEST_PUT, &url, &push_scope(repo), |c| {
            c.put(&url)
                .header(CONTENT_TYPE, m.media_type.as_str())
                .body(m.bytes.clone())
        })
        .await?;
        Ok(())
    }

    /// Whether `repo` holds the blob.
    pub async fn has_blob(&self, repo: &str, digest: &Digest) -> Result<bool, RegistryError> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        self.counts.blob.fetch_add(1, Ordering::Relaxed);
        let found = self
            .send_opt("HEAD blob", &url, &pull_scope(repo), |c| c.head(&url))
            .await?;
        Ok(found.is_some())
    }

    /// Opens an upload to `repo`, first asking the registry to mount the blob from `from` (another
    /// repository of the same registry) when given. One try: it is part of a blob transfer (or
    /// a mount) that the copy engine retries as a whole.
    pub async fn start_upload(
        &self,
        repo: &str,
        mount: Option<(&Digest, &str)>,
    ) -> Result<Mount, RegistryError> {
        let (url, scope) = match mount {
            Some((digest, from)) => (
                self.url(&format!(
                    "/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"
                )),
                format!("{} {}", push_scope(repo), pull_scope(from)),
            ),
            None => (
                self.url(&format!("/v2/{repo}/blobs/uploads/")),
                push_scope(repo),
            ),
        };
        self.counts.blob.fetch_add(1, Ordering::Relaxed);
        let op = "POST upload";
        self.ensure_scheme().await?;
        let resp = self
            .send_once(op, &url, &scope, &|c: &reqwest::Client| {
                c.post(&url).header(CONTENT_LENGTH, "0")
            })
            .await?;
        if resp.status() == StatusCode::CREATED {
            return Ok(Mount::Mounted);
        }
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError {
                op,
                url: url.clone(),
                kind: ErrorKind::Protocol("upload started without a Location header".into()),
            })?;
        Ok(Mount::Upload(self.absolute(location)))
    }

    /// Starts reading a blob and hands back its body. One try: the copy engine retries the
    /// whole transfer.
    pub async fn get_blob(&self, repo: &str, digest: &Digest) -> Result<ByteStream, RegistryError> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        self.counts.blob.fetch_add(1, Ordering::Relaxed);
        let op = "GET blob";
        self.ensure_scheme().await?;
        let resp = self
            .send_once(op, &url, &pull_scope(repo), &|_: &reqwest::Client| {
                self.blob_http.get(&url)
            })
            .await?;
        Ok(Box::pin(resp.bytes_stream().map(move |chunk| {
            chunk.map_err(|e| error::transport(op, &url, e))
        })))
    }

    /// Completes an upload with the whole blob in one streamed PUT (ECR rejects chunks under 5 MB;
    /// one PUT is the portable path). Not retried here: a body stream can only be sent once.
    pub async fn put_blob(
        &self,
        repo: &str,
        location: &str,
        digest: &Digest,
        size: u64,
        body: ByteStream,
    ) -> Result<(), RegistryError> {
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={digest}");
        self.counts.blob.fetch_add(1, Ordering::Relaxed);
        self.ensure_scheme().await?;
        self.gate.wait().await;
        self.pacers.wait("PUT blob").await;
        let mut req = self
            .blob_http
            .request(Method::PUT, &url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(body));
        if let Some(h) = self.auth.header(&self.http, &push_scope(repo)).await? {
            req = req.header(AUTHORIZATION, h);
        }
        self.counts.total.fetch_add(1, Ordering::Relaxed);
        let op = "PUT blob";
        let resp = req
            .send()
            .await
            .map_err(|e| error::transport(op, location, e))?;
        if resp.status() != StatusCode::TOO_MANY_REQUESTS {
            self.pacers.passed(op);
        }
        if resp.status().is_success() {
            return Ok(());
        }
        let err = error::from_response(op, location, resp).await;
        self.note_throttling(op, &err);
        Err(err)
    }
}

/// The `rel="next"` target of a `Link` header.
fn next_link(headers: &HeaderMap) -> Option<String> {
    let link = headers.get(LINK)?.to_str().ok()?;
    link.split(',')
        .find(|part| part.contains("rel=\"next\"") || part.contains("rel=next"))
        .and_then(|part| {
            let start = part.find('<')? + 1;
            let end = part.find('>')?;
            Some(part[start..end].to_string())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_link_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            r#"</v2/a/tags/list?n=1000&last=x>; rel="next""#.parse().unwrap(),
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("/v2/a/tags/list?n=1000&last=x")
        );
        h.insert(
            LINK,
            r#"<https://r/x>; rel="prev", <https://r/y>; rel="next""#
                .parse()
                .unwrap(),
        );
        assert_eq!(next_link(&h).as_deref(), Some("https://r/y"));
    }
}
