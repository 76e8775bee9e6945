//! The fleet planner: expand the config into per-tag jobs on the queue, recording the run.
//!
//! Per repository (a few at once): make the destination ready (`create`/`refresh`), list the
//! source tags (ECR DescribeImages pages when possible, else the registry API plus one HEAD per
//! selected tag for its digest), list the destination in bulk, and keep the tags whose digests
//! differ. Those become job messages, recorded `queued` in the ledger first (BatchWriteItem, 25
//! at a time) and then sent (SendMessageBatch, 10 at a time), so every message on the queue has a
//! ledger item. Memory holds one repository's tag names and one chunk of jobs, never the whole
//! plan.

use super::ledger::{FleetLedger, RepoRecord, RunRecord, TableError};
use super::message::JobMessage;
use super::queue::{Queue, QueueError, SQS_BATCH};
use crate::config::{Config, RepoSync};
use crate::copy::{decide, Decision};
use crate::digest::Digest;
use crate::job::CopyJob;
use crate::registries::{Registries, SetupError};
use crate::registry::Registry;
use crate::retry::RetryPolicy;
use crate::scan::{Scanner, REFRESH_SKIP};
use crate::sync::rfc3339_ms;
use futures_util::{StreamExt, TryStreamExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

/// Repositories planned at once.
const REPO_PARALLELISM: usize = 4;
/// Source manifests resolved at once (HEAD requests, registry API sources only).
const HEAD_PARALLELISM: usize = 16;
/// Jobs recorded and sent per step: two ledger batches, five queue batches.
const SEND_CHUNK: usize = 50;

/// Why planning stopped.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Settings that cannot work.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The ledger could not be written.
    #[error(transparent)]
    Ledger(#[from] TableError),
    /// The queue could not be written.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Planning options beyond the config.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Where the config came from (recorded on the run).
    pub config_source: String,
    /// Which version of it (recorded on the run).
    pub config_version: String,
    /// Retry policy for registry requests.
    pub retry: RetryPolicy,
}

/// What a plan did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PlanReport {
    /// The run id.
    pub run_id: String,
    /// Jobs sent.
    pub planned: u64,
    /// Tags already equal at the destination.
    pub up_to_date: u64,
    /// Repositories that could not be planned.
    pub failed_repos: u64,
    /// Repositories skipped (refresh mode).
    pub skipped_repos: u64,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Per repository.
    pub repositories: Vec<RepoRecord>,
}

struct Planner<'a> {
    config: &'a Config,
    registries: Registries,
    dst_host: String,
    dst: std::sync::Arc<Registry>,
    queue: &'a Queue,
    ledger: &'a FleetLedger,
    run_id: String,
    planned: AtomicU64,
    up_to_date: AtomicU64,
    repos: Mutex<Vec<RepoRecord>>,
}

/// Plans one run: see the module docs. Repository failures are recorded and counted; ledger or
/// queue failures stop the run (state `failed`) and are returned.
pub async fn plan(
    config: &Config,
    opts: &PlanOptions,
    queue: &Queue,
    ledger: &FleetLedger,
) -> Result<PlanReport, PlanError> {
    let started = Instant::now();
    let registries = Registries::new(config, opts.retry.clone());
    let (dst_host, dst) = registries.prepare().await?;
    let mut run = RunRecord {
        run_id: uuid::Uuid::new_v4().to_string(),
        state: "planning".into(),
        started_at: rfc3339_ms(SystemTime::now()),
        config_source: opts.config_source.clone(),
        config_version: opts.config_version.clone(),
        ..Default::default()
    };
    ledger.start_run(&run).await?;
    tracing::info!(run_id = %run.run_id, destination = %dst_host, repos = config.repos.len(), "planning");
    let planner = Planner {
        config,
        registries,
        dst_host,
        dst,
        queue,
        ledger,
        run_id: run.run_id.clone(),
        planned: AtomicU64::new(0),
        up_to_date: AtomicU64::new(0),
        repos: Mutex::new(Vec::new()),
    };
    let result = futures_util::stream::iter(config.repos.iter().map(Ok))
        .try_for_each_concurrent(REPO_PARALLELISM, |repo| planner.repo(repo))
        .await;
    let repositories = planner.repos.into_inner().unwrap();
    let count = |event: &str| repositories.iter().filter(|r| r.event == event).count() as u64;
    run.planned = planner.planned.load(Ordering::Relaxed);
    run.up_to_date = planner.up_to_date.load(Ordering::Relaxed);
    run.failed_repos = count("failed");
    run.state = if result.is_ok() { "planned" } else { "failed" }.into();
    run.planned_at = Some(rfc3339_ms(SystemTime::now()));
    // Record what happened even when a write failed half-way; report the first error.
    let recorded = ledger.record_repos(&run.run_id, &repositories).await;
    ledger.finish_run(&run).await?;
    result?;
    recorded?;
    let report = PlanReport {
        run_id: run.run_id,
        planned: run.planned,
        up_to_date: run.up_to_date,
        failed_repos: run.failed_repos,
        skipped_repos: count("skipped"),
        duration_ms: started.elapsed().as_millis() as u64,
        repositories,
    };
    tracing::info!(run_id = %report.run_id, planned = report.planned, up_to_date = report.up_to_date, failed_repos = report.failed_repos, "planned");
    Ok(report)
}

