//! The fleet planner: the planning stream ([`crate::plan`]) sinking into SQS and the DynamoDB
//! ledger. Each chunk of jobs is sent first (SendMessageBatch, 10 at a time), then recorded
//! `queued` (a conditional put per job, so a job a worker already started is not set back),
//! then counted on the run with its progress time. A planner that dies half-way leaves at most
//! messages without items — a worker's start creates the item — and never a `queued` item
//! without a message; `status` reports a run that stopped making progress as stalled.
//! Sources listed through the registry API are resolved with a HEAD per selected tag; ECR
//! sources come with digests from DescribeImages.

use super::ledger::{FleetLedger, RunRecord, TableError};
use super::message::JobMessage;
use super::queue::{Queue, QueueError, SQS_BATCH};
use crate::aws::Aws;
use crate::config::Config;
use crate::plan::{self, JobSink, PlanContext, Planned, RepoPlan, Resolve, Scanner};
use crate::registries::{Registries, SetupError};
use crate::retry::RetryPolicy;
use crate::time::rfc3339_ms;
use crate::vocab::{JobState, RepoEvent, RunState};
use std::time::{Instant, SystemTime};

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
    /// Tags whose job an earlier run still has pending or dead-lettered (not queued again).
    pub pending_elsewhere: u64,
    /// Repositories that could not be planned (or had tags that could not be resolved).
    pub failed_repos: u64,
    /// Repositories skipped (refresh mode).
    pub skipped_repos: u64,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Per repository.
    pub repositories: Vec<RepoPlan>,
}

/// The fleet's job sink: the queue, then the ledger.
struct FleetSink<'a> {
    queue: &'a Queue,
    ledger: &'a FleetLedger,
    run_id: &'a str,
    /// Per destination repository, jobs not queued because an earlier run has them pending
    /// or dead.
    pending_elsewhere: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

/// Earlier-run job states that mean "its message is still on a queue": queued, running or
/// failed (coming back) on the jobs queue, or dead in the dead-letter queue (an operator
/// decides; replanning it would only dead-letter it again every run).
const PENDING: [JobState; 4] = [
    JobState::Queued,
    JobState::Running,
    JobState::Failed,
    JobState::Dead,
];

impl FleetSink<'_> {
    /// Whether an earlier run has this job (same destination, tag and digest) pending or dead.
    async fn pending_elsewhere(&self, job: &JobMessage) -> Result<bool, TableError> {
        Ok(self
            .ledger
            .latest_job(&job.job_id)
            .await?
            .is_some_and(|j| j.run_id != job.run_id && PENDING.contains(&j.state)))
    }
}

/// A chunk that could not be recorded or sent.
#[derive(Debug, thiserror::Error)]
enum SinkError {
    #[error(transparent)]
    Ledger(#[from] TableError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl From<SinkError> for PlanError {
    fn from(e: SinkError) -> PlanError {
        match e {
            SinkError::Ledger(e) => PlanError::Ledger(e),
            SinkError::Queue(e) => PlanError::Queue(e),
        }
    }
}

impl JobSink for FleetSink<'_> {
    type Error = SinkError;
    /// Five queue batches.
    const CHUNK: usize = 50;

    async fn put(&self, chunk: Vec<Planned>) -> Result<(), SinkError> {
        let jobs: Vec<JobMessage> = chunk
            .into_iter()
            .filter_map(|p| match p {
                Planned::Copy(job) => Some(JobMessage::new(self.run_id, &job)),
                // Counted in the repository's record; a tag that could not be resolved is
                // quoted in its reason.
                Planned::UpToDate(_) | Planned::Recent(_) | Planned::Failed(..) => None,
            })
            .collect();
        let checks =
            futures_util::future::try_join_all(jobs.iter().map(|j| self.pending_elsewhere(j)))
                .await?;
        let mut jobs_to_send = Vec::with_capacity(jobs.len());
        for (job, elsewhere) in jobs.into_iter().zip(checks) {
            if elsewhere {
                *self
                    .pending_elsewhere
                    .lock()
                    .unwrap()
                    .entry(job.destination.repository.clone())
                    .or_insert(0) += 1;
            } else {
                jobs_to_send.push(job);
            }
        }
        let jobs = jobs_to_send;
        if jobs.is_empty() {
            return Ok(());
        }
        let bodies: Vec<String> = jobs.iter().map(JobMessage::to_json).collect();
        futures_util::future::try_join_all(
            bodies.chunks(SQS_BATCH).map(|b| self.queue.send_batch(b)),
        )
        .await?;
        self.ledger.queue_jobs(&jobs).await?;
        self.ledger
            .progress_run(self.run_id, jobs.len() as u64)
            .await?;
        Ok(())
    }
}

