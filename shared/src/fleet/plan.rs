//! The fleet planner: the planning stream ([`crate::plan`]) sinking into SQS and the DynamoDB
//! ledger. Each chunk of jobs is checked against what earlier plans left pending
//! ([`super::ledger::pending`]), sent (SendMessageBatch, 10 at a time), then counted on the run
//! with its progress time; no item is written per job (a worker's start creates it). At the
//! end, each destination repository's record says what this plan left pending there. A
//! planner that dies half-way leaves sent messages, which workers copy as usual, and never a
//! job recorded without a message; `status` reports a run that stopped making progress as
//! stalled.
//! Sources listed through the registry API are resolved with a HEAD per selected tag; ECR
//! sources come with digests from DescribeImages.

use super::ledger::pending::{self, PendingJobs};
use super::ledger::{FleetLedger, RunRecord, TableError};
use super::message::JobMessage;
use super::queue::{Queue, QueueError, SQS_BATCH};
use crate::aws::Aws;
use crate::config::Config;
use crate::job::Destination;
use crate::plan::{self, JobSink, PlanContext, Planned, RepoPlan, Resolve, Scanner};
use crate::registries::{Budgets, Registries, SetupError};
use crate::retry::RetryPolicy;
use crate::time::rfc3339_ms;
use crate::vocab::{RepoEvent, RunState};
use std::collections::HashMap;
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
    /// Per destination repository with jobs: what earlier plans left pending, read once.
    earlier: std::sync::Mutex<HashMap<String, PendingJobs>>,
    /// Per destination repository with jobs: what this plan leaves pending (sent now, or still
    /// pending from an earlier run — those are this plan's `pending_elsewhere`), recorded at
    /// the end.
    leaves: std::sync::Mutex<HashMap<String, PendingJobs>>,
}

impl FleetSink<'_> {
    /// Reads what earlier plans left pending for the destination repositories of `jobs` that
    /// this plan has not met yet.
    async fn load_earlier(&self, jobs: &[JobMessage]) -> Result<(), TableError> {
        let mut new: Vec<&str> = {
            let earlier = self.earlier.lock().unwrap();
            jobs.iter()
                .map(|j| j.destination.repository.as_str())
                .filter(|d| !earlier.contains_key(*d))
                .collect()
        };
        new.sort_unstable();
        new.dedup();
        let loaded =
            futures_util::future::try_join_all(new.iter().map(|d| self.ledger.pending_jobs(d)))
                .await?;
        let mut earlier = self.earlier.lock().unwrap();
        for (d, p) in new.into_iter().zip(loaded) {
            earlier.insert(d.to_string(), p);
        }
        Ok(())
    }

    /// Splits `jobs` into those to send and those an earlier run still has pending (counted,
    /// and carried into this plan's record; the sent ones join it once sent, [`Self::sent`]).
    async fn without_pending(
        &self,
        jobs: Vec<(JobMessage, bool)>,
    ) -> Result<Vec<JobMessage>, TableError> {
        let (jobs, tag_held): (Vec<JobMessage>, Vec<bool>) = jobs.into_iter().unzip();
        self.load_earlier(&jobs).await?;
        let known: Vec<pending::Candidate> = {
            let earlier = self.earlier.lock().unwrap();
            jobs.iter()
                .zip(&tag_held)
                .filter_map(|(j, held)| {
                    let sent = earlier.get(&j.destination.repository)?.0.get(&j.job_id)?;
                    (sent.run_id != self.run_id).then(|| pending::Candidate {
                        job_id: j.job_id.clone(),
                        sent: sent.clone(),
                        conflict_stands: j.immutable_tags && *held,
                    })
                })
                .collect()
        };
        let still = self.ledger.still_pending(&known).await?;
        let (kept, send): (Vec<JobMessage>, Vec<JobMessage>) =
            jobs.into_iter().partition(|j| still.contains(&j.job_id));
        let earlier = self.earlier.lock().unwrap();
        let mut leaves = self.leaves.lock().unwrap();
        for j in kept {
            let repo = &j.destination.repository;
            let sent = earlier[repo].0[&j.job_id].clone();
            leaves
                .entry(repo.clone())
                .or_default()
                .0
                .insert(j.job_id, sent);
        }
        Ok(send)
    }

    /// Records that `jobs` are on the queue now: this plan leaves them pending.
    fn sent(&self, jobs: &[JobMessage]) {
        let now = pending::sent_now(self.run_id);
        let mut leaves = self.leaves.lock().unwrap();
        for job in jobs {
            leaves
                .entry(job.destination.repository.clone())
                .or_default()
                .0
                .insert(job.job_id.clone(), now.clone());
        }
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
        let jobs: Vec<(JobMessage, bool)> = chunk
            .into_iter()
            .filter_map(|p| match p {
                Planned::Copy(job) => Some((
                    JobMessage::new(self.run_id, &job),
                    !matches!(job.destination, Destination::Absent),
                )),
                // Counted in the repository's record; a tag that could not be resolved is
                // quoted in its reason.
                Planned::UpToDate(_) | Planned::Recent(_) | Planned::Failed(..) => None,
            })
            .collect();
        let jobs = self.without_pending(jobs).await?;
        if jobs.is_empty() {
            return Ok(());
        }
        let bodies: Vec<String> = jobs.iter().map(JobMessage::to_json).collect();
        futures_util::future::try_join_all(
            bodies.chunks(SQS_BATCH).map(|b| self.queue.send_batch(b)),
        )
        .await?;
        for j in &jobs {
            tracing::debug!(job_id = %j.job_id, src = %format!("{}/{}", j.source.registry, j.source.repository), tag = %j.source.tag, "job queued");
        }
        self.sent(&jobs);
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
    let registries = Registries::new(config, opts.retry.clone(), aws.clone(), Budgets::local());
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
        earlier: Default::default(),
        leaves: Default::default(),
    };
    let (mut repositories, result) = plan::plan_all(&ctx, &sink).await;
    let leaves = sink.leaves.into_inner().unwrap();
    for r in &mut repositories {
        if let Some(left) = leaves.get(&r.destination) {
            let elsewhere = left.0.values().filter(|s| s.run_id != run.run_id).count() as u64;
            r.pending_elsewhere = elsewhere;
            r.planned = r.planned.saturating_sub(elsewhere);
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
    let left = ledger.record_pending(&leaves).await;
    ledger.finish_run(&run).await?;
    result?;
    recorded?;
    left?;
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
