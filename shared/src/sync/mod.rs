//! One-machine sync: expand the config into per-tag jobs and run them in this process, recording
//! every outcome in the local ledger. The distributed worker reuses the same copy engine.
//!
//! Per repository: prepare the destination (create or skip it per `mode`), list the source's tags
//! (ECR DescribeImages in bulk when allowed, else the registry API), filter by the globs, then per
//! tag: resolve the source digest, compare with the destination, copy when they differ.

mod report;

pub use crate::registries::Registries;
pub use report::{
    human_bytes, peak_rss_bytes, rfc3339, rfc3339_ms, JobReport, Outcome, Progress, RepoReport,
    SyncReport,
};

use crate::config::{Config, RepoSync};
use crate::copy::{decide, BlobMover, CopyError, Decision, ImageCopy};
use crate::digest::Digest;
use crate::job::{CopyJob, JobState};
use crate::ledger::Ledger;
use crate::registry::{Manifest, Registry};
use crate::retry::RetryPolicy;
use crate::scan::{DstTags, Scanner, REFRESH_SKIP};
use futures_util::StreamExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};
use tokio::sync::Semaphore;
use tracing::Instrument;

/// Repositories prepared and listed at once. Listing is cheap; the job limit bounds the real work.
const REPO_PARALLELISM: usize = 4;

/// A run that could not start.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Settings that cannot work (unreadable CA file, missing credential variable, unknown
    /// destination registry…).
    #[error(transparent)]
    Setup(#[from] crate::registries::SetupError),
    /// The ledger could not be written.
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
}

/// Run options beyond the config.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// Plan only: read both sides, write nothing.
    pub dry_run: bool,
    /// Overrides `concurrency.jobs`.
    pub jobs: Option<usize>,
    /// Retry policy for registry requests and blob transfers.
    pub retry: RetryPolicy,
    /// Named in the ledger's run row (the config's location).
    pub config_source: String,
}

struct Run<'a> {
    config: &'a Config,
    opts: &'a SyncOptions,
    ledger: Option<&'a Ledger>,
    progress: &'a Progress,
    run_id: String,
    registries: Registries,
    dst_host: String,
    dst: Arc<Registry>,
    blobs: BlobMover,
    jobs: Semaphore,
    job_limit: usize,
    reports: Mutex<Vec<JobReport>>,
    repos: Mutex<Vec<RepoReport>>,
}

/// Runs a sync of everything `config` selects. Fails only when the run cannot start; job
/// failures are in the report.
pub async fn run(
    config: &Config,
    opts: &SyncOptions,
    ledger: Option<&Ledger>,
    progress: &Progress,
) -> Result<SyncReport, SyncError> {
    let started = Instant::now();
    let started_at = rfc3339(SystemTime::now());
    let registries = Registries::new(config, opts.retry.clone());
    let (dst_host, dst) = registries.prepare().await?;
    let job_limit = opts.jobs.unwrap_or(config.concurrency.jobs).max(1);
    let blobs = BlobMover::new(
        config.concurrency.blobs,
        opts.retry.clone(),
        progress.bytes.clone(),
    );
    let run = Run {
        config,
        opts,
        ledger: if opts.dry_run { None } else { ledger },
        progress,
        run_id: uuid::Uuid::new_v4().to_string(),
        registries,
        dst_host,
        dst,
        blobs,
        jobs: Semaphore::new(job_limit),
        job_limit,
        reports: Mutex::new(Vec::new()),
        repos: Mutex::new(Vec::new()),
    };
    if let Some(l) = run.ledger {
        l.start_run(&run.run_id, &started_at, &opts.config_source)?;
    }
    tracing::info!(run_id = %run.run_id, destination = %run.dst_host, repos = config.repos.len(), dry_run = opts.dry_run, "sync started");

    futures_util::stream::iter(&config.repos)
        .for_each_concurrent(REPO_PARALLELISM, |repo| run.repo(repo))
        .await;

    let mut jobs = run.reports.into_inner().unwrap();
    jobs.sort_by(|a, b| a.destination.cmp(&b.destination));
    let count = |o: Outcome| jobs.iter().filter(|j| j.outcome == o).count() as u64;
    let repositories = run.repos.into_inner().unwrap();
    let failed_repos = repositories.iter().filter(|r| r.event == "failed").count() as u64;
    let mut report = SyncReport {
        run_id: run.run_id.clone(),
        dry_run: opts.dry_run,
        started_at,
        duration_ms: started.elapsed().as_millis() as u64,
        copied: count(Outcome::Copied),
        skipped: count(Outcome::Skipped),
        failed: count(Outcome::Failed) + failed_repos,
        would_copy: count(Outcome::WouldCopy),
        bytes: jobs.iter().map(|j| j.bytes).sum(),
        requests: Default::default(),
        blob_requests: Default::default(),
        peak_rss_bytes: None,
        repositories,
        jobs,
    };
    for r in run.registries.all() {
        report
            .requests
            .insert(r.host().to_string(), r.counts.total.load(Ordering::Relaxed));
        report
            .blob_requests
            .insert(r.host().to_string(), r.counts.blob.load(Ordering::Relaxed));
    }
    if let Some(l) = run.ledger {
        l.finish_run(
            &run.run_id,
            &rfc3339(SystemTime::now()),
            report.copied,
            report.skipped,
            report.failed,
            report.bytes,
        )?;
    }
    report.peak_rss_bytes = peak_rss_bytes();
    tracing::info!(run_id = %report.run_id, copied = report.copied, skipped = report.skipped, failed = report.failed, bytes = report.bytes, "sync finished");
    Ok(report)
}

