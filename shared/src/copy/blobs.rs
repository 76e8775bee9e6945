//! Moving blobs into a destination registry: each unique digest is transferred at most once per
//! run (single-flight), later needs are met by a cross-repository mount from a repository known to
//! hold it, and every streamed byte is hashed on the way through.
//!
//! Order for one blob: already known in this repository → nothing; known in another repository
//! → mount; another copy is transferring it → wait, then mount; otherwise lead: optionally HEAD
//! the destination (only when the repository may already hold it), then stream GET → PUT.

use super::CopyError;
use crate::digest::{Digest, Sha256Stream};
use crate::manifest::Descriptor;
use crate::registry::{ErrorKind, Mount, Registry, RegistryError};
use crate::retry::RetryPolicy;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::sync::{watch, Semaphore};

/// One operation that others needing the same result wait for instead of repeating.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Flight {
    /// Pulling the blob from the source into some destination repository.
    Pull(Digest),
    /// Mounting the blob into this destination repository. Concurrent mounts of one blob into
    /// one repository are wasted requests, and distribution's filesystem driver can even answer
    /// a manifest PUT with DIGEST_INVALID while another mount rewrites the blob's link file.
    Mount(Digest, String),
}

#[derive(Default)]
struct Slots {
    /// Destination repositories known to hold each blob.
    held: HashMap<Digest, Vec<String>>,
    /// Operations in flight; the sender side is dropped when one ends.
    flights: HashMap<Flight, watch::Receiver<()>>,
}

/// Single-flight blob transfers into one destination registry.
pub struct BlobMover {
    slots: Mutex<Slots>,
    transfers: Semaphore,
    retry: RetryPolicy,
    bytes: Arc<AtomicU64>,
}

/// Ends a flight when dropped — finished, failed or cancelled — so its waiters look again
/// instead of waiting forever.
struct FlightGuard<'a> {
    mover: &'a BlobMover,
    flight: Flight,
    _done: watch::Sender<()>,
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        self.mover
            .slots
            .lock()
            .unwrap()
            .flights
            .remove(&self.flight);
    }
}

enum Next<'a> {
    Done,
    Wait(watch::Receiver<()>),
    Mount(String, FlightGuard<'a>),
    Pull(FlightGuard<'a>),
}

impl BlobMover {
    /// At most `max_transfers` blob streams at once.
    /// Streamed bytes are added to `bytes` as they pass.
    pub fn new(max_transfers: usize, retry: RetryPolicy, bytes: Arc<AtomicU64>) -> Self {
        BlobMover {
            slots: Mutex::new(Slots::default()),
            transfers: Semaphore::new(max_transfers.max(1)),
            retry,
            bytes,
        }
    }

    /// Blobs this mover knows a destination repository holds.
    pub fn known_blobs(&self) -> usize {
        self.slots.lock().unwrap().held.len()
    }

    fn record(&self, digest: &Digest, repo: &str) {
        let mut slots = self.slots.lock().unwrap();
        let repos = slots.held.entry(digest.clone()).or_default();
        if !repos.iter().any(|r| r == repo) {
            repos.push(repo.to_string());
        }
    }

    /// What to do next for `digest` in `dst_repo`, claiming a flight when it is ours to run.
    fn next(&self, digest: &Digest, dst_repo: &str) -> Next<'_> {
        let mut slots = self.slots.lock().unwrap();
        let held = slots.held.get(digest).cloned().unwrap_or_default();
        if held.iter().any(|r| r == dst_repo) {
            return Next::Done;
        }
        let flight = match held.first() {
            Some(_) => Flight::Mount(digest.clone(), dst_repo.to_string()),
            None => Flight::Pull(digest.clone()),
        };
        if let Some(rx) = slots.flights.get(&flight) {
            return Next::Wait(rx.clone());
        }
        let (tx, rx) = watch::channel(());
        slots.flights.insert(flight.clone(), rx);
        let guard = FlightGuard {
            mover: self,
            flight,
            _done: tx,
        };
        match held.into_iter().next() {
            Some(from) => Next::Mount(from, guard),
            None => Next::Pull(guard),
        }
    }

    /// Makes `dst_repo` hold the blob. Returns the bytes streamed (0 when nothing moved).
    /// `probe` asks the destination first; pass it when the repository may already hold the blob.
    pub async fn ensure(
        &self,
        src: &Registry,
        src_repo: &str,
        dst: &Registry,
        dst_repo: &str,
        blob: &Descriptor,
        probe: bool,
    ) -> Result<u64, CopyError> {
        let digest = &blob.digest;
        loop {
            match self.next(digest, dst_repo) {
                Next::Done => return Ok(0),
                Next::Wait(mut rx) => {
                    // Returns when the flight ends (its sender is dropped); then look again.
                    let _ = rx.changed().await;
                }
                Next::Mount(from, _guard) => {
                    let moved = match dst.start_upload(dst_repo, Some((digest, &from))).await? {
                        Mount::Mounted => 0,
                        // The registry declined the mount (ECR without mounting enabled, say):
                        // use the session it opened to upload.
                        Mount::Upload(location) => {
                            self.transfer(src, src_repo, dst, dst_repo, blob, Some(location))
                                .await?
                        }
                    };
                    self.record(digest, dst_repo);
                    return Ok(moved);
                }
                Next::Pull(_guard) => {
                    let moved = if probe && dst.has_blob(dst_repo, digest).await? {
                        0
                    } else {
                        self.transfer(src, src_repo, dst, dst_repo, blob, None)
                            .await?
                    };
                    self.record(digest, dst_repo);
                    return Ok(moved);
                }
            }
        }
    }

    /// Streams the blob from source to destination, retrying transient failures from the start.
    async fn transfer(
        &self,
        src: &Registry,
        src_repo: &str,
        dst: &Registry,
        dst_repo: &str,
        blob: &Descriptor,
        location: Option<String>,
    ) -> Result<u64, CopyError> {
        let _permit = self
            .transfers
            .acquire()
            .await
            .expect("semaphore never closed");
        let first_location = Mutex::new(location);
        let span = tracing::debug_span!("blob", digest = %blob.digest.short(), size = blob.size);
        let _enter = span.enter();
        self.retry
            .run("blob transfer", || async {
                let taken = first_location.lock().unwrap().take();
                let location = match taken {
                    Some(l) => l,
                    None => match dst.start_upload(dst_repo, None).await? {
                        Mount::Upload(l) => l,
                        Mount::Mounted => return Ok(0),
                    },
                };
                let resp = src.get_blob(src_repo, &blob.digest).await?;
                let verdict = Arc::new(Mutex::new(None));
                let body = Verifying {
                    inner: Box::pin(resp.bytes_stream()),
                    hasher: Some(Sha256Stream::new()),
                    seen: 0,
                    expected: blob.digest.clone(),
                    size: blob.size,
                    verdict: verdict.clone(),
                    progress: self.bytes.clone(),
                };
                let sent = dst
                    .put_blob(
                        dst_repo,
                        &location,
                        &blob.digest,
                        blob.size,
                        reqwest::Body::wrap_stream(body),
                    )
                    .await;
                let verdict = verdict.lock().unwrap().take();
                match (sent, verdict) {
                    (Ok(()), None) => Ok(blob.size),
                    (_, Some(v)) => Err(v.into_error(src, src_repo, &blob.digest)),
                    (Err(e), None) => Err(CopyError::Registry(e)),
                }
            })
            .await
    }
}

