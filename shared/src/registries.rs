//! Turning the config's registry settings into [`Registry`] clients, one per host.

use crate::aws::Aws;
use crate::config::{is_ecr_host, Config};
use crate::ecr::{EcrApi, EcrTokens};
use crate::registry::{Budget, Credentials, Registry, RegistryOptions, MANIFEST_PUT};
use crate::retry::RetryPolicy;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, OnceCell};

/// A shared budget's ceiling until the fleet's sharer has sized this process's share (a
/// moment, unless the ledger cannot be reached).
const SHARED_START: f64 = 1.0;

/// The manifest PUT budgets of the registries a process writes to, by host. They outlive
/// config reloads, and are either this process's alone (`sync`: the whole budget) or shared
/// with the fleet's other workers, each using the share the ledger gives it
/// ([`crate::fleet::budget`]).
#[derive(Default)]
pub struct Budgets {
    shared: bool,
    by_host: Mutex<HashMap<String, Arc<Budget>>>,
    /// Woken when a budget is made, so a sharer sizes the new share at once.
    pub made: Notify,
}

impl Budgets {
    /// Budgets this process uses whole.
    pub fn local() -> Arc<Budgets> {
        Arc::default()
    }

    /// Budgets shared with other processes.
    pub fn shared() -> Arc<Budgets> {
        Arc::new(Budgets {
            shared: true,
            ..Default::default()
        })
    }

    /// The budget of `total` manifest PUTs per second for `host` (a reload may change it).
    pub fn for_host(&self, host: &str, total: f64) -> Arc<Budget> {
        let mut by_host = self.by_host.lock().unwrap();
        if let Some(b) = by_host.get(host) {
            if b.total() != total {
                b.set_total(total);
                if !self.shared {
                    b.set_ceiling(total);
                }
            }
            return b.clone();
        }
        let start = if self.shared { SHARED_START } else { total };
        let b = Arc::new(Budget::new(total, start));
        by_host.insert(host.to_string(), b.clone());
        self.made.notify_one();
        b
    }

    /// Every budget made so far, by host.
    pub fn all(&self) -> Vec<(String, Arc<Budget>)> {
        let by_host = self.by_host.lock().unwrap();
        by_host
            .iter()
            .map(|(h, b)| (h.clone(), b.clone()))
            .collect()
    }
}

/// Settings that cannot work: an unreadable CA file, a missing credential variable, a non-ECR
/// host with `ecr_auth`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

/// The run's registry clients and the lazily loaded ECR API.
pub struct Registries {
    config: Config,
    retry: RetryPolicy,
    aws: Aws,
    budgets: Arc<Budgets>,
    clients: Mutex<HashMap<String, Arc<Registry>>>,
    ecr: OnceCell<Arc<EcrApi>>,
    own_registry: OnceCell<String>,
}

impl Registries {
    /// Clients for the registries `config` names, made on first use, pacing manifest PUTs
    /// within `budgets`.
    pub fn new(config: &Config, retry: RetryPolicy, aws: Aws, budgets: Arc<Budgets>) -> Self {
        Registries {
            config: config.clone(),
            retry,
            aws,
            budgets,
            clients: Default::default(),
            ecr: OnceCell::new(),
            own_registry: OnceCell::new(),
        }
    }

    /// The ECR API, loading AWS settings on first use (so runs without ECR never touch them).
    pub async fn ecr(&self) -> Arc<EcrApi> {
        self.ecr
            .get_or_init(|| async { Arc::new(EcrApi::new(self.aws.sdk().await)) })
            .await
            .clone()
    }

    /// The destination registry host: the config's `destination_registry`, or the caller's own
    /// ECR registry (looked up once).
    pub async fn destination(&self) -> Result<String, SetupError> {
        if let Some(h) = &self.config.destination_registry {
            return Ok(h.clone());
        }
        self.own_registry
            .get_or_try_init(|| async {
                self.ecr().await.own_registry().await.map_err(|e| {
                    SetupError(format!(
                        "destination_registry is not set and the caller's ECR registry is unknown: {e}"
                    ))
                })
            })
            .await
            .cloned()
    }

    /// The destination host and client, with every source client made too, so a missing
    /// credential variable or CA file stops a run before anything is copied or planned.
    pub async fn prepare(&self) -> Result<(String, Arc<Registry>), SetupError> {
        let host = self.destination().await?;
        let dst = self.get(&host).await?;
        for repo in &self.config.repos {
            self.get(&repo.source.registry).await?;
        }
        Ok((host, dst))
    }

    /// Every client made so far, by host.
    pub fn all(&self) -> Vec<Arc<Registry>> {
        self.clients.lock().unwrap().values().cloned().collect()
    }

    /// The client for `host`.
    pub async fn get(&self, host: &str) -> Result<Arc<Registry>, SetupError> {
        if let Some(r) = self.clients.lock().unwrap().get(host) {
            return Ok(r.clone());
        }
        let settings = self.config.registry(host);
        let base_url = match &settings.endpoint {
            Some(e) => e.clone(),
            None if settings.plain_http => format!("http://{host}"),
            None => format!("https://{host}"),
        };
        let ca_pem = match &settings.ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                SetupError(format!(
                    "registries.{host}.ca_file: cannot read {}: {e}",
                    path.display()
                ))
            })?),
            None => None,
        };
        let credentials = match (&settings.username_env, &settings.password_env) {
            (Some(u), Some(p)) => {
                let read = |name: &str| {
                    std::env::var(name).map_err(|_| {
                        SetupError(format!(
                            "registries.{host}: environment variable {name} is not set"
                        ))
                    })
                };
                Credentials::Basic {
                    username: read(u)?,
                    password: read(p)?,
                }
            }
            _ if settings.uses_ecr_auth(host) => {
                let ecr_host = is_ecr_host(host).ok_or_else(|| {
                    SetupError(format!(
                        "registries.{host}.ecr_auth: {host} is not an ECR registry host"
                    ))
                })?;
                Credentials::Tokens(Arc::new(EcrTokens::new(self.ecr().await, ecr_host)))
            }
            _ => Credentials::Anonymous,
        };
        let registry = Registry::new(RegistryOptions {
            host: host.to_string(),
            base_url,
            ca_pem,
            credentials,
            retry: self.retry.clone(),
            budgets: settings
                .manifest_put_budget(host)
                .map(|total| (MANIFEST_PUT, self.budgets.for_host(host, total)))
                .into_iter()
                .collect(),
        })
        .map_err(|e| SetupError(format!("registries.{host}: {e}")))?;
        let registry = Arc::new(registry);
        let mut clients = self.clients.lock().unwrap();
        Ok(clients.entry(host.to_string()).or_insert(registry).clone())
    }

    /// Whether the ECR control plane should be used for `host`.
    pub fn is_ecr(&self, host: &str) -> bool {
        is_ecr_host(host).is_some() && self.config.registry(host).uses_ecr_auth(host)
    }
}
