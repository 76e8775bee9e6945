//! The user's config: the seed's `config` object as JSON, plus documented additions.
//!
//! Validation runs in two phases, ripgrep style: the text is parsed into a `serde_json::Value`,
//! then a hand-written walk over it and reports **every** problem at once, each with its JSON path
//! and the bad value ([`ConfigError`]). It parses text and does no I/O: [`crate::config_source`]
//! reads a config from a file or from S3.
//!
//! # Schema
//! ```json
//! {
//!   "mode": "create",                       // or "refresh"; default "create"
//!   "repos": [{                             // default []
//!     "source": "111122223333.dkr.ecr.us-east-1.amazonaws.com/my-app/backend",
//!     "destination": "my-team/backend",     // default: the source path without the host
//!     "tags": ["v1.*", "latest"]            // default ["**"]; see crate::tag_filter
//!   }],
//!   "repo_defaults": { "scan_on_push": true, "tag_immutability": true,
//!                      "encryption_type": "AES256", "kms_key_arn": null },
//!   // Additions to the seed:
//!   "destination_registry": "222233334444.dkr.ecr.eu-west-1.amazonaws.com", // default: own ECR
//!   "registries": { "127.0.0.1:5000": { "endpoint": "http://127.0.0.1:5000", "plain_http": true,
//!                   "ca_file": "ca.pem", "username_env": "REG_USER", "password_env": "REG_PASS",
//!                   "ecr_auth": false } },
//!   "concurrency": { "jobs": 16, "blobs": 8 },
//!   "referrers": { "enabled": true,         // default true; also per entry of repos
//!                  "artifact_types": ["application/vnd.dev.cosign.artifact.sig.v1+json"] },
//!   "platforms": ["linux/amd64", "linux/arm64"] // default: all; also per entry of repos
//! }
//! ```
//!
//! # Invariants of a validated [`Config`]
//! - Every source is `host/path` with a checked host and an OCI-grammar path, no tag, digest or glob.
//! - Every destination is an OCI-grammar path without a host, and no two repos share one.
//! - `null` anywhere an optional field is allowed means "absent" (Terraform's `jsonencode` writes
//!   nulls for unset optional attributes); unknown fields are errors.
//! - `registries` endpoints are `scheme://host[:port]` with no trailing `/`; an `http://` endpoint
//!   implies `plain_http`; `ca_file` passed the loader's readable-file check; credentials env
//!   names come in pairs.

mod error;
mod names;
mod platforms;
mod raw;
mod referrers;
mod registry_settings;
#[cfg(test)]
mod tests;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use error::{ConfigError, ConfigErrorKind, Problem};
pub use names::{
    check_repository_path, check_tag, is_ecr_host, EcrHost, MAX_REPOSITORY_PATH_LEN, MAX_TAG_LEN,
};
pub use platforms::Platform;
pub use referrers::Referrers;

use crate::tag_filter::TagFilter;

/// Concurrent copy jobs when `concurrency.jobs` is not set: enough to hide registry latency
/// without tripping ECR's 10 TPS `PutImage` limit on small images.
pub const DEFAULT_JOBS: usize = 16;
/// Upper bound for `concurrency.jobs`; more only adds throttling.
pub const MAX_JOBS: usize = 256;
/// Concurrent blob transfers per process when `concurrency.blobs` is not set.
pub const DEFAULT_BLOBS: usize = 8;
/// Upper bound for `concurrency.blobs`.
pub const MAX_BLOBS: usize = 64;

/// A validated config; see the [module docs](self) for the JSON schema and invariants.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// Whether missing destination repositories are created (`create`) or skipped (`refresh`).
    pub mode: Mode,
    /// The repositories to sync, in config order.
    pub repos: Vec<RepoSync>,
    /// Settings for repositories created in `create` mode.
    pub repo_defaults: RepoDefaults,
    /// The destination registry as `host[:port]`; `None` means the caller's own ECR registry,
    /// resolved elsewhere from the AWS credentials and region.
    pub destination_registry: Option<String>,
    /// Per-registry connection settings, keyed by `host[:port]` exactly as written in sources and
    /// `destination_registry`. Hosts not listed use [`RegistrySettings::default`].
    pub registries: BTreeMap<String, RegistrySettings>,
    /// Parallelism limits.
    pub concurrency: Concurrency,
    /// Which referrers follow images, unless an entry of `repos` says otherwise.
    pub referrers: Referrers,
    /// Which platforms of multi-arch images are copied (`None`: all), unless an entry of
    /// `repos` says otherwise.
    pub platforms: Option<Vec<Platform>>,
}

/// The sync mode (`mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// `create` (default): create missing destination repositories, then sync.
    #[default]
    Create,
    /// `refresh`: sync only into destination repositories that already exist.
    Refresh,
}

/// One entry of `repos`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoSync {
    /// Where images come from.
    pub source: SourceRepo,
    /// The destination repository path (no host), e.g. `my-team/ui-gadgets`.
    pub destination: String,
    /// Which tags are synced.
    pub tags: TagFilter,
    /// Which referrers follow its images (the top-level `referrers`, field by field
    /// overridden by the entry's own).
    pub referrers: Referrers,
    /// Which platforms of its multi-arch images are copied (`None`: all; the entry's own list
    /// replaces the top level's).
    pub platforms: Option<Vec<Platform>>,
}

impl RepoSync {
    /// The source as `host/path`, e.g. `111122223333.dkr.ecr.us-east-1.amazonaws.com/my-app`.
    pub fn source_ref(&self) -> String {
        format!("{}/{}", self.source.registry, self.source.repository)
    }
}

