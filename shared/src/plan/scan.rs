//! Reading both sides of one configured repository pair: make the destination ready (create it
//! or skip it per `mode`), list the source tags the globs select, and look up what a destination
//! tag holds. The planning stream and the worker's push events share this; it decides nothing
//! about copying (that is [`crate::copy::decide`]).

use crate::config::{is_ecr_host, Config, Mode, RepoSync};
use crate::digest::Digest;
use crate::registries::Registries;
use crate::registry::{is_schema_tag, Registry, RegistryError};
use crate::vocab::RepoEvent;
use std::collections::{HashMap, HashSet};

/// Reason recorded when refresh mode meets a missing destination repository.
pub const REFRESH_SKIP: &str = "destination repository does not exist (refresh mode)";

/// What the destination repository holds before copying.
pub enum DstTags {
    /// Tag → digest in bulk (ECR DescribeImages).
    Digests(HashMap<String, Digest>),
    /// Tag names only (registry API); digests need a HEAD.
    Names(HashSet<String>),
}

impl DstTags {
    /// No tags at all (a new or empty repository: nothing to probe for).
    pub fn is_empty(&self) -> bool {
        match self {
            DstTags::Digests(m) => m.is_empty(),
            DstTags::Names(s) => s.is_empty(),
        }
    }
}

/// A source repository's listing, as planning uses it.
pub struct SourceTags {
    /// The tags the globs select, sorted, with digests when a bulk listing gave them.
    pub selected: Vec<(String, Option<Digest>)>,
    /// Every referrers tag-schema tag listed, selected or not.
    pub schema: HashSet<String>,
}

/// A destination repository ready to receive images.
pub struct DstRepo {
    /// Its tags before the run.
    pub tags: DstTags,
    /// Whether its tags are immutable.
    pub immutable: bool,
    /// `created` or `would_create` when this run made (or would make) it.
    pub event: Option<RepoEvent>,
}

/// Reads source and destination for one configured repository pair.
pub struct Scanner<'a> {
    /// The config.
    pub config: &'a Config,
    /// Registry clients and the ECR API.
    pub registries: &'a Registries,
    /// Destination registry host.
    pub dst_host: &'a str,
    /// Destination registry client.
    pub dst: &'a Registry,
    /// Read only: never create repositories.
    pub dry_run: bool,
}

