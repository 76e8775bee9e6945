//! Running one job — the one function both modes call: find what the destination tag holds,
//! decide (up to date, immutable conflict, copy), copy the image's content, confirm (fleet jobs)
//! that the source tag still points at the job's digest, move the tag, and say how it ended as a
//! typed [`JobOutcome`]. Claiming, recording and acknowledging the job are the caller's (the in-process
//! runners of `sync`, the fleet worker).

use crate::config::{Config, RepoSync};
use crate::copy::platforms::select;
use crate::copy::{decide, BlobMover, CopyError, Decision, ImageCopy, ReferrerCopy, ReferrerCount};
use crate::digest::Digest;
use crate::job::{Destination, JobError, JobOutcome, PlannedJob};
use crate::manifest::{self, Contents};
use crate::registries::{Budgets, Registries};
use crate::registry::{Manifest, Registry};
use crate::retry::RetryPolicy;
use crate::vocab::ErrorClass;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

/// Blob knowledge (which repositories hold which blobs) is dropped past this many entries, so a
/// long-lived worker stays small; forgetting only costs a HEAD or a mount later.
const MAX_KNOWN_BLOBS: usize = 100_000;

/// One config and what copying under it needs: registry clients and one single-flight blob
/// mover per destination registry.
pub struct Engine {
    /// The config.
    pub config: Config,
    /// Registry clients for the hosts it names.
    pub registries: Registries,
    retry: RetryPolicy,
    movers: Mutex<HashMap<String, Arc<BlobMover>>>,
    bytes: Arc<AtomicU64>,
    /// Destination repository → its entry in `config.repos` (destinations are unique), for
    /// the entry's referrer and platform settings.
    mappings: HashMap<String, usize>,
}

impl Engine {
    /// An engine for `config`; `aws` is the process's one set of AWS settings; streamed bytes
    /// are added to `bytes` (a caller's live counter); manifest PUTs keep within `budgets`.
    pub fn new(
        config: Config,
        retry: RetryPolicy,
        aws: crate::aws::Aws,
        bytes: Arc<AtomicU64>,
        budgets: Arc<Budgets>,
    ) -> Engine {
        let mappings = config
            .repos
            .iter()
            .enumerate()
            .map(|(i, r)| (r.destination.clone(), i))
            .collect();
        Engine {
            registries: Registries::new(&config, retry.clone(), aws, budgets),
            mappings,
            config,
            retry,
            movers: Mutex::new(HashMap::new()),
            bytes,
        }
    }

    /// The blob mover for one destination registry (single-flight across this engine's jobs).
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

    /// Runs one job. With `dry_run`, stops at the decision and reports what it would copy.
    pub async fn run(&self, planned: &PlannedJob, dry_run: bool) -> JobOutcome {
        match self.try_run(planned, dry_run).await {
            Ok(outcome) => outcome,
            Err(e) => JobOutcome::Failed(e),
        }
    }

