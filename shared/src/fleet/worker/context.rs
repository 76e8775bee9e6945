//! What a worker copies with: one config version and the [`Engine`] made from it — rebuilt when
//! a periodic reload finds a new version. Jobs take the current one when they start and keep it
//! to the end, so a reload never changes a running copy.

use super::super::message::{JobMessage, PushEvent};
use crate::aws::Aws;
use crate::config::{check_repository_path, check_tag, Config, ConfigError};
use crate::config_source::load_versioned;
use crate::engine::Engine;
use crate::job::{CopyJob, Destination, JobError, PlannedJob};
use crate::plan::{Scanner, REFRESH_SKIP};
use crate::registries::{Budgets, SetupError};
use crate::retry::RetryPolicy;
use crate::vocab::ErrorClass;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

/// One config version and the engine made from it.
pub struct ConfigVersion {
    /// Registry clients, blob movers and the config.
    pub engine: Engine,
    /// Its version (S3 version id / ETag or file hash).
    pub version: String,
    /// Destination repositories push events have found ready, with their tag immutability:
    /// one DescribeRepositories per repository and config version, not one per event.
    ready: Mutex<HashMap<String, bool>>,
}

impl ConfigVersion {
    /// The engine for `config` at `version`, pacing manifest PUTs within the worker's
    /// `budgets`.
    pub fn new(
        config: Config,
        version: String,
        retry: RetryPolicy,
        aws: Aws,
        budgets: Arc<Budgets>,
    ) -> ConfigVersion {
        ConfigVersion {
            engine: Engine::new(config, retry, aws, Default::default(), budgets),
            version,
            ready: Mutex::new(HashMap::new()),
        }
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.engine.config
    }

    /// Checks that every registry client this config names can be made (credential
    /// variables set, CA files readable).
    pub async fn check(&self) -> Result<(), SetupError> {
        let registries = &self.engine.registries;
        for repo in &self.config().repos {
            registries.get(&repo.source.registry).await?;
        }
        if let Some(d) = &self.config().destination_registry {
            registries.get(d).await?;
        }
        Ok(())
    }

    /// Whether the current config asks for `job`: its tag is a tag, its source repository is
    /// mapped to its destination repository on the configured destination registry, and the
    /// mapping's globs select the tag. A job that fails this is never run: it is forged,
    /// foreign, or planned under a config that changed since ([`ErrorClass::RejectedJob`]). A
    /// destination registry that cannot be found out is a setup problem (retried later).
    pub async fn authorize(&self, job: &JobMessage) -> Result<(), JobError> {
        let reject = |why: String| JobError::new(ErrorClass::RejectedJob, why);
        let (src, dst) = (&job.source, &job.destination);
        check_tag(&src.tag).map_err(|e| reject(format!("source.tag: {e}")))?;
        check_repository_path(&src.repository, "source.repository").map_err(reject)?;
        check_repository_path(&dst.repository, "destination.repository").map_err(reject)?;
        // The config gives each destination repository one mapping, so the pair names at
        // most one entry.
        let mut sources =
            self.config().repos.iter().filter(|r| {
                r.source.registry == src.registry && r.source.repository == src.repository
            });
        let Some(first) = sources.next() else {
            return Err(reject(format!(
                "{}/{} is not a source in the config",
                src.registry, src.repository
            )));
        };
        let Some(repo) = std::iter::once(first)
            .chain(sources)
            .find(|r| r.destination == dst.repository)
        else {
            return Err(reject(format!(
                "the config copies {} to {}, not to {}",
                first.source_ref(),
                first.destination,
                dst.repository
            )));
        };
        if !repo.tags.matches(&src.tag) {
            return Err(reject(format!(
                "tag {:?} matches none of the patterns for {}",
                src.tag,
                repo.source_ref()
            )));
        }
        let dst_host = self
            .engine
            .registries
            .destination()
            .await
            .map_err(|e| JobError::new(ErrorClass::Setup, e.0))?;
        if dst.registry != dst_host {
            return Err(reject(format!(
                "destination registry {} is not the configured {dst_host}",
                dst.registry
            )));
        }
        Ok(())
    }

