//! Moving blobs into a destination registry: each unique digest is transferred at most once per
//! run (single-flight), later needs are met by a cross-repository mount from a repository known to
//! hold it, and every streamed byte is hashed on the way through.
//!
//! Order for one blob: already known in this repository → nothing; known in another repository
//! → mount; another copy is transferring it → wait, then mount; otherwise lead: optionally HEAD
//! the destination (only when the repository may already hold it), then stream GET → PUT.
//!
//! A registry that refuses a mount (ECR, unless the account turned blob mounting on, answers
//! with a fresh upload session) is not asked again by this mover: from then on each repository
//! gets its own upload, and a copy no longer waits for another repository's transfer of the
//! same blob to end only to upload it once more itself.

use super::CopyError;
use crate::digest::{Digest, Sha256Stream};
use crate::manifest::Descriptor;
use crate::registry::{ByteStream, ErrorKind, Mount, Registry, RegistryError};
use crate::retry::RetryPolicy;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::sync::{watch, Semaphore};
use tracing::Instrument;

/// One operation that others needing the same result wait for instead of repeating.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Flight {
    /// Pulling the blob from the source into some destination repository (`None`), or into
    /// this one when the registry refuses mounts (others could not use the transfer).
    Pull(Digest, Option<String>),
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
    /// The registry refused a mount: every repository gets its own upload.
    mounts_refused: AtomicBool,
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
            mounts_refused: AtomicBool::new(false),
            transfers: Semaphore::new(max_transfers.max(1)),
            retry,
            bytes,
        }
    }

    /// Blobs this mover knows a destination repository holds.
    pub fn known_blobs(&self) -> usize {
        self.slots.lock().unwrap().held.len()
    }

    /// Forgets every blob this mover believed `repo` holds (the registry said one is missing:
    /// deleted, or expired by a lifecycle policy, since it was copied or seen).
    pub fn forget(&self, repo: &str) {
        let mut slots = self.slots.lock().unwrap();
        for repos in slots.held.values_mut() {
            repos.retain(|r| r != repo);
        }
        slots.held.retain(|_, repos| !repos.is_empty());
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
        let refused = self.mounts_refused.load(Ordering::Relaxed);
        let flight = match held.first() {
            Some(_) if !refused => Flight::Mount(digest.clone(), dst_repo.to_string()),
            _ if refused => Flight::Pull(digest.clone(), Some(dst_repo.to_string())),
            _ => Flight::Pull(digest.clone(), None),
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
            Some(from) if !refused => Next::Mount(from, guard),
            _ => Next::Pull(guard),
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
                    // The mount request's own retry layer (the transfer below has its own).
                    let mount = self
                        .retry
                        .run("blob mount", || {
                            dst.start_upload(dst_repo, Some((digest, from.as_str())))
                        })
                        .await?;
                    let moved = match mount {
                        Mount::Mounted => 0,
                        // The registry declined the mount (ECR without mounting enabled, say):
                        // use the session it opened to upload, and ask no more.
                        Mount::Upload(location) => {
                            if !self.mounts_refused.swap(true, Ordering::Relaxed) {
                                tracing::info!(
                                    registry = dst.host(),
                                    "the registry refuses cross-repository mounts; each repository gets its own upload"
                                );
                            }
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

    /// Streams the blob from source to destination. This is the transfer's one retry layer:
    /// the registry calls inside it try once each, and a failed step is tried again here —
    /// opening the upload session, or the GET (the session is kept: nothing was sent) — or, when
    /// the PUT or the body broke, the stream starts over in a new session. All steps share one
    /// budget of [`RetryPolicy::transfer_retries`] failures with the policy's backoff, so a
    /// blob the source never serves is fetched at most `transfer_retries + 1` times.
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
        let span = tracing::debug_span!("blob", digest = %blob.digest.short(), size = blob.size);
        let mut budget = self.retry.transfer_backoff();
        let mut session = location;
        async {
            loop {
                let location = match session.take() {
                    Some(l) => l,
                    None => match dst.start_upload(dst_repo, None).await {
                        Ok(Mount::Upload(l)) => l,
                        Ok(Mount::Mounted) => return Ok(0),
                        Err(e) => {
                            self.retry
                                .wait_or_give_up(&mut budget, CopyError::from(e))
                                .await?;
                            continue;
                        }
                    },
                };
                let source = match src.get_blob(src_repo, &blob.digest).await {
                    Ok(s) => s,
                    Err(e) => {
                        session = Some(location);
                        self.retry
                            .wait_or_give_up(&mut budget, CopyError::from(e))
                            .await?;
                        continue;
                    }
                };
                let verdict = Arc::new(Mutex::new(None));
                let body = Verifying {
                    inner: source,
                    hasher: Some(Sha256Stream::new()),
                    seen: 0,
                    expected: blob.digest.clone(),
                    size: blob.size,
                    verdict: verdict.clone(),
                    progress: self.bytes.clone(),
                };
                let sent = dst
                    .put_blob(dst_repo, &location, &blob.digest, blob.size, Box::pin(body))
                    .await;
                let verdict = verdict.lock().unwrap().take();
                let failure = match (sent, verdict) {
                    (Ok(()), None) => return Ok(blob.size),
                    (_, Some(v)) => v.into_error(src, src_repo, &blob.digest),
                    (Err(e), None) => CopyError::Registry(e),
                };
                self.retry.wait_or_give_up(&mut budget, failure).await?;
            }
        }
        .instrument(span)
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
    inner: ByteStream,
    hasher: Option<Sha256Stream>,
    seen: u64,
    expected: Digest,
    size: u64,
    verdict: Arc<Mutex<Option<Verdict>>>,
    progress: Arc<AtomicU64>,
}

impl Verifying {
    fn fail(&mut self, v: Verdict) -> Poll<Option<Result<Bytes, RegistryError>>> {
        let msg = match &v {
            Verdict::Source(m) => m.clone(),
            Verdict::Mismatch { actual } => format!("digest mismatch: got {actual}"),
        };
        *self.verdict.lock().unwrap() = Some(v);
        self.hasher = None;
        Poll::Ready(Some(Err(RegistryError {
            op: "stream blob",
            url: self.expected.to_string(),
            kind: ErrorKind::Transport(msg),
        })))
    }
}

impl Stream for Verifying {
    type Item = Result<Bytes, RegistryError>;

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
            Poll::Ready(Some(Err(e))) => self.fail(Verdict::Source(e.kind.to_string())),
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