/// Plans one run: see the module docs. Repository failures are recorded and counted; ledger or
/// queue failures stop the run (state `failed`) and are returned.
pub async fn plan(
    config: &Config,
    aws: &Aws,
    opts: &PlanOptions,
    queue: &Queue,
    ledger: &FleetLedger,
) -> Result<PlanReport, PlanError> {
    let started = Instant::now();
    let registries = Registries::new(config, opts.retry.clone(), aws.clone());
    let (dst_host, dst) = registries.prepare().await?;
    let mut run = RunRecord {
        run_id: uuid::Uuid::new_v4().to_string(),
        state: RunState::Planning,
        started_at: rfc3339_ms(SystemTime::now()),
        config_source: opts.config_source.clone(),
        config_version: opts.config_version.clone(),
        ..Default::default()
    };
    ledger.start_run(&run).await?;
    tracing::info!(run_id = %run.run_id, destination = %dst_host, repos = config.repos.len(), "planning started");
    let ctx = PlanContext {
        scanner: Scanner {
            config,
            registries: &registries,
            dst_host: &dst_host,
            dst: &dst,
            dry_run: false,
        },
        resolve: Resolve::Head,
        // The fleet asks the destination every time (its ledger does not remember tags).
        recent: None,
    };
    let sink = FleetSink {
        queue,
        ledger,
        run_id: &run.run_id,
        pending_elsewhere: Default::default(),
    };
    let (mut repositories, result) = plan::plan_all(&ctx, &sink).await;
    let elsewhere = sink.pending_elsewhere.into_inner().unwrap();
    for r in &mut repositories {
        if let Some(n) = elsewhere.get(&r.destination) {
            r.pending_elsewhere = *n;
            r.planned = r.planned.saturating_sub(*n);
        }
    }
    for r in &repositories {
        let event = r.event.unwrap_or(RepoEvent::Planned);
        match (&r.reason, event) {
            (Some(reason), RepoEvent::Failed) => {
                tracing::error!(run_id = %run.run_id, source = %r.source, reason = %reason, "repository failed")
            }
            _ => {
                tracing::info!(run_id = %run.run_id, source = %r.source, destination = %r.destination, event = %event, planned = r.planned, up_to_date = r.up_to_date, pending_elsewhere = r.pending_elsewhere, "repository planned")
            }
        }
    }
    let count = |event: RepoEvent| {
        repositories
            .iter()
            .filter(|r| r.event == Some(event))
            .count() as u64
    };
    run.planned = repositories.iter().map(|r| r.planned).sum();
    run.up_to_date = repositories.iter().map(|r| r.up_to_date).sum();
    run.failed_repos = count(RepoEvent::Failed);
    run.state = if result.is_ok() {
        RunState::Planned
    } else {
        RunState::Failed
    };
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
        pending_elsewhere: repositories.iter().map(|r| r.pending_elsewhere).sum(),
        failed_repos: run.failed_repos,
        skipped_repos: count(RepoEvent::Skipped),
        duration_ms: started.elapsed().as_millis() as u64,
        repositories,
    };
    tracing::info!(run_id = %report.run_id, planned = report.planned, up_to_date = report.up_to_date, failed_repos = report.failed_repos, "planning finished");
    Ok(report)
}
