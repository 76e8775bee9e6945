//! Operator views and actions: a run's status, the dead-letter queue read without consuming it,
//! and replaying dead-lettered jobs onto the jobs queue (by hand, message by message, so it works
//! where `StartMessageMoveTask` does not exist).

use super::ledger::{FleetJob, FleetLedger, HistoryEntry, RunRecord, TableError};
use super::message::{Incoming, JobMessage};
use super::queue::{Queue, QueueError, Received, ATTR_ERROR, ATTR_ERROR_CLASS};
use crate::plan::RepoPlan;
use crate::vocab::{ErrorClass, JobEvent, JobState, RepoEvent};
use std::collections::BTreeMap;

/// How many dead-lettered messages one command reads at most.
pub const DLQ_READ_LIMIT: usize = 10_000;
/// How long a replay keeps the dead-lettered messages it read hidden while it works on them.
const REPLAY_HIDE_SECONDS: i32 = 300;

/// An operator command that failed.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The ledger could not be read or written.
    #[error(transparent)]
    Ledger(#[from] TableError),
    /// A queue could not be read or written.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// No such run.
    #[error("no run {0} in the ledger")]
    NoRun(String),
    /// The ledger holds no run at all.
    #[error("the ledger has no runs yet: run `ecr-sync plan` first")]
    NoRuns,
}

/// Default time without planning progress after which `status` calls a `planning` run stalled.
pub const DEFAULT_STALLED_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// A run's summary.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunStatus {
    /// The run.
    pub run: RunRecord,
    /// Planning made no progress for the stall time: the planner most likely died. Its jobs
    /// that were sent are copied as usual; the next plan covers the rest.
    pub stalled: bool,
    /// Jobs by state.
    pub states: BTreeMap<JobState, u64>,
    /// Bytes copied.
    pub bytes: u64,
    /// Referrers copied.
    pub referrers: u64,
    /// The slowest finished jobs (at most 5).
    pub slowest: Vec<FleetJob>,
    /// Jobs that failed, are dead or conflict with an immutable tag, with reasons.
    pub failed: Vec<FleetJob>,
    /// Repositories that were skipped or failed at planning.
    pub repositories: Vec<RepoPlan>,
}

/// The status of run `run_id` (the latest when `None`).
pub async fn status(
    ledger: &FleetLedger,
    run_id: Option<&str>,
    stalled_after: std::time::Duration,
) -> Result<RunStatus, OpsError> {
    let run = ledger.run(run_id).await?.ok_or_else(|| match run_id {
        Some(id) => OpsError::NoRun(id.to_string()),
        None => OpsError::NoRuns,
    })?;
    let (repos, mut jobs) = ledger.run_contents(&run.run_id).await?;
    let mut states = BTreeMap::new();
    for j in &jobs {
        *states.entry(j.state).or_insert(0) += 1;
    }
    // A job gets its item when a worker starts it: the planned ones without one are queued.
    let unstarted = run.planned.saturating_sub(jobs.len() as u64);
    if unstarted > 0 {
        *states.entry(JobState::Queued).or_insert(0) += unstarted;
    }
    let bytes = jobs.iter().map(|j| j.bytes).sum();
    let referrers = jobs.iter().map(|j| j.referrers).sum();
    let failed = jobs
        .iter()
        .filter(|j| {
            matches!(
                j.state,
                JobState::Failed | JobState::Dead | JobState::Conflict
            )
        })
        .cloned()
        .collect();
    jobs.retain(|j| j.state == JobState::Succeeded);
    jobs.sort_by_key(|j| std::cmp::Reverse(j.duration_ms));
    jobs.truncate(5);
    // The ledger's timestamps are fixed-width RFC 3339 in UTC: they compare as text.
    let stalled = run.state == crate::vocab::RunState::Planning && {
        let last = run.updated_at.as_deref().unwrap_or(&run.started_at);
        let threshold = std::time::SystemTime::now()
            .checked_sub(stalled_after)
            .map(crate::time::rfc3339_ms)
            .unwrap_or_default();
        last <= threshold.as_str()
    };
    Ok(RunStatus {
        stalled,
        run,
        states,
        bytes,
        referrers,
        slowest: jobs,
        failed,
        repositories: repos
            .into_iter()
            .filter(|r| matches!(r.event, Some(RepoEvent::Failed | RepoEvent::Skipped)))
            .collect(),
    })
}

/// One message in the dead-letter queue.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetter {
    /// SQS message id.
    pub message_id: String,
    /// The job, when the body is a job message.
    pub job_id: Option<String>,
    /// Its run.
    pub run_id: Option<String>,
    /// `host/repo:tag` at the source.
    pub source: Option<String>,
    /// `host/repo` at the destination.
    pub destination: Option<String>,
    /// Error class (ledger, else the message attribute).
    pub error_class: Option<ErrorClass>,
    /// Reason (ledger, else the message attribute).
    pub reason: Option<String>,
    /// Ledger state of the job.
    pub state: Option<JobState>,
    /// Attempts recorded.
    pub attempts: u64,
    /// Why the body is not a job message, when it is not.
    pub parse_error: Option<String>,
}

/// The reason `dlq list` gives a message that carries none: SQS moved it.
pub const REDRIVEN: &str = "moved by SQS at the jobs queue's maxReceiveCount: no worker acknowledged any of its receives (workers died holding it, or receive answers were lost); replay it";