/// Why a stream was cut short.
enum Verdict {
    /// The source connection failed mid-body (transient).
    Source(String),
    /// The bytes do not hash to the digest or have the wrong length (permanent).
    Mismatch { actual: String },
}

impl Verdict {
    fn into_error(self, src: &Registry, repo: &str, digest: &Digest) -> CopyError {
        let url = format!("{}/v2/{repo}/blobs/{digest}", src.host());
        let kind = match self {
            Verdict::Source(m) => ErrorKind::Transport(format!("source stream broke: {m}")),
            Verdict::Mismatch { actual } => ErrorKind::DigestMismatch {
                expected: digest.to_string(),
                actual,
            },
        };
        CopyError::Registry(RegistryError {
            op: "GET blob",
            url,
            kind,
        })
    }
}

/// The source body, hashed and counted as it passes; ends in an error (failing the PUT) when the
/// source breaks or the bytes do not match the digest and size.
struct Verifying {
    inner: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    hasher: Option<Sha256Stream>,
    seen: u64,
    expected: Digest,
    size: u64,
    verdict: Arc<Mutex<Option<Verdict>>>,
    progress: Arc<AtomicU64>,
}

impl Verifying {
    fn fail(&mut self, v: Verdict) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        let msg = match &v {
            Verdict::Source(m) => m.clone(),
            Verdict::Mismatch { actual } => format!("digest mismatch: got {actual}"),
        };
        *self.verdict.lock().unwrap() = Some(v);
        self.hasher = None;
        Poll::Ready(Some(Err(std::io::Error::other(msg))))
    }
}

impl Stream for Verifying {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.hasher.is_none() {
            return Poll::Ready(None);
        }
        match self.inner.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                self.seen += chunk.len() as u64;
                if self.seen > self.size {
                    let actual = format!("more than {} bytes ({}+)", self.size, self.seen);
                    return self.fail(Verdict::Mismatch { actual });
                }
                self.hasher.as_mut().expect("checked above").update(&chunk);
                self.progress
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                if self.seen == self.size {
                    // Check before handing over the last bytes: once the whole length is sent the
                    // HTTP client may finish the request without polling us again.
                    let actual = self.hasher.take().expect("checked above").finish();
                    if actual != self.expected {
                        return self.fail(Verdict::Mismatch {
                            actual: actual.to_string(),
                        });
                    }
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => self.fail(Verdict::Source(e.to_string())),
            Poll::Ready(None) => {
                // Only reached with fewer bytes than the descriptor's size (or a zero-size blob).
                let actual = self.hasher.take().expect("checked above").finish();
                if self.seen != self.size || actual != self.expected {
                    let actual = format!("{actual} ({} of {} bytes)", self.seen, self.size);
                    return self.fail(Verdict::Mismatch { actual });
                }
                Poll::Ready(None)
            }
        }
    }
}
