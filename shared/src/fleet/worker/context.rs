//! What a worker copies with: the config, registry clients and blob movers — rebuilt when a
//! periodic reload finds a new config version. Jobs take the current context when they start and
//! keep it to the end, so a reload never changes a running copy.

use super::super::message::{JobMessage, PushEvent};
use crate::config::{load_versioned, Config, ConfigError};
use crate::copy::BlobMover;
use crate::job::CopyJob;
use crate::registries::{Registries, SetupError};
use crate::retry::RetryPolicy;
use crate::scan::Scanner;
use crate::sync::rfc3339;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

/// Blob knowledge (which repositories hold which blobs) is dropped past this many entries, so a
/// long-lived worker stays small; forgetting only costs a HEAD or a mount later.
const MAX_KNOWN_BLOBS: usize = 100_000;

/// One config version and the clients made from it.
pub struct Context {
    /// The config.
    pub config: Config,
    /// Its version (S3 version id / ETag or file hash).
    pub version: String,
    /// Registry clients.
    pub registries: Registries,
    retry: RetryPolicy,
    movers: Mutex<HashMap<String, Arc<BlobMover>>>,
    /// Destination repositories push events have found ready, with their tag immutability:
    /// one DescribeRepositories per repository and config version, not one per event.
    ready: Mutex<HashMap<String, bool>>,
    /// Bytes streamed, for progress.
    pub bytes: Arc<AtomicU64>,
}

impl Context {
    /// A context for `config`.
    pub fn new(config: Config, version: String, retry: RetryPolicy) -> Context {
        Context {
            registries: Registries::new(&config, retry.clone()),
            config,
            version,
            retry,
            movers: Mutex::new(HashMap::new()),
            ready: Mutex::new(HashMap::new()),
            bytes: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The blob mover for one destination registry (single-flight across this worker's jobs).
    pub fn mover(&self, dst_host: &str) -> Arc<BlobMover> {
        let mut movers = self.movers.lock().unwrap();
        let fresh = || {
            Arc::new(BlobMover::new(
                self.config.concurrency.blobs,
                self.retry.clone(),
                self.bytes.clone(),
            ))
        };
        let mover = movers
            .entry(dst_host.to_string())
            .or_insert_with(fresh)
            .clone();
        if mover.known_blobs() > MAX_KNOWN_BLOBS {
            let replacement = fresh();
            movers.insert(dst_host.to_string(), replacement.clone());
            return replacement;
        }
        mover
    }

    /// Turns a push event into a job of run `events-YYYY-MM-DD`. `Ok(Err(reason))` is an event
    /// the config does not cover (acknowledge it); `Err` is a failure to find out (retry later).
    pub async fn job_for_event(
        &self,
        event: &PushEvent,
    ) -> Result<Result<JobMessage, String>, String> {
        if let Some(reason) = event.not_a_push() {
            return Ok(Err(reason));
        }
        let registry = event.registry();
        let tag = event.tag.clone().unwrap_or_default();
        let Some(repo) = self
            .config
            .repos
            .iter()
            .find(|r| r.source.registry == registry && r.source.repository == event.repository)
        else {
            return Ok(Err(format!(
                "{registry}/{} is not a source in the config",
                event.repository
            )));
        };
        if !repo.tags.matches(&tag) {
            return Ok(Err(format!(
                "tag {tag:?} matches none of the patterns for {}",
                repo.source_ref()
            )));
        }
        let digest = crate::digest::Digest::parse(&event.digest)
            .map_err(|e| format!("detail.image-digest: {e}"))?;
        let dst_host = self
            .registries
            .destination()
            .await
            .map_err(|e| e.to_string())?;
        let Some(immutable) = self.ready_repository(&dst_host, &repo.destination).await? else {
            return Ok(Err(crate::scan::REFRESH_SKIP.to_string()));
        };
        let job = CopyJob {
            source_registry: registry,
            source_repo: event.repository.clone(),
            tag,
            source_digest: Some(digest),
            destination_registry: dst_host,
            destination_repo: repo.destination.clone(),
        };
        Ok(Ok(JobMessage::new(&event_run_id(), &job, immutable, true)))
    }

    /// Makes sure destination repository `dst_repo` exists (per `mode`), asking the registry
    /// only the first time; `None` when refresh mode skips it (asked again next time, so a
    /// repository created meanwhile is noticed).
    async fn ready_repository(
        &self,
        dst_host: &str,
        dst_repo: &str,
    ) -> Result<Option<bool>, String> {
        if let Some(immutable) = self.ready.lock().unwrap().get(dst_repo) {
            return Ok(Some(*immutable));
        }
        let dst = self
            .registries
            .get(dst_host)
            .await
            .map_err(|e| e.to_string())?;
        let scanner = Scanner {
            config: &self.config,
            registries: &self.registries,
            dst_host,
            dst: &dst,
            dry_run: false,
        };
        let ready = scanner.ensure_repository(dst_repo).await?;
        if let Some(immutable) = ready {
            self.ready
                .lock()
                .unwrap()
                .insert(dst_repo.to_string(), immutable);
        }
        Ok(ready)
    }
}

/// The run that groups a day's push events.
pub fn event_run_id() -> String {
    format!("events-{}", &rfc3339(SystemTime::now())[..10])
}

/// The current context, swapped on reload.
pub struct Contexts {
    location: String,
    retry: RetryPolicy,
    current: RwLock<Arc<Context>>,
}

impl Contexts {
    /// Loads the config at `location`.
    pub async fn load(location: &str, retry: RetryPolicy) -> Result<Contexts, ConfigError> {
        let (config, version) = load_versioned(location).await?;
        Ok(Contexts {
            location: location.to_string(),
            current: RwLock::new(Arc::new(Context::new(config, version, retry.clone()))),
            retry,
        })
    }

    /// The context new jobs use.
    pub fn current(&self) -> Arc<Context> {
        self.current.read().unwrap().clone()
    }

    /// Reads the config again; swaps in a new context when the version changed. A config that
    /// no longer loads is reported and the old one kept.
    pub async fn reload(&self) {
        match load_versioned(&self.location).await {
            Ok((config, version)) if version != self.current().version => {
                tracing::info!(config = %self.location, version = %version, "config changed; new jobs use it");
                *self.current.write().unwrap() =
                    Arc::new(Context::new(config, version, self.retry.clone()));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(config = %self.location, error = %e, "config reload failed; keeping the previous config")
            }
        }
    }

    /// Checks that every registry client of the current config can be made.
    pub async fn check(&self) -> Result<(), SetupError> {
        let ctx = self.current();
        for repo in &ctx.config.repos {
            ctx.registries.get(&repo.source.registry).await?;
        }
        if let Some(d) = &ctx.config.destination_registry {
            ctx.registries.get(d).await?;
        }
        Ok(())
    }
}
