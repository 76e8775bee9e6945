//! What a worker copies with: one config version and the [`Engine`] made from it — rebuilt when
//! a periodic reload finds a new version. Jobs take the current one when they start and keep it
//! to the end, so a reload never changes a running copy.

use super::super::message::{JobMessage, PushEvent};
use crate::aws::Aws;
use crate::config::{Config, ConfigError};
use crate::config_source::load_versioned;
use crate::engine::Engine;
use crate::job::{CopyJob, Destination, PlannedJob};
use crate::plan::{Scanner, REFRESH_SKIP};
use crate::registries::SetupError;
use crate::retry::RetryPolicy;
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
    /// The engine for `config` at `version`.
    pub fn new(config: Config, version: String, retry: RetryPolicy, aws: Aws) -> ConfigVersion {
        ConfigVersion {
            engine: Engine::new(config, retry, aws, Default::default()),
            version,
            ready: Mutex::new(HashMap::new()),
        }
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.engine.config
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
            .config()
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
            .engine
            .registries
            .destination()
            .await
            .map_err(|e| e.to_string())?;
        let Some(immutable) = self.ready_repository(&dst_host, &repo.destination).await? else {
            return Ok(Err(REFRESH_SKIP.to_string()));
        };
        let planned = PlannedJob {
            job: CopyJob {
                source_registry: registry,
                source_repo: event.repository.clone(),
                tag,
                source_digest: Some(digest),
                destination_registry: dst_host,
                destination_repo: repo.destination.clone(),
            },
            immutable_tags: immutable,
            dst_may_hold_blobs: true,
            destination: Destination::Unchecked,
            manifest: None,
        };
        Ok(Ok(JobMessage::new(&event_run_id(), &planned)))
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
        Ok(CurrentConfig {
            location: location.to_string(),
            current: RwLock::new(Arc::new(ConfigVersion::new(
                config,
                version,
                retry.clone(),
                aws.clone(),
            ))),
            retry,
            aws,
        })
    }

    /// The version new jobs use.
    pub fn current(&self) -> Arc<ConfigVersion> {
        self.current.read().unwrap().clone()
    }

    /// Reads the config again; swaps in a new version when it changed. A config that no longer
    /// loads is reported and the old one kept.
    pub async fn reload(&self) {
        match load_versioned(&self.location, &self.aws).await {
            Ok((config, version)) if version != self.current().version => {
                tracing::info!(config = %self.location, version = %version, "config changed; new jobs use it");
                *self.current.write().unwrap() = Arc::new(ConfigVersion::new(
                    config,
                    version,
                    self.retry.clone(),
                    self.aws.clone(),
                ));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(config = %self.location, error = %e, "config reload failed; keeping the previous config")
            }
        }
    }

    /// Checks that every registry client of the current config can be made.
    pub async fn check(&self) -> Result<(), SetupError> {
        let current = self.current();
        let registries = &current.engine.registries;
        for repo in &current.config().repos {
            registries.get(&repo.source.registry).await?;
        }
        if let Some(d) = &current.config().destination_registry {
            registries.get(d).await?;
        }
        Ok(())
    }
}
