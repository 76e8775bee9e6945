//! The ECR control plane (aws-sdk-ecr): authorization tokens, repository existence and creation,
//! and bulk tag listing with digests. The SDK retries throttling itself; nothing here adds a loop.
//!
//! One client per region, created on first use. `AWS_ENDPOINT_URL_ECR` is honoured by the SDK,
//! which is how tests point this at moto.

use crate::config::{EcrHost, Encryption, RepoDefaults};
use crate::digest::Digest;
use crate::registry::{ErrorKind, RegistryError, TokenSource};
use crate::vocab::ErrorClass;
use aws_sdk_ecr::error::ProvideErrorMetadata;
use aws_sdk_ecr::types::{
    EncryptionConfiguration, EncryptionType, ImageScanningConfiguration, ImageTagMutability,
    TagStatus,
};
use base64::Engine;
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// ECR tokens last 12 hours; fetch a new one when less than this is left (or a quarter of the
/// token's life, for a token stated to last less than two hours).
const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(30 * 60);
/// The life assumed for a token whose stated expiry is missing or already past.
const TOKEN_ASSUMED_LIFETIME: Duration = Duration::from_secs(3600);
/// DescribeImages page size (its maximum).
const DESCRIBE_IMAGES_PAGE: i32 = 1000;

/// An ECR control-plane failure.
#[derive(Debug, thiserror::Error)]
#[error("ECR {op} in {region}: {code}: {message}")]
pub struct EcrError {
    /// The failure class.
    pub class: ErrorClass,
    /// The API operation.
    pub op: &'static str,
    /// The region called.
    pub region: String,
    /// The AWS error code (`RepositoryNotFoundException`, …) or `dispatch` for transport errors.
    pub code: String,
    /// The message.
    pub message: String,
}

fn ecr_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
    op: &'static str,
    region: &str,
    e: aws_sdk_ecr::error::SdkError<E>,
) -> EcrError {
    let class = ErrorClass::of_sdk(&e);
    let (code, message) = match e.as_service_error() {
        Some(s) => (
            s.code().unwrap_or("Unknown").to_string(),
            s.message().unwrap_or("").to_string(),
        ),
        None => ("dispatch".to_string(), crate::aws::describe(&e)),
    };
    EcrError {
        class,
        op,
        region: region.to_string(),
        code,
        message,
    }
}

/// What we need to know about an existing repository.
#[derive(Debug, Clone)]
pub struct RepositoryInfo {
    /// Whether tags are immutable.
    pub immutable_tags: bool,
}

/// Access to the ECR API in any region.
pub struct EcrApi {
    sdk: aws_config::SdkConfig,
    clients: Mutex<HashMap<String, aws_sdk_ecr::Client>>,
}