    /// Turns a push event into the jobs (of run `events-YYYY-MM-DD`) of every config entry
    /// that covers its repository and tag — two entries may copy one source to two
    /// destinations. `Ok(Err(reason))` is an event the config does not cover (acknowledge it);
    /// `Err` is a failure to find out (retry later).
    pub async fn jobs_for_event(
        &self,
        event: &PushEvent,
    ) -> Result<Result<Vec<JobMessage>, String>, String> {
        if let Some(reason) = event.not_a_push() {
            return Ok(Err(reason));
        }
        let tag = event.tag.clone().unwrap_or_default();
        let sources: Vec<_> = self
            .config()
            .repos
            .iter()
            .filter(|r| {
                event.is_from(&r.source.registry) && r.source.repository == event.repository
            })
            .collect();
        let Some(first) = sources.first() else {
            return Ok(Err(format!(
                "{}/{} is not a source in the config",
                event.registry(),
                event.repository
            )));
        };
        let covering: Vec<_> = sources.iter().filter(|r| r.tags.matches(&tag)).collect();
        if covering.is_empty() {
            return Ok(Err(format!(
                "tag {tag:?} matches none of the patterns for {}",
                first.source_ref()
            )));
        }
        let digest = crate::digest::Digest::parse(&event.digest)
            .map_err(|e| format!("detail.image-digest: {e}"))?;
        let dst_host = self
            .engine
            .registries
            .destination()
            .await
            .map_err(|e| e.to_string())?;
        let mut jobs = Vec::with_capacity(covering.len());
        for repo in covering {
            let Some(immutable) = self.ready_repository(&dst_host, &repo.destination).await? else {
                tracing::info!(destination = %repo.destination, reason = REFRESH_SKIP, "push event: destination skipped");
                continue;
            };
            let planned = PlannedJob {
                job: CopyJob {
                    source_registry: repo.source.registry.clone(),
                    source_repo: event.repository.clone(),
                    tag: tag.clone(),
                    source_digest: Some(digest.clone()),
                    destination_registry: dst_host.clone(),
                    destination_repo: repo.destination.clone(),
                },
                immutable_tags: immutable,
                dst_may_hold_blobs: true,
                destination: Destination::Unchecked,
                manifest: None,
                confirm_source_tag: true,
                source_schema_tags: None,
            };
            jobs.push(JobMessage::for_event(&event_run_id(), &planned, &event.id));
        }
        if jobs.is_empty() {
            return Ok(Err(REFRESH_SKIP.to_string()));
        }
        Ok(Ok(jobs))
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
        let registries = &self.engine.registries;
        let dst = registries.get(dst_host).await.map_err(|e| e.to_string())?;
        let scanner = Scanner {
            config: self.config(),
            registries,
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
    format!("events-{}", crate::time::date(SystemTime::now()))
}

/// The config version new jobs use, swapped on reload.
pub struct CurrentConfig {
    location: String,
    retry: RetryPolicy,
    aws: Aws,
    /// The manifest PUT budgets every version's clients share (kept across reloads).
    pub budgets: Arc<Budgets>,
    current: RwLock<Arc<ConfigVersion>>,
}

impl CurrentConfig {
    /// Loads the config at `location`.
    pub async fn load(
        location: &str,
        retry: RetryPolicy,
        aws: Aws,
    ) -> Result<CurrentConfig, ConfigError> {
        let (config, version) = load_versioned(location, &aws).await?;
        let budgets = Budgets::shared();
        Ok(CurrentConfig {
            location: location.to_string(),
            current: RwLock::new(Arc::new(ConfigVersion::new(
                config,
                version,
                retry.clone(),
                aws.clone(),
                budgets.clone(),
            ))),
            retry,
            aws,
            budgets,
        })
    }

    /// The version new jobs use.
    pub fn current(&self) -> Arc<ConfigVersion> {
        self.current.read().unwrap().clone()
    }

    /// Reads the config again; swaps in a new version when it changed and can run. A config
    /// that no longer loads, or loads but cannot run (a credential variable that is not set
    /// yet, an unreadable CA file), is reported and the old one kept — swapped in, it would
    /// fail every job of that registry fleet-wide — and tried again at the next reload.
    pub async fn reload(&self) {
        match load_versioned(&self.location, &self.aws).await {
            Ok((config, version)) if version != self.current().version => {
                let next = ConfigVersion::new(
                    config,
                    version,
                    self.retry.clone(),
                    self.aws.clone(),
                    self.budgets.clone(),
                );
                if let Err(e) = next.check().await {
                    tracing::error!(config = %self.location, version = %next.version, error = %e, "the changed config cannot run; keeping the previous config");
                    return;
                }
                tracing::info!(config = %self.location, version = %next.version, "config changed; new jobs use it");
                *self.current.write().unwrap() = Arc::new(next);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(config = %self.location, error = %e, "config reload failed; keeping the previous config")
            }
        }
    }

    /// Checks that every registry client of the current config can be made.
    pub async fn check(&self) -> Result<(), SetupError> {
        self.current().check().await
    }
}