    async fn try_run(&self, planned: &PlannedJob, dry_run: bool) -> Result<JobOutcome, JobError> {
        let job = &planned.job;
        let setup = |e: crate::registries::SetupError| JobError::new(ErrorClass::Setup, e.0);
        let src = self
            .registries
            .get(&job.source_registry)
            .await
            .map_err(setup)?;
        let dst = self
            .registries
            .get(&job.destination_registry)
            .await
            .map_err(setup)?;
        let Some(digest) = &job.source_digest else {
            return Err(JobError::new(
                ErrorClass::BadMessage,
                "the job has no source digest",
            ));
        };
        let (src_repo, dst_repo, tag) = (&job.source_repo, &job.destination_repo, &job.tag);
        // What the destination tag gets: the source manifest, or, with a platform list, the
        // index rewritten to name only those platforms — read first then, as the comparison
        // needs its digest.
        let mut pushed = None;
        let target = match self.mapping(dst_repo).and_then(|r| r.platforms.as_ref()) {
            None => digest.clone(),
            Some(list) => {
                let m = select(&self.source_manifest(planned, &src, digest).await?, list)?;
                let d = m.digest.clone();
                pushed = Some(m);
                d
            }
        };
        // A rewritten index is not the source's: referrers of the source index name a digest
        // the destination does not have, and are not copied (its children's are).
        let top_subject: &[Digest] = if &target == digest {
            std::slice::from_ref(digest)
        } else {
            &[]
        };
        let existing = match &planned.destination {
            Destination::Unchecked => dst.head_manifest(dst_repo, tag).await?,
            Destination::Absent => None,
            Destination::Holds(d) => Some(d.clone()),
        };
        match decide(&target, existing.as_ref(), planned.immutable_tags) {
            Decision::UpToDate if dry_run => return Ok(JobOutcome::UP_TO_DATE),
            Decision::UpToDate => {
                // The image is there; referrers added at the source since (a late signature)
                // are not, until they are copied here.
                let n = self.referrers(planned, &src, &dst, top_subject).await?;
                return Ok(JobOutcome::UpToDate {
                    bytes: n.bytes,
                    referrers: n.copied,
                });
            }
            Decision::ImmutableConflict { existing } => {
                return Err(CopyError::ImmutableTag {
                    tag: tag.clone(),
                    existing: existing.to_string(),
                    wanted: target.to_string(),
                }
                .into())
            }
            Decision::Copy if dry_run => return Ok(JobOutcome::WouldCopy),
            Decision::Copy => {}
        }
        let manifest = match pushed {
            Some(m) => m,
            None => self.source_manifest(planned, &src, digest).await?,
        };
        let mover = self.mover(&job.destination_registry);
        let copy = ImageCopy {
            src: &src,
            src_repo,
            dst: &dst,
            dst_repo,
            probe: planned.dst_may_hold_blobs || existing.is_some(),
            blobs: &mover,
        };
        let mut bytes = copy.content(&manifest).await?;
        if planned.confirm_source_tag {
            let now = src.head_manifest(src_repo, tag).await?;
            if now.as_ref() != Some(digest) {
                let source = job.source_ref();
                return Ok(JobOutcome::Superseded(match now {
                    Some(d) => format!("{source} now points at {d}, not {digest}"),
                    None => format!("{source} no longer exists"),
                }));
            }
        }
        let mut put = dst.put_manifest(dst_repo, tag, &manifest).await;
        if let Err(e) = &put {
            if e.is_manifest_content_unknown() {
                // Content this engine believed the repository held is gone (deleted, or
                // expired by a lifecycle policy, since it was copied) or, to the registry,
                // does not match its digest (distribution, while another delivery of the job
                // rewrites a blob): forget the beliefs, check every blob, copy what is
                // missing, and push once more.
                tracing::warn!(repository = %dst_repo, error = %e, "the destination lacks content it was believed to hold; copying it again");
                mover.forget(dst_repo);
                let recheck = ImageCopy {
                    probe: true,
                    ..copy
                };
                bytes += recheck.content(&manifest).await?;
                put = dst.put_manifest(dst_repo, tag, &manifest).await;
            }
        }
        if let Err(e) = put {
            // A failed tag PUT may have happened all the same: its answer was lost and the
            // retry met an immutable tag (ECR answers TAG_INVALID even for the same digest).
            // The destination tag says how it stands.
            match dst.head_manifest(dst_repo, tag).await {
                Ok(Some(now)) if now == target => {
                    tracing::info!(tag = %tag, error = %e, "the tag PUT failed, yet the destination tag holds the image: done");
                }
                Ok(Some(other)) if e.is_tag_invalid() => {
                    return Err(CopyError::ImmutableTag {
                        tag: tag.clone(),
                        existing: other.to_string(),
                        wanted: target.to_string(),
                    }
                    .into())
                }
                _ => return Err(e.into()),
            }
        }
        // Referrers follow the tag, so a crash in between leaves an image whose signature the
        // next run's referrer check (or this job's retry, which finds the tag up to date)
        // copies; the children of an index can be signed one by one (`cosign sign
        // --recursive`).
        let mut subjects = top_subject.to_vec();
        if let Ok(Contents::Index { children }) =
            manifest::contents(&manifest.media_type, &manifest.bytes)
        {
            subjects.extend(children.into_iter().map(|c| c.digest));
        }
        let n = self.referrers(planned, &src, &dst, &subjects).await?;
        Ok(JobOutcome::Copied {
            bytes: bytes + n.bytes,
            referrers: n.copied,
        })
    }

    /// The config entry copying into destination repository `dst_repo`.
    fn mapping(&self, dst_repo: &str) -> Option<&RepoSync> {
        self.mappings.get(dst_repo).map(|&i| &self.config.repos[i])
    }

    /// The source manifest of the job: read by planning, or now.
    async fn source_manifest(
        &self,
        planned: &PlannedJob,
        src: &Registry,
        digest: &Digest,
    ) -> Result<Manifest, JobError> {
        if let Some(m) = &planned.manifest {
            return Ok(m.clone());
        }
        let job = &planned.job;
        src.get_manifest(&job.source_repo, digest.as_str())
            .await?
            .ok_or_else(|| {
                JobError::new(
                    ErrorClass::NotFound,
                    format!(
                        "{}/{}@{digest} no longer exists at the source",
                        job.source_registry, job.source_repo
                    ),
                )
            })
    }

    /// Copies the referrers of `subjects` (already at the destination) that the destination
    /// lacks, when the job's repository copies referrers.
    async fn referrers(
        &self,
        planned: &PlannedJob,
        src: &Registry,
        dst: &Registry,
        subjects: &[Digest],
    ) -> Result<ReferrerCount, JobError> {
        let job = &planned.job;
        let Some(settings) = self
            .mapping(&job.destination_repo)
            .map(|r| &r.referrers)
            .filter(|r| r.enabled)
        else {
            return Ok(ReferrerCount::default());
        };
        let mover = self.mover(&job.destination_registry);
        let image = ImageCopy {
            src,
            src_repo: &job.source_repo,
            dst,
            dst_repo: &job.destination_repo,
            probe: true,
            blobs: &mover,
        };
        let copy = ReferrerCopy {
            image: &image,
            artifact_types: &settings.artifact_types,
            source_schema_tags: planned.source_schema_tags.as_deref(),
        };
        let mut total = ReferrerCount::default();
        for n in futures_util::future::join_all(subjects.iter().map(|s| copy.copy(s))).await {
            total += n?;
        }
        if total.copied > 0 {
            tracing::info!(
                copied = total.copied,
                present = total.present,
                skipped = total.skipped,
                "referrers copied"
            );
        }
        Ok(total)
    }
}