impl EcrApi {
    /// The ECR API with the process's AWS settings.
    pub fn new(sdk: &aws_config::SdkConfig) -> EcrApi {
        EcrApi {
            sdk: sdk.clone(),
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, region: &str) -> aws_sdk_ecr::Client {
        let mut clients = self.clients.lock().unwrap();
        clients
            .entry(region.to_string())
            .or_insert_with(|| {
                let conf = aws_sdk_ecr::config::Builder::from(&self.sdk)
                    .region(aws_sdk_ecr::config::Region::new(region.to_string()))
                    .build();
                aws_sdk_ecr::Client::from_conf(conf)
            })
            .clone()
    }

    /// The caller's own registry host in the SDK's current region, from GetAuthorizationToken's
    /// proxy endpoint (no STS call needed).
    pub async fn own_registry(&self) -> Result<String, EcrError> {
        let region = self
            .sdk
            .region()
            .map(|r| r.to_string())
            .ok_or_else(|| EcrError {
                class: ErrorClass::Setup,
                op: "GetAuthorizationToken",
                region: "(none)".into(),
                code: "NoRegion".into(),
                message: "no AWS region configured; set AWS_REGION or destination_registry".into(),
            })?;
        let out = self
            .client(&region)
            .get_authorization_token()
            .send()
            .await
            .map_err(|e| ecr_error("GetAuthorizationToken", &region, e))?;
        let endpoint = out
            .authorization_data()
            .first()
            .and_then(|d| d.proxy_endpoint())
            .ok_or_else(|| EcrError {
                class: ErrorClass::Protocol,
                op: "GetAuthorizationToken",
                region: region.clone(),
                code: "Empty".into(),
                message: "no proxy endpoint in answer".into(),
            })?;
        Ok(endpoint
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_string())
    }

    /// Basic credentials from GetAuthorizationToken, and when to fetch new ones.
    pub async fn token(&self, host: &EcrHost) -> Result<(String, String, SystemTime), EcrError> {
        let op = "GetAuthorizationToken";
        let out = self
            .client(&host.region)
            // A token is valid for every registry the caller may access; no registry id needed.
            .get_authorization_token()
            .send()
            .await
            .map_err(|e| ecr_error(op, &host.region, e))?;
        let data = out.authorization_data().first().ok_or_else(|| EcrError {
            class: ErrorClass::Protocol,
            op,
            region: host.region.clone(),
            code: "Empty".into(),
            message: "no authorization data".into(),
        })?;
        let bad = |m: &str| EcrError {
            class: ErrorClass::Protocol,
            op,
            region: host.region.clone(),
            code: "BadToken".into(),
            message: m.into(),
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(data.authorization_token().unwrap_or_default())
            .map_err(|_| bad("token is not base64"))?;
        let text = String::from_utf8(raw).map_err(|_| bad("token is not UTF-8"))?;
        let (user, pass) = text
            .split_once(':')
            .ok_or_else(|| bad("token is not user:password"))?;
        // The registry refuses a token after its stated expiry (401 DENIED "Your authorization
        // token has expired"), so a token is never used past it, however short its life: one
        // stated to expire within the margin used to be given an assumed hour and kept past its
        // end. A stated expiry already in the past (clock skew, or moto's fixed 2015 date) would
        // make every request fetch a new token; assume an hour instead.
        let now = SystemTime::now();
        let life = data
            .expires_at()
            .and_then(|t| SystemTime::try_from(*t).ok())
            .and_then(|t| t.duration_since(now).ok())
            .filter(|life| !life.is_zero());
        let refresh_at = match life {
            Some(life) => now + life - TOKEN_REFRESH_MARGIN.min(life / 4),
            None => now + TOKEN_ASSUMED_LIFETIME - TOKEN_REFRESH_MARGIN,
        };
        Ok((user.to_string(), pass.to_string(), refresh_at))
    }

    /// The repository's settings, or `None` when it does not exist.
    pub async fn describe_repository(
        &self,
        host: &EcrHost,
        repo: &str,
    ) -> Result<Option<RepositoryInfo>, EcrError> {
        let result = self
            .client(&host.region)
            .describe_repositories()
            .registry_id(&host.account)
            .repository_names(repo)
            .send()
            .await;
        match result {
            Ok(out) => Ok(out.repositories().first().map(|r| RepositoryInfo {
                immutable_tags: matches!(
                    r.image_tag_mutability(),
                    Some(ImageTagMutability::Immutable)
                        | Some(ImageTagMutability::ImmutableWithExclusion)
                ),
            })),
            Err(e)
                if e.as_service_error().and_then(|s| s.code())
                    == Some("RepositoryNotFoundException") =>
            {
                Ok(None)
            }
            Err(e) => Err(ecr_error("DescribeRepositories", &host.region, e)),
        }
    }

    /// Creates a repository with the config's defaults. An existing repository is left as it is.
    pub async fn create_repository(
        &self,
        host: &EcrHost,
        repo: &str,
        defaults: &RepoDefaults,
    ) -> Result<(), EcrError> {
        let encryption = match &defaults.encryption {
            Encryption::Aes256 => {
                EncryptionConfiguration::builder().encryption_type(EncryptionType::Aes256)
            }
            Encryption::Kms { key_arn } => EncryptionConfiguration::builder()
                .encryption_type(EncryptionType::Kms)
                .kms_key(key_arn),
        }
        .build()
        .expect("encryption type is always set");
        let result = self
            .client(&host.region)
            .create_repository()
            .registry_id(&host.account)
            .repository_name(repo)
            .image_scanning_configuration(
                ImageScanningConfiguration::builder()
                    .scan_on_push(defaults.scan_on_push)
                    .build(),
            )
            .image_tag_mutability(if defaults.tag_immutability {
                ImageTagMutability::Immutable
            } else {
                ImageTagMutability::Mutable
            })
            .encryption_configuration(encryption)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error().and_then(|s| s.code())
                    == Some("RepositoryAlreadyExistsException") =>
            {
                Ok(())
            }
            Err(e) => Err(ecr_error("CreateRepository", &host.region, e)),
        }
    }

    /// Every tagged image of a repository as (tag, digest), from DescribeImages pages of 1000 —
    /// one call per thousand images instead of one registry request per tag.
    pub async fn tagged_images(
        &self,
        host: &EcrHost,
        repo: &str,
    ) -> Result<Vec<(String, Digest)>, EcrError> {
        let op = "DescribeImages";
        let mut pages = self
            .client(&host.region)
            .describe_images()
            .registry_id(&host.account)
            .repository_name(repo)
            .filter(
                aws_sdk_ecr::types::DescribeImagesFilter::builder()
                    .tag_status(TagStatus::Tagged)
                    .build(),
            )
            .max_results(DESCRIBE_IMAGES_PAGE)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| ecr_error(op, &host.region, e))?;
            for image in page.image_details() {
                let Some(digest) = image.image_digest().and_then(|d| Digest::parse(d).ok()) else {
                    continue;
                };
                for tag in image.image_tags() {
                    out.push((tag.clone(), digest.clone()));
                }
            }
        }
        Ok(out)
    }
}

