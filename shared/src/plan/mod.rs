//! The planning stream — one for both modes. Per configured repository (a few at once): make the
//! destination ready (create or skip it per `mode`), list the source tags the globs select,
//! resolve each tag's digest, compare with the destination, and hand the result to a
//! [`JobSink`] a chunk at a time. `plan` sinks into the DynamoDB ledger and SQS; `sync` sinks
//! into a bounded in-process queue that its runners drain. Memory holds one repository's tag
//! names and one chunk, never the whole plan; a slow sink slows planning down.
//!
//! Comparing costs one destination request per tag where the destination lists names only (the
//! registry API; ECR's DescribeImages gives digests). With a [`Recent`] ledger, a tag the
//! ledger saw holding the source's digest recently, and that the destination still lists, is
//! not asked for again: a warm `sync` costs one source request per tag.

mod scan;

pub use scan::{DstRepo, DstTags, Scanner, SourceTags, REFRESH_SKIP};

use crate::config::RepoSync;
use crate::copy::platforms::select;
use crate::copy::{decide, lacks_referrers, Decision};
use crate::digest::Digest;
pub use crate::job::RepoPlan;
use crate::job::{CopyJob, Destination, JobError, PlannedJob};
use crate::ledger::Ledger;
use crate::registry::{Manifest, Registry};
use crate::vocab::{ErrorClass, RepoEvent};
use futures_util::{StreamExt, TryStreamExt};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tracing::Instrument;

/// Repositories planned at once. Listing is cheap; the runners bound the real work.
const REPO_PARALLELISM: usize = 4;
/// Tags of one repository resolved and compared at once (manifest requests).
const RESOLVE_PARALLELISM: usize = 16;
/// Per-tag errors quoted in a repository's reason; the rest are counted.
const QUOTED_ERRORS: usize = 3;

/// How a tag's digest is found when the listing did not give it (the registry API lists names
/// only; ECR's DescribeImages gives digests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolve {
    /// HEAD the manifest: smallest answer; the runner GETs it again if it copies (the fleet,
    /// where the runner is another process).
    Head,
    /// GET the manifest and hand it to the runner: a copy needs the body anyway, so a warm run
    /// costs one source request per tag and a cold one does not read it twice (one machine).
    Get,
}

/// What planning found for one tag.
#[derive(Debug, Clone)]
pub enum Planned {
    /// It must be copied (or the runner must look: an immutable conflict is also a job, so it
    /// is recorded with its reason rather than vanishing here).
    Copy(PlannedJob),
    /// The destination already holds the source digest.
    UpToDate(CopyJob),
    /// The ledger saw the destination tag hold the source digest recently and the destination
    /// still lists the tag: up to date without asking the destination.
    Recent(CopyJob),
    /// The tag could not be resolved.
    Failed(CopyJob, JobError),
}

/// The error of a tag whose image vanished from the source while it was being planned.
fn gone(job: &CopyJob) -> JobError {
    JobError::new(
        ErrorClass::NotFound,
        format!("{} was removed while planning", job.source_ref()),
    )
}

/// Where planned jobs go: the fleet's ledger and queue, or the in-process queue of `sync`.
pub trait JobSink: Sync {
    /// Why a chunk could not be handed on; stops planning.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Tags planned per call: the fleet batches its ledger and queue writes, the in-process
    /// queue takes them as they come.
    const CHUNK: usize;
    /// Takes one chunk, returning when it is safely handed on (recorded and sent, or queued).
    fn put(&self, chunk: Vec<Planned>) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Learns how many tags a repository selected, before they are planned (progress).
    fn selected(&self, _tags: usize) {}
}

/// What planning reads with: both sides of every repository pair, and how tags are resolved.
pub struct PlanContext<'a> {
    /// The config, registry clients and destination.
    pub scanner: Scanner<'a>,
    /// How tags are resolved.
    pub resolve: Resolve,
    /// Destination tags to trust without asking, when a ledger remembers them.
    pub recent: Option<Recent<'a>>,
}

/// Destination tags a ledger saw holding a digest at `since` or later.
#[derive(Clone, Copy)]
pub struct Recent<'a> {
    /// The ledger that remembers them.
    pub ledger: &'a Ledger,
    /// Sightings older than this are asked for again.
    pub since: SystemTime,
}