impl Scanner<'_> {
    /// Makes sure the destination repository can receive images and lists what it holds.
    /// `Ok(None)` means the repository is skipped (refresh mode and it does not exist).
    pub async fn prepare_destination(&self, repo: &RepoSync) -> Result<Option<DstRepo>, String> {
        let dst_repo = &repo.destination;
        if self.registries.is_ecr(self.dst_host) {
            let Some((immutable, event)) = self.ensure_ecr_repository(dst_repo).await? else {
                return Ok(None);
            };
            let tags = if event.is_some() {
                DstTags::Digests(HashMap::new())
            } else {
                let host = is_ecr_host(self.dst_host).expect("checked by is_ecr");
                match self
                    .registries
                    .ecr()
                    .await
                    .tagged_images(&host, dst_repo)
                    .await
                {
                    Ok(list) => DstTags::Digests(list.into_iter().collect()),
                    Err(e) => {
                        tracing::warn!(error = %e, "DescribeImages on the destination failed; using the registry API");
                        DstTags::Names(self.registry_tags(dst_repo).await?.unwrap_or_default())
                    }
                }
            };
            return Ok(Some(DstRepo {
                tags,
                immutable,
                event,
            }));
        }
        match self.registry_tags(dst_repo).await? {
            Some(tags) => Ok(Some(DstRepo {
                tags: DstTags::Names(tags),
                immutable: false,
                event: None,
            })),
            None if self.config.mode == Mode::Refresh => Ok(None),
            None => Ok(Some(DstRepo {
                tags: DstTags::Names(HashSet::new()),
                immutable: false,
                event: None,
            })),
        }
    }

    /// Makes sure one destination repository exists (per `mode`) without listing it: the
    /// push-event path, which copies one tag. Returns whether its tags are immutable, or `None`
    /// when refresh mode skips it.
    pub async fn ensure_repository(&self, dst_repo: &str) -> Result<Option<bool>, String> {
        if self.registries.is_ecr(self.dst_host) {
            return Ok(self
                .ensure_ecr_repository(dst_repo)
                .await?
                .map(|(immutable, _)| immutable));
        }
        if self.config.mode == Mode::Refresh && self.registry_tags(dst_repo).await?.is_none() {
            return Ok(None);
        }
        Ok(Some(false))
    }

    /// ECR: describe the repository, create it in create mode. Returns (immutable, event), or
    /// `None` in refresh mode when it does not exist.
    async fn ensure_ecr_repository(
        &self,
        dst_repo: &str,
    ) -> Result<Option<(bool, Option<RepoEvent>)>, String> {
        let host = is_ecr_host(self.dst_host).expect("checked by is_ecr");
        let ecr = self.registries.ecr().await;
        let info = ecr
            .describe_repository(&host, dst_repo)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(info) = info {
            return Ok(Some((info.immutable_tags, None)));
        }
        let immutable = self.config.repo_defaults.tag_immutability;
        match self.config.mode {
            Mode::Refresh => Ok(None),
            Mode::Create if self.dry_run => Ok(Some((immutable, Some(RepoEvent::WouldCreate)))),
            Mode::Create => {
                ecr.create_repository(&host, dst_repo, &self.config.repo_defaults)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Some((immutable, Some(RepoEvent::Created))))
            }
        }
    }

    async fn registry_tags(&self, repo: &str) -> Result<Option<HashSet<String>>, String> {
        Ok(self
            .dst
            .list_tags(repo)
            .await
            .map_err(|e| e.to_string())?
            .map(|tags| tags.into_iter().collect()))
    }

    /// The source tags the globs select, sorted, with digests when a bulk listing gave them;
    /// and every referrers tag-schema tag (`sha256-<hex>`) listed, which are not selected when
    /// the repository copies referrers (they are its images' referrer indexes, kept by the
    /// referrer copy at the destination, not images).
    pub async fn source_tags(&self, repo: &RepoSync) -> Result<SourceTags, String> {
        let host = &repo.source.registry;
        let src_repo = &repo.source.repository;
        let mut tags: Vec<(String, Option<Digest>)> = Vec::new();
        let mut listed = false;
        if self.registries.is_ecr(host) {
            let ecr_host = is_ecr_host(host).expect("checked by is_ecr");
            match self
                .registries
                .ecr()
                .await
                .tagged_images(&ecr_host, src_repo)
                .await
            {
                Ok(list) => {
                    tags = list.into_iter().map(|(t, d)| (t, Some(d))).collect();
                    listed = true;
                }
                Err(e) => {
                    tracing::info!(error = %e, "DescribeImages on the source not possible; listing tags through the registry API")
                }
            }
        }
        if !listed {
            let src = self.registries.get(host).await.map_err(|e| e.to_string())?;
            let names = src
                .list_tags(src_repo)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("source repository {} does not exist", repo.source_ref()))?;
            tags = names.into_iter().map(|t| (t, None)).collect();
        }
        let schema: HashSet<String> = tags
            .iter()
            .filter(|(t, _)| is_schema_tag(t))
            .map(|(t, _)| t.clone())
            .collect();
        tags.retain(|(t, _)| {
            repo.tags.matches(t) && !(repo.referrers.enabled && schema.contains(t))
        });
        tags.sort();
        tags.dedup_by(|a, b| a.0 == b.0);
        Ok(SourceTags {
            selected: tags,
            schema,
        })
    }

    /// The digest `tag` points at in the destination, from the listing or with one HEAD.
    pub async fn destination_digest(
        &self,
        dst_repo: &str,
        tags: &DstTags,
        tag: &str,
    ) -> Result<Option<Digest>, RegistryError> {
        match tags {
            DstTags::Digests(map) => Ok(map.get(tag).cloned()),
            DstTags::Names(names) if names.contains(tag) => {
                self.dst.head_manifest(dst_repo, tag).await
            }
            DstTags::Names(_) => Ok(None),
        }
    }
}