/// Basic credentials for one ECR registry, fetched on first use and refreshed before expiry.
pub struct EcrTokens {
    api: Arc<EcrApi>,
    host: EcrHost,
    /// The current credentials and when to fetch new ones. Never held across an await, so
    /// [`TokenSource::invalidate`] always takes effect (it used to `try_lock` a lock held during
    /// fetches and reads, and then silently kept the refused token for the retry).
    cached: Mutex<Option<(String, String, SystemTime)>>,
    /// One GetAuthorizationToken at a time: requests that find no fresh token wait for the
    /// first fetch instead of each calling ECR.
    fetching: tokio::sync::Mutex<()>,
}

impl EcrTokens {
    /// Tokens for `host` through `api`.
    pub fn new(api: Arc<EcrApi>, host: EcrHost) -> Self {
        EcrTokens {
            api,
            host,
            cached: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// The cached credentials, unless it is time to fetch new ones.
    fn fresh(&self) -> Option<(String, String)> {
        let cached = self.cached.lock().unwrap();
        let (u, p, refresh_at) = cached.as_ref()?;
        (SystemTime::now() < *refresh_at).then(|| (u.clone(), p.clone()))
    }

    async fn fetch(&self) -> Result<(String, String), RegistryError> {
        if let Some(fresh) = self.fresh() {
            return Ok(fresh);
        }
        let _turn = self.fetching.lock().await;
        if let Some(fresh) = self.fresh() {
            return Ok(fresh);
        }
        let (u, p, refresh_at) = self
            .api
            .token(&self.host)
            .await
            .map_err(|e| RegistryError {
                op: "ECR token",
                url: format!("{}.dkr.ecr.{}", self.host.account, self.host.region),
                kind: if e.class.is_transient() {
                    ErrorKind::Transport(e.to_string())
                } else {
                    ErrorKind::Unauthorized {
                        status: 401,
                        code: Some(e.code.clone()),
                        message: Some(e.message.clone()),
                    }
                },
            })?;
        *self.cached.lock().unwrap() = Some((u.clone(), p.clone(), refresh_at));
        Ok((u, p))
    }
}

impl TokenSource for EcrTokens {
    fn basic(&self) -> BoxFuture<'_, Result<(String, String), RegistryError>> {
        Box::pin(self.fetch())
    }

    fn invalidate(&self) {
        *self.cached.lock().unwrap() = None;
    }
}