async fn describe(ledger: &FleetLedger, m: &Received) -> Result<DeadLetter, OpsError> {
    let mut d = DeadLetter {
        message_id: m.message_id.clone(),
        job_id: None,
        run_id: None,
        source: None,
        destination: None,
        error_class: m
            .attributes
            .get(ATTR_ERROR_CLASS)
            .and_then(|c| c.parse().ok()),
        reason: m.attributes.get(ATTR_ERROR).cloned(),
        state: None,
        attempts: 0,
        parse_error: None,
    };
    match Incoming::parse(&m.body) {
        Ok(Incoming::Job(job)) => {
            d.source = Some(format!(
                "{}/{}:{}",
                job.source.registry, job.source.repository, job.source.tag
            ));
            d.destination = Some(format!(
                "{}/{}",
                job.destination.registry, job.destination.repository
            ));
            if let Some(item) = ledger.job(&job.run_id, &job.job_id).await? {
                d.state = Some(item.state);
                d.attempts = item.attempts;
                d.error_class = item.error_class.or(d.error_class);
                d.reason = item.error.or(d.reason);
            }
            d.job_id = Some(job.job_id);
            d.run_id = Some(job.run_id);
        }
        Ok(Incoming::Push(e)) => {
            d.source = Some(format!(
                "{}/{}:{}",
                e.registry(),
                e.repository,
                e.tag.unwrap_or_default()
            ))
        }
        Ok(Incoming::Newer(why)) | Err(why) => d.parse_error = Some(why),
    }
    if d.error_class.is_none() && d.reason.is_none() {
        // No worker dead-lettered it: SQS's redrive did, at `maxReceiveCount`.
        d.reason = Some(REDRIVEN.to_string());
    }
    Ok(d)
}

/// Every message in the dead-letter queue with its ledger reason. The messages stay there.
pub async fn dlq_list(dlq: &Queue, ledger: &FleetLedger) -> Result<Vec<DeadLetter>, OpsError> {
    let messages = dlq.peek_all(DLQ_READ_LIMIT).await?;
    let mut out = Vec::with_capacity(messages.len());
    for m in &messages {
        out.push(describe(ledger, m).await?);
    }
    Ok(out)
}

/// Which dead-lettered jobs to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every job message.
    All,
    /// These job ids.
    Jobs(Vec<String>),
    /// Jobs whose error class is this.
    ErrorClass(ErrorClass),
}

/// What a replay did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReplayReport {
    /// Job ids moved back to the jobs queue.
    pub replayed: Vec<String>,
    /// Messages left in the dead-letter queue (not selected).
    pub kept: usize,
    /// Messages left because they are not job messages (malformed); fix or purge by hand.
    pub not_jobs: usize,
}

/// Moves the selected dead-lettered jobs back to the jobs queue: each is recorded `replayed`
/// (state `queued`) in the ledger, sent to `queue`, then deleted from `dlq`. Everything else is left visible.
pub async fn dlq_replay(
    dlq: &Queue,
    queue: &Queue,
    ledger: &FleetLedger,
    selection: &Selection,
    who: &str,
) -> Result<ReplayReport, OpsError> {
    let mut report = ReplayReport::default();
    let mut leave: Vec<String> = Vec::new();
    let messages = dlq.take_all(DLQ_READ_LIMIT, REPLAY_HIDE_SECONDS).await?;
    let result = async {
        for m in &messages {
            let job = match Incoming::parse(&m.body) {
                Ok(Incoming::Job(job)) => job,
                _ => {
                    report.not_jobs += 1;
                    leave.push(m.receipt.clone());
                    continue;
                }
            };
            if !selected(selection, &job, m, ledger).await? {
                report.kept += 1;
                leave.push(m.receipt.clone());
                continue;
            }
            // The ledger first: a worker that receives the message at once must find the job
            // `queued`, not `dead` (it would acknowledge a dead job's message as a duplicate).
            // A crash between the two leaves the job queued and its message still in the
            // dead-letter queue, where the next replay finds it.
            ledger.requeue_job(&job, JobEvent::Replayed, who).await?;
            queue.send(&job.to_json(), &[]).await?;
            dlq.delete(&m.receipt).await?;
            tracing::info!(job_id = %job.job_id, run_id = %job.run_id, "job replayed to the jobs queue");
            report.replayed.push(job.job_id);
        }
        Ok::<_, OpsError>(())
    }
    .await;
    // On an error, the messages not yet handled become visible again with the rest.
    if result.is_err() {
        let handled = report.replayed.len() + leave.len();
        leave.extend(messages.iter().skip(handled).map(|m| m.receipt.clone()));
    }
    let released = dlq.release_all(&leave).await;
    result?;
    released?;
    Ok(report)
}

async fn selected(
    selection: &Selection,
    job: &JobMessage,
    m: &Received,
    ledger: &FleetLedger,
) -> Result<bool, OpsError> {
    Ok(match selection {
        Selection::All => true,
        Selection::Jobs(ids) => ids.iter().any(|id| id == &job.job_id),
        Selection::ErrorClass(class) => {
            let recorded = match ledger.job(&job.run_id, &job.job_id).await? {
                Some(item) => item.error_class,
                None => None,
            };
            let attribute = || {
                m.attributes
                    .get(ATTR_ERROR_CLASS)
                    .and_then(|c| c.parse().ok())
            };
            recorded.or_else(attribute) == Some(*class)
        }
    })
}

/// A job's records across the latest runs (newest first) and its history (oldest first).
pub async fn job_show(
    ledger: &FleetLedger,
    job_id: &str,
) -> Result<(Vec<FleetJob>, Vec<HistoryEntry>), OpsError> {
    Ok(ledger.job_records(job_id).await?)
}