/// A source repository split into registry host and repository path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRepo {
    /// The registry `host[:port]`, e.g. `111122223333.dkr.ecr.us-east-1.amazonaws.com`.
    pub registry: String,
    /// The repository path, e.g. `my-app/backend`.
    pub repository: String,
}

/// `repo_defaults`: settings applied to repositories this tool creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoDefaults {
    /// ECR basic scanning on push (default `true`).
    pub scan_on_push: bool,
    /// ECR tag immutability (default `true`).
    pub tag_immutability: bool,
    /// Encryption at rest (default AES256).
    pub encryption: Encryption,
}

impl Default for RepoDefaults {
    fn default() -> Self {
        RepoDefaults {
            scan_on_push: true,
            tag_immutability: true,
            encryption: Encryption::Aes256,
        }
    }
}

/// Encryption for created repositories (`encryption_type` and `kms_key_arn`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Encryption {
    /// `AES256` (default): ECR-managed keys.
    #[default]
    Aes256,
    /// `KMS` with the given key.
    Kms {
        /// The KMS key ARN (`arn:aws:kms:REGION:ACCOUNT:key/ID`).
        key_arn: String,
    },
}

/// How to reach one registry (`registries.HOST`). The default is HTTPS with the system's trusted
/// CAs, anonymous/token auth, and ECR auth for ECR hosts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegistrySettings {
    /// Send this host's traffic to `scheme://host[:port]` instead (no trailing `/`), e.g. a local
    /// registry standing in for an ECR host. References keep the configured host.
    pub endpoint: Option<String>,
    /// Allow plain HTTP to this registry (default `false`); always true for an `http://` endpoint.
    pub plain_http: bool,
    /// An extra trusted CA bundle (PEM). Relative paths were resolved against the config file's
    /// directory; the file existed when the config was loaded.
    pub ca_file: Option<PathBuf>,
    /// The name of the environment variable holding the username (set together with
    /// `password_env`).
    pub username_env: Option<String>,
    /// The name of the environment variable holding the password.
    pub password_env: Option<String>,
    /// `None`: ECR auth exactly for ECR hosts ([`is_ecr_host`]); `Some(false)` forces
    /// anonymous/basic/bearer auth; `Some(true)` is only accepted for ECR hosts.
    pub ecr_auth: Option<bool>,
    /// Manifest PUTs per second this registry allows, shared by every ecr-sync process writing
    /// to it (ECR: the account's PutImage quota in the region). `None`: [`ECR_PUT_IMAGE_QUOTA`]
    /// for ECR hosts, no budget elsewhere; `Some(0)`: no budget.
    pub manifest_puts_per_second: Option<u32>,
}

/// ECR's default PutImage quota: requests per second per account and region.
pub const ECR_PUT_IMAGE_QUOTA: u32 = 10;

impl RegistrySettings {
    /// Whether to authenticate to `host` with an ECR authorization token.
    pub fn uses_ecr_auth(&self, host: &str) -> bool {
        self.ecr_auth.unwrap_or_else(|| is_ecr_host(host).is_some())
    }

    /// The manifest PUTs per second `host` allows all writers together, if known: the
    /// configured `manifest_puts_per_second`, else ECR's default quota for an ECR host.
    pub fn manifest_put_budget(&self, host: &str) -> Option<f64> {
        let default = is_ecr_host(host).map(|_| ECR_PUT_IMAGE_QUOTA);
        match self.manifest_puts_per_second.or(default) {
            Some(0) | None => None,
            Some(n) => Some(f64::from(n)),
        }
    }
}

/// `concurrency`: parallelism limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concurrency {
    /// Copy jobs in flight per process, 1..=[`MAX_JOBS`] (default [`DEFAULT_JOBS`]).
    pub jobs: usize,
    /// Blob transfers in flight per process (shared by all jobs), 1..=[`MAX_BLOBS`] (default [`DEFAULT_BLOBS`]).
    pub blobs: usize,
}

impl Default for Concurrency {
    fn default() -> Self {
        Concurrency {
            jobs: DEFAULT_JOBS,
            blobs: DEFAULT_BLOBS,
        }
    }
}

/// The files a config names (`ca_file`), as validation sees them: where relative paths start,
/// and the caller's check that a file can be read. The check is the caller's I/O
/// ([`crate::config_source::readable_file`]), so validation itself reads nothing and still
/// reports an unreadable file next to every other problem.
#[derive(Clone, Copy)]
pub struct Files<'a> {
    /// The directory relative `ca_file` paths are resolved against (`None`: the process's
    /// working directory).
    pub base_dir: Option<&'a Path>,
    /// `Ok` when the file at the path can be read, else why not.
    pub readable: &'a dyn Fn(&Path) -> Result<(), String>,
}

impl Config {
    /// Parses and validates a config. `source_name` names it in errors; `files` resolves and
    /// checks the files it names. Reports every problem at once.
    pub fn from_json(text: &str, source_name: &str, files: Files) -> Result<Config, ConfigError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ConfigError::not_json(source_name, &e))?;
        validate::validate(&value, files).map_err(|p| ConfigError::invalid(source_name, p))
    }

    /// The settings for registry `host` (`host[:port]`): the configured entry, or the default.
    pub fn registry(&self, host: &str) -> RegistrySettings {
        self.registries.get(host).cloned().unwrap_or_default()
    }
}