impl Planner<'_> {
    fn record(&self, repo: &RepoSync, event: &str, counts: (u64, u64), reason: Option<String>) {
        match &reason {
            Some(r) if event == "failed" => {
                tracing::error!(run_id = %self.run_id, source = %repo.source_ref(), reason = %r, "repository failed")
            }
            _ => {
                tracing::info!(run_id = %self.run_id, source = %repo.source_ref(), destination = %repo.destination, event, planned = counts.0, up_to_date = counts.1, "repository planned")
            }
        }
        self.repos.lock().unwrap().push(RepoRecord {
            source: repo.source_ref(),
            destination: repo.destination.clone(),
            planned: counts.0,
            up_to_date: counts.1,
            event: event.to_string(),
            reason,
        });
    }

    async fn repo(&self, repo: &RepoSync) -> Result<(), PlanError> {
        let scanner = Scanner {
            config: self.config,
            registries: &self.registries,
            dst_host: &self.dst_host,
            dst: &self.dst,
            dry_run: false,
        };
        let dest = match scanner.prepare_destination(repo).await {
            Ok(Some(d)) => d,
            Ok(None) => {
                self.record(repo, "skipped", (0, 0), Some(REFRESH_SKIP.into()));
                return Ok(());
            }
            Err(reason) => {
                self.record(repo, "failed", (0, 0), Some(reason));
                return Ok(());
            }
        };
        let tags = match scanner.source_tags(repo).await {
            Ok(t) => t,
            Err(reason) => {
                self.record(repo, "failed", (0, 0), Some(reason));
                return Ok(());
            }
        };
        let src = self.registries.get(&repo.source.registry).await?;
        let probe = !dest.tags.is_empty();
        // Resolve digests and compare, a bounded number of tags at a time, in listing order;
        // record and send the jobs a chunk at a time, so memory holds one chunk of jobs.
        let mut chunks = futures_util::stream::iter(tags)
            .map(|(tag, hint)| {
                let (src, scanner, dest) = (&src, &scanner, &dest);
                async move {
                    let digest = match hint {
                        Some(d) => d,
                        None => match src.head_manifest(&repo.source.repository, &tag).await {
                            Ok(Some(d)) => d,
                            Ok(None) => return Ok(None), // removed while planning
                            Err(e) => return Err(format!("{tag}: {e}")),
                        },
                    };
                    let existing = scanner
                        .destination_digest(&repo.destination, &dest.tags, &tag)
                        .await
                        .map_err(|e| format!("{tag}: {e}"))?;
                    Ok(self.job_for(repo, tag, digest, existing.as_ref(), dest.immutable, probe))
                }
            })
            .buffered(HEAD_PARALLELISM)
            .chunks(SEND_CHUNK);
        let (mut planned, mut up_to_date) = (0u64, 0u64);
        let (mut failed, mut first_errors) = (0usize, Vec::new());
        while let Some(chunk) = chunks.next().await {
            let mut jobs = Vec::with_capacity(chunk.len());
            for r in chunk {
                match r {
                    Ok(Some(job)) => jobs.push(job),
                    Ok(None) => up_to_date += 1,
                    Err(e) => {
                        failed += 1;
                        if first_errors.len() < 3 {
                            first_errors.push(e);
                        }
                    }
                }
            }
            if jobs.is_empty() {
                continue;
            }
            self.ledger.queue_jobs(&jobs).await?;
            let bodies: Vec<String> = jobs.iter().map(JobMessage::to_json).collect();
            futures_util::future::try_join_all(
                bodies.chunks(SQS_BATCH).map(|b| self.queue.send_batch(b)),
            )
            .await?;
            planned += jobs.len() as u64;
            self.planned.fetch_add(jobs.len() as u64, Ordering::Relaxed);
        }
        self.up_to_date.fetch_add(up_to_date, Ordering::Relaxed);
        let counts = (planned, up_to_date);
        if failed == 0 {
            self.record(repo, dest.event.unwrap_or("planned"), counts, None);
        } else {
            let reason = format!(
                "{failed} tags could not be resolved: {}",
                first_errors.join("; ")
            );
            self.record(repo, "failed", counts, Some(reason));
        }
        Ok(())
    }

    /// The job for one tag, or `None` when the destination already holds the digest.
    fn job_for(
        &self,
        repo: &RepoSync,
        tag: String,
        digest: Digest,
        existing: Option<&Digest>,
        immutable: bool,
        probe: bool,
    ) -> Option<JobMessage> {
        if decide(&digest, existing, immutable) == Decision::UpToDate {
            return None;
        }
        // An immutable conflict is planned too: the worker records the reason and dead-letters
        // it, so an operator sees it in `dlq list` instead of it vanishing here.
        let job = CopyJob {
            source_registry: repo.source.registry.clone(),
            source_repo: repo.source.repository.clone(),
            tag,
            source_digest: Some(digest),
            destination_registry: self.dst_host.clone(),
            destination_repo: repo.destination.clone(),
        };
        Some(JobMessage::new(&self.run_id, &job, immutable, probe))
    }
}