/// Plans every configured repository into `sink`. Repository problems are recorded in the
/// returned plans; a sink error stops planning and comes back next to the plans made until then.
pub async fn plan_all<S: JobSink>(
    ctx: &PlanContext<'_>,
    sink: &S,
) -> (Vec<RepoPlan>, Result<(), S::Error>) {
    let repos = &ctx.scanner.config.repos;
    let plans = Mutex::new(Vec::with_capacity(repos.len()));
    let result = futures_util::stream::iter(repos.iter().map(Ok))
        .try_for_each_concurrent(REPO_PARALLELISM, |repo| async {
            let span =
                tracing::info_span!("repo", src = %repo.source_ref(), dst = %repo.destination);
            let plan = ctx.repo(repo, sink).instrument(span).await?;
            plans.lock().unwrap().push(plan);
            Ok(())
        })
        .await;
    (plans.into_inner().unwrap(), result)
}

impl PlanContext<'_> {
    async fn repo<S: JobSink>(&self, repo: &RepoSync, sink: &S) -> Result<RepoPlan, S::Error> {
        let mut plan = RepoPlan {
            source: repo.source_ref(),
            destination: repo.destination.clone(),
            ..Default::default()
        };
        let give_up = |mut plan: RepoPlan, event: RepoEvent, reason: String| {
            plan.event = Some(event);
            plan.reason = Some(reason);
            Ok(plan)
        };
        let scanner = &self.scanner;
        let dest = match scanner.prepare_destination(repo).await {
            Ok(Some(d)) => d,
            Ok(None) => return give_up(plan, RepoEvent::Skipped, REFRESH_SKIP.into()),
            Err(reason) => return give_up(plan, RepoEvent::Failed, reason),
        };
        let listing = match scanner.source_tags(repo).await {
            Ok(t) => t,
            Err(reason) => return give_up(plan, RepoEvent::Failed, reason),
        };
        let src = match scanner.registries.get(&repo.source.registry).await {
            Ok(s) => s,
            Err(e) => return give_up(plan, RepoEvent::Failed, e.to_string()),
        };
        let tags = listing.selected;
        sink.selected(tags.len());
        let schema = self.source_schema_tags(repo, &src, listing.schema).await;
        let recent = self.recent_tags(&repo.destination, &dest.tags);
        let mut chunks = futures_util::stream::iter(tags)
            .map(|(tag, hint)| self.tag(repo, &src, &dest, &recent, &schema, tag, hint))
            // Unordered: a slow tag does not hold back the ones behind it (in order, a finished
            // lookup would wait for the head of the line before the next one could start).
            .buffer_unordered(RESOLVE_PARALLELISM)
            .chunks(S::CHUNK);
        let mut quoted = Vec::new();
        while let Some(chunk) = chunks.next().await {
            for p in &chunk {
                match p {
                    Planned::Copy(_) => plan.planned += 1,
                    Planned::UpToDate(_) | Planned::Recent(_) => plan.up_to_date += 1,
                    Planned::Failed(job, e) => {
                        plan.failed += 1;
                        if quoted.len() < QUOTED_ERRORS {
                            quoted.push(format!("{}: {}", job.tag, e.reason));
                        }
                    }
                }
            }
            sink.put(chunk).await?;
        }
        plan.event = Some(dest.event.unwrap_or(RepoEvent::Planned));
        if plan.failed > 0 {
            plan.event = Some(RepoEvent::Failed);
            plan.reason = Some(format!(
                "{} tags could not be resolved: {}",
                plan.failed,
                quoted.join("; ")
            ));
        }
        Ok(plan)
    }

    /// The destination tags the ledger (if any) saw recently, for a repository listed by name.
    fn recent_tags(&self, dst_repo: &str, tags: &DstTags) -> HashMap<String, Digest> {
        let Some(recent) = self
            .recent
            .filter(|_| matches!(tags, DstTags::Names(n) if !n.is_empty()))
        else {
            return HashMap::new();
        };
        recent
            .ledger
            .verified_tags(self.scanner.dst_host, dst_repo, recent.since)
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not read recent destination tags from the ledger; asking the destination");
                HashMap::new()
            })
    }

    /// When `repo` copies referrers and its source has no referrers API (asked once per
    /// repository): the tag-schema tags its listing showed, so the tags without one cost no
    /// referrer request.
    async fn source_schema_tags(
        &self,
        repo: &RepoSync,
        src: &Registry,
        schema: HashSet<String>,
    ) -> Option<Arc<HashSet<String>>> {
        if !repo.referrers.enabled {
            return None;
        }
        match src.has_referrers_api(&repo.source.repository).await {
            Ok(true) => None,
            Ok(false) => Some(Arc::new(schema)),
            Err(e) => {
                tracing::warn!(error = %e, "could not tell whether the source serves the referrers API; asking for each image");
                None
            }
        }
    }

    /// Resolves one tag and compares it with the destination.
    #[allow(clippy::too_many_arguments)]
    async fn tag(
        &self,
        repo: &RepoSync,
        src: &Registry,
        dest: &DstRepo,
        recent: &HashMap<String, Digest>,
        schema: &Option<Arc<HashSet<String>>>,
        tag: String,
        hint: Option<Digest>,
    ) -> Planned {
        let mut job = CopyJob {
            source_registry: repo.source.registry.clone(),
            source_repo: repo.source.repository.clone(),
            tag,
            source_digest: hint,
            destination_registry: self.scanner.dst_host.to_string(),
            destination_repo: repo.destination.clone(),
        };
        let resolved = self.resolve(src, &job).await;
        let (digest, manifest) = match resolved {
            Ok(r) => r,
            Err(e) => return Planned::Failed(job, e),
        };
        job.source_digest = Some(digest.clone());
        let planned = |job: CopyJob, existing: Option<Digest>, manifest: Option<Manifest>| {
            Planned::Copy(PlannedJob {
                job,
                immutable_tags: dest.immutable,
                dst_may_hold_blobs: !dest.tags.is_empty(),
                destination: match existing {
                    Some(d) => Destination::Holds(d),
                    None => Destination::Absent,
                },
                manifest,
                confirm_source_tag: false,
                source_schema_tags: schema.clone(),
            })
        };
        let listed = matches!(&dest.tags, DstTags::Names(n) if n.contains(&job.tag));
        if listed && recent.get(&job.tag) == Some(&digest) {
            if self.lacks_referrers(repo, src, &digest, schema).await {
                return planned(job, Some(digest), manifest);
            }
            return Planned::Recent(job);
        }
        let existing = match self
            .scanner
            .destination_digest(&repo.destination, &dest.tags, &job.tag)
            .await
        {
            Ok(d) => d,
            Err(e) => return Planned::Failed(job, e.into()),
        };
        // With a platform list the destination holds the index rewritten from the source's:
        // its digest, computed from the source manifest, is what the tag must hold.
        let (target, manifest) = match &repo.platforms {
            None => (digest.clone(), manifest),
            Some(list) => {
                let m = match manifest {
                    Some(m) => m,
                    None => match src.get_manifest(&job.source_repo, digest.as_str()).await {
                        Ok(Some(m)) => m,
                        Ok(None) => {
                            let e = gone(&job);
                            return Planned::Failed(job, e);
                        }
                        Err(e) => return Planned::Failed(job, e.into()),
                    },
                };
                match select(&m, list) {
                    Ok(pushed) => (pushed.digest, Some(m)),
                    // The runner says why (none of the platforms), as the job's outcome.
                    Err(_) => return planned(job, existing, Some(m)),
                }
            }
        };
        // A rewritten index's own referrers are not copied (they name the source's digest).
        let checks_referrers = target == digest;
        if decide(&target, existing.as_ref(), dest.immutable) == Decision::UpToDate
            && !(checks_referrers && self.lacks_referrers(repo, src, &digest, schema).await)
        {
            return Planned::UpToDate(job);
        }
        // A copy, or an image already there whose referrers are not: the runner finds it up to
        // date and copies those.
        planned(job, existing, manifest)
    }

    /// Whether the destination lacks referrers of `digest` (an image it holds) that the source
    /// has, when `repo` copies referrers. A check that fails says yes: the runner copies them
    /// (or finds nothing to copy) with its own retries.
    async fn lacks_referrers(
        &self,
        repo: &RepoSync,
        src: &Registry,
        digest: &Digest,
        schema: &Option<Arc<HashSet<String>>>,
    ) -> bool {
        if !repo.referrers.enabled || self.scanner.dry_run {
            return false;
        }
        let check = lacks_referrers(
            (src, &repo.source.repository),
            (self.scanner.dst, &repo.destination),
            digest,
            &repo.referrers.artifact_types,
            schema.as_deref(),
        )
        .await;
        check.unwrap_or_else(|e| {
            tracing::warn!(error = %e, %digest, "could not compare the image's referrers; the job will");
            true
        })
    }

    /// The tag's digest (the listing's, or asked per [`Resolve`]) and the manifest if read.
    async fn resolve(
        &self,
        src: &Registry,
        job: &CopyJob,
    ) -> Result<(Digest, Option<Manifest>), JobError> {
        if let Some(d) = &job.source_digest {
            return Ok((d.clone(), None));
        }
        let gone = || gone(job);
        match self.resolve {
            Resolve::Head => {
                let d = src.head_manifest(&job.source_repo, &job.tag).await?;
                Ok((d.ok_or_else(gone)?, None))
            }
            Resolve::Get => {
                let m = src.get_manifest(&job.source_repo, &job.tag).await?;
                let m = m.ok_or_else(gone)?;
                Ok((m.digest.clone(), Some(m)))
            }
        }
    }
}