impl Run<'_> {
    fn repo_event(&self, repo: &RepoSync, event: &str, reason: Option<String>) {
        if event == "failed" {
            self.progress.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(source = %repo.source_ref(), reason = reason.as_deref().unwrap_or(""), "repository failed");
        } else {
            tracing::info!(source = %repo.source_ref(), destination = %repo.destination, event, reason = reason.as_deref().unwrap_or(""), "repository");
        }
        self.repos.lock().unwrap().push(RepoReport {
            source: repo.source_ref(),
            destination: format!("{}/{}", self.dst_host, repo.destination),
            event: event.to_string(),
            reason,
        });
    }

    async fn repo(&self, repo: &RepoSync) {
        let span = tracing::info_span!("repo", src = %repo.source_ref(), dst = %repo.destination);
        async {
            let dest = match self.scanner().prepare_destination(repo).await {
                Ok(Some(d)) => d,
                Ok(None) => {
                    return self.repo_event(repo, "skipped", Some(REFRESH_SKIP.to_string()))
                }
                Err(reason) => return self.repo_event(repo, "failed", Some(reason)),
            };
            if let Some(event) = dest.event {
                self.repo_event(repo, event, None);
            }
            let tags = match self.scanner().source_tags(repo).await {
                Ok(t) => t,
                Err(reason) => return self.repo_event(repo, "failed", Some(reason)),
            };
            self.progress
                .planned
                .fetch_add(tags.len() as u64, Ordering::Relaxed);
            let src = match self.registries.get(&repo.source.registry).await {
                Ok(s) => s,
                Err(e) => return self.repo_event(repo, "failed", Some(e.to_string())),
            };
            let (dst_tags, immutable) = (dest.tags, dest.immutable);
            futures_util::stream::iter(tags)
                .for_each_concurrent(self.job_limit, |(tag, digest)| {
                    let (src, dst_tags) = (&src, &dst_tags);
                    async move {
                        let _permit = self.jobs.acquire().await.expect("never closed");
                        self.job(repo, src, tag, digest, dst_tags, immutable).await;
                    }
                })
                .await;
        }
        .instrument(span)
        .await
    }

    fn scanner(&self) -> Scanner<'_> {
        Scanner {
            config: self.config,
            registries: &self.registries,
            dst_host: &self.dst_host,
            dst: &self.dst,
            dry_run: self.opts.dry_run,
        }
    }

    async fn job(
        &self,
        repo: &RepoSync,
        src: &Registry,
        tag: String,
        hint: Option<Digest>,
        dst_tags: &DstTags,
        immutable: bool,
    ) {
        let started = Instant::now();
        let mut job = CopyJob {
            source_registry: repo.source.registry.clone(),
            source_repo: repo.source.repository.clone(),
            tag,
            source_digest: hint,
            destination_registry: self.dst_host.clone(),
            destination_repo: repo.destination.clone(),
        };
        let span = tracing::info_span!("job", src = %job.source_ref(), dst = %job.destination_ref(), job_id = tracing::field::Empty);
        let result = self
            .copy_tag(src, &mut job, dst_tags, immutable)
            .instrument(span.clone())
            .await;
        let duration_ms = started.elapsed().as_millis() as u64;
        let (outcome, bytes, reason, class) = match result {
            Ok(Done::Copied(bytes)) => (Outcome::Copied, bytes, None, None),
            Ok(Done::UpToDate) => (Outcome::Skipped, 0, Some("up to date".to_string()), None),
            Ok(Done::WouldCopy) => (Outcome::WouldCopy, 0, None, None),
            Err(e) => (
                Outcome::Failed,
                0,
                Some(e.to_string()),
                Some(e.class().to_string()),
            ),
        };
        let _enter = span.enter();
        match outcome {
            Outcome::Failed => {
                tracing::error!(job_id = %job.id(), error_class = class.as_deref(), reason = reason.as_deref(), "job failed")
            }
            _ => {
                tracing::info!(job_id = %job.id(), outcome = ?outcome, bytes, duration_ms, "job done")
            }
        }
        if outcome == Outcome::Failed {
            self.progress.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.progress.done.fetch_add(1, Ordering::Relaxed);
        if let Some(l) = self.ledger {
            let state = match outcome {
                Outcome::Copied => JobState::Succeeded,
                Outcome::Skipped | Outcome::WouldCopy => JobState::Skipped,
                Outcome::Failed => JobState::Failed,
            };
            let at = rfc3339(SystemTime::now());
            if let Err(e) = l.record_job(
                &self.run_id,
                &job,
                state,
                bytes,
                duration_ms,
                class.as_deref(),
                reason.as_deref(),
                &at,
            ) {
                tracing::error!(error = %e, "could not record job in the ledger");
            }
        }
        self.reports.lock().unwrap().push(JobReport {
            job_id: job.id(),
            source: job.source_ref(),
            destination: job.destination_ref(),
            digest: job.source_digest.as_ref().map(|d| d.to_string()),
            outcome,
            reason,
            error_class: class,
            bytes,
            duration_ms,
        });
    }

    async fn copy_tag(
        &self,
        src: &Registry,
        job: &mut CopyJob,
        dst_tags: &DstTags,
        immutable: bool,
    ) -> Result<Done, CopyError> {
        let src_repo = job.source_repo.clone();
        let dst_repo = job.destination_repo.clone();
        let tag = job.tag.clone();
        // A GET (not a HEAD) on the source: a copy needs the body anyway, and a warm run then
        // costs one source request per tag.
        let mut manifest: Option<Manifest> = None;
        let source_digest = match job.source_digest.clone() {
            Some(d) => d,
            None => {
                let m = src.get_manifest(&src_repo, &tag).await?.ok_or_else(|| {
                    CopyError::MissingChild(format!("{src_repo}:{tag} (tag removed while syncing)"))
                })?;
                let d = m.digest.clone();
                manifest = Some(m);
                d
            }
        };
        job.source_digest = Some(source_digest.clone());
        tracing::Span::current().record("job_id", job.id().as_str());
        let dst_digest = self
            .scanner()
            .destination_digest(&dst_repo, dst_tags, &tag)
            .await?;
        match decide(&source_digest, dst_digest.as_ref(), immutable) {
            Decision::UpToDate => return Ok(Done::UpToDate),
            Decision::ImmutableConflict { existing } => {
                return Err(CopyError::ImmutableTag {
                    tag,
                    existing: existing.to_string(),
                    wanted: source_digest.to_string(),
                })
            }
            Decision::Copy if self.opts.dry_run => return Ok(Done::WouldCopy),
            Decision::Copy => {}
        }
        let manifest = match manifest {
            Some(m) => m,
            None => src
                .get_manifest(&src_repo, source_digest.as_str())
                .await?
                .ok_or_else(|| CopyError::MissingChild(source_digest.to_string()))?,
        };
        let copy = ImageCopy {
            src,
            src_repo: &src_repo,
            dst: &self.dst,
            dst_repo: &dst_repo,
            probe: !dst_tags.is_empty(),
            blobs: &self.blobs,
        };
        copy.run(&manifest, &tag).await.map(Done::Copied)
    }
}

enum Done {
    Copied(u64),
    UpToDate,
    WouldCopy,
}
