//! One-machine sync: the fleet's job path in one process. The planning stream
//! ([`crate::plan`]) sinks into a bounded in-process queue; N runners take jobs from it, run each
//! through the [`Engine`], and record the outcome in the SQLite ledger, the report and the
//! progress counters.
//!
//! Memory is bounded by the queue ([`QUEUE_PER_RUNNER`] jobs per runner), not by the plan: a
//! repository with 100k tags is planned as fast as the runners take its jobs.
//!
//! Stopping: when `stop` resolves (SIGINT/SIGTERM in the binary), planning ends, runners start
//! no new job, running copies get `stop_timeout` to finish, and the run is recorded
//! `interrupted` with what finished.

mod report;

pub use report::{
    human_bytes, peak_rss_bytes, JobReport, Outcome, Progress, RepoReport, SyncReport,
};

use crate::aws::Aws;
use crate::config::Config;
use crate::engine::Engine;
use crate::job::{CopyJob, JobOutcome, PlannedJob, UP_TO_DATE, UP_TO_DATE_RECENTLY};
use crate::ledger::Ledger;
use crate::plan::{self, JobSink, PlanContext, Planned, Recent, RepoPlan, Resolve, Scanner};
use crate::registries::Budgets;
use crate::retry::RetryPolicy;
use crate::time::rfc3339;
use crate::vocab::{JobState, RepoEvent, RunState};
use futures_util::StreamExt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch};

/// Planned jobs waiting per runner: enough that a runner finishing a job finds the next one
/// ready, few enough that memory does not grow with the plan.
pub const QUEUE_PER_RUNNER: usize = 2;
/// Default time running copies get to finish after a stop.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time a destination tag the ledger saw holding the source digest is trusted without
/// asking the destination again: a rerun within the hour costs one source request per tag, and
/// a tag changed at the destination behind ecr-sync's back (on a registry without bulk digests;
/// ECR lists them) is repaired within the hour.
pub const DEFAULT_RECHECK_AFTER: Duration = Duration::from_secs(3600);

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
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Plan only: read both sides, write nothing.
    pub dry_run: bool,
    /// Runners (copy jobs at once); overrides `concurrency.jobs`.
    pub jobs: Option<usize>,
    /// Retry policy for registry requests and blob transfers.
    pub retry: RetryPolicy,
    /// Named in the ledger's run row (the config's location).
    pub config_source: String,
    /// After a stop, how long running copies may take to finish before they are cut off.
    pub stop_timeout: Duration,
    /// How long the ledger's sighting of a destination tag is trusted; zero asks every time.
    pub recheck_after: Duration,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            dry_run: false,
            jobs: None,
            retry: RetryPolicy::default(),
            config_source: String::new(),
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            recheck_after: DEFAULT_RECHECK_AFTER,
        }
    }
}

/// Where job outcomes go: report, ledger, progress, log.
struct Recorder<'a> {
    run_id: String,
    /// When the run started, for each job's `finished_ms`.
    started: Instant,
    ledger: Option<&'a Ledger>,
    progress: &'a Progress,
    jobs: Mutex<Vec<JobReport>>,
    /// Jobs a runner took and has not finished.
    running: AtomicU64,
}

impl Recorder<'_> {
    /// Records a job that ran, or that planning found up to date by asking the destination.
    fn finish(&self, job: &CopyJob, outcome: JobOutcome, duration_ms: u64) {
        self.record(job, outcome, duration_ms, false);
    }

    /// Records a tag planning found up to date by the ledger's recent sighting. The sighting is
    /// not renewed (the destination was not asked), so it runs out.
    fn finish_recent(&self, job: &CopyJob) {
        self.record(job, JobOutcome::UP_TO_DATE, 0, true);
    }

    fn record(&self, job: &CopyJob, outcome: JobOutcome, duration_ms: u64, recent: bool) {
        let seen = !recent
            && matches!(
                outcome,
                JobOutcome::Copied { .. } | JobOutcome::UpToDate { .. }
            );
        let referrers = outcome.referrers();
        let up_to_date = if recent {
            UP_TO_DATE_RECENTLY
        } else {
            UP_TO_DATE
        };
        let (outcome, bytes, class, reason) = match outcome {
            JobOutcome::Copied { bytes, .. } => (Outcome::Copied, bytes, None, None),
            JobOutcome::UpToDate { bytes, referrers } => {
                let why = match referrers {
                    0 => up_to_date.to_string(),
                    n => format!("{up_to_date}; {n} referrers copied"),
                };
                (Outcome::Skipped, bytes, None, Some(why))
            }
            JobOutcome::WouldCopy => (Outcome::WouldCopy, 0, None, None),
            JobOutcome::Failed(e) => (Outcome::Failed, 0, Some(e.class), Some(e.reason)),
            JobOutcome::Superseded(why) => (Outcome::Skipped, 0, None, Some(why)),
        };
        let (src, dst) = (job.source_ref(), job.destination_ref());
        match outcome {
            Outcome::Copied => tracing::info!(
                bytes,
                duration_ms,
                "copied {src} -> {dst} ({}, {:.1}s)",
                human_bytes(bytes),
                duration_ms as f64 / 1000.0
            ),
            Outcome::Failed => tracing::error!(
                error_class = class.map(|c| c.as_str()),
                reason = reason.as_deref(),
                "failed {src} -> {dst}"
            ),
            Outcome::WouldCopy => tracing::debug!("would copy {src} -> {dst}"),
            Outcome::Skipped => tracing::debug!("up to date {dst}"),
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
            let record = crate::ledger::JobRow {
                state,
                bytes,
                duration_ms,
                error_class: class,
                reason: reason.as_deref(),
                at: &at,
                verified: seen,
            };
            if let Err(e) = l.record_job(&self.run_id, job, &record) {
                tracing::error!(error = %e, "could not record the job in the ledger");
            }
        }
        self.jobs.lock().unwrap().push(JobReport {
            job_id: job.id(),
            source: src,
            destination: dst,
            digest: job.source_digest.as_ref().map(|d| d.to_string()),
            outcome,
            reason,
            error_class: class,
            bytes,
            referrers,
            duration_ms,
            finished_ms: self.started.elapsed().as_millis() as u64,
        });
    }
}

/// The in-process job queue: planned jobs wait here (bounded) for a runner; up-to-date and
/// unresolvable tags are recorded at once.
struct LocalQueue<'a> {
    tx: mpsc::Sender<PlannedJob>,
    recorder: &'a Recorder<'a>,
}

/// The runners stopped taking jobs (the run was interrupted).
#[derive(Debug, thiserror::Error)]
#[error("the run was stopped")]
pub struct Stopped;

impl JobSink for LocalQueue<'_> {
    type Error = Stopped;
    const CHUNK: usize = 1;

    async fn put(&self, chunk: Vec<Planned>) -> Result<(), Stopped> {
        for planned in chunk {
            match planned {
                Planned::Copy(job) => self.tx.send(job).await.map_err(|_| Stopped)?,
                Planned::UpToDate(job) => self.recorder.finish(&job, JobOutcome::UP_TO_DATE, 0),
                Planned::Recent(job) => self.recorder.finish_recent(&job),
                Planned::Failed(job, e) => self.recorder.finish(&job, JobOutcome::Failed(e), 0),
            }
        }
        Ok(())
    }

    fn selected(&self, tags: usize) {
        self.recorder
            .progress
            .planned
            .fetch_add(tags as u64, Ordering::Relaxed);
    }
}

/// Runs a sync of everything `config` selects until done or until `stop` resolves. Fails only
/// when the run cannot start; job failures are in the report.
pub async fn run(
    config: Config,
    aws: Aws,
    opts: &SyncOptions,
    ledger: Option<&Ledger>,
    progress: &Progress,
    stop: impl Future<Output = ()>,
) -> Result<SyncReport, SyncError> {
    let started = Instant::now();
    let started_at = rfc3339(SystemTime::now());
    let runners = opts.jobs.unwrap_or(config.concurrency.jobs).max(1);
    let engine = Engine::new(
        config,
        opts.retry.clone(),
        aws,
        progress.bytes.clone(),
        Budgets::local(),
    );
    let (dst_host, dst) = engine.registries.prepare().await?;
    let ledger = if opts.dry_run { None } else { ledger };
    let recorder = Recorder {
        run_id: uuid::Uuid::new_v4().to_string(),
        started,
        ledger,
        progress,
        jobs: Mutex::new(Vec::new()),
        running: AtomicU64::new(0),
    };
    let run_id = recorder.run_id.clone();
    if let Some(l) = ledger {
        l.start_run(&run_id, &started_at, &opts.config_source)?;
    }
    tracing::info!(run_id = %run_id, destination = %dst_host, repos = engine.config.repos.len(), dry_run = opts.dry_run, "sync started");

    let ctx = PlanContext {
        scanner: Scanner {
            config: &engine.config,
            registries: &engine.registries,
            dst_host: &dst_host,
            dst: &dst,
            dry_run: opts.dry_run,
        },
        resolve: Resolve::Get,
        recent: ledger
            .filter(|_| !opts.recheck_after.is_zero())
            .map(|ledger| Recent {
                ledger,
                since: SystemTime::now()
                    .checked_sub(opts.recheck_after)
                    .unwrap_or(SystemTime::UNIX_EPOCH),
            }),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let (tx, mut rx) = mpsc::channel::<PlannedJob>(runners * QUEUE_PER_RUNNER);
    let planning = {
        let (ctx, recorder, stopped) = (&ctx, &recorder, stopped());
        async move {
            let sink = LocalQueue { tx, recorder };
            tokio::select! {
                // The only sink error is the stop itself.
                (plans, _) = plan::plan_all(ctx, &sink) => plans,
                _ = stopped => Vec::new(),
            }
            // The sink (and with it the queue's sender) drops here: runners end when it drains.
        }
    };
    let running = futures_util::stream::poll_fn(|cx| rx.poll_recv(cx))
        .take_until(stopped())
        .for_each_concurrent(runners, |job| {
            let (engine, recorder) = (&engine, &recorder);
            async move {
                recorder.running.fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                let span = tracing::debug_span!("job", job_id = %job.job.id(), src = %job.job.source_ref(), dst = %job.job.destination_ref());
                let outcome = tracing::Instrument::instrument(engine.run(&job, opts.dry_run), span).await;
                recorder.finish(&job.job, outcome, started.elapsed().as_millis() as u64);
                recorder.running.fetch_sub(1, Ordering::Relaxed);
            }
        });
    let (plans, interrupted, cancelled) = {
        let work = futures_util::future::join(planning, running);
        tokio::pin!(work, stop);
        let (plans, interrupted) = tokio::select! {
            (plans, ()) = &mut work => (plans, false),
            _ = &mut stop => {
                let in_flight = recorder.running.load(Ordering::Relaxed);
                tracing::warn!(in_flight, stop_timeout_s = opts.stop_timeout.as_secs(), "stopping: no new jobs; letting running copies finish");
                let _ = stop_tx.send(true);
                match tokio::time::timeout(opts.stop_timeout, &mut work).await {
                    Ok((plans, ())) => (plans, true),
                    Err(_) => (Vec::new(), true),
                }
            }
        };
        (plans, interrupted, recorder.running.load(Ordering::Relaxed))
    };

    let mut jobs = recorder.jobs.into_inner().unwrap();
    jobs.sort_by(|a, b| a.destination.cmp(&b.destination));
    let count = |o: Outcome| jobs.iter().filter(|j| j.outcome == o).count() as u64;
    let repositories = repo_reports(&plans, &dst_host);
    let failed_repos = plans.iter().filter(|p| p.failed_whole()).count() as u64;
    let state = if interrupted {
        RunState::Interrupted
    } else {
        RunState::Finished
    };
    let mut report = SyncReport {
        run_id,
        state,
        dry_run: opts.dry_run,
        started_at,
        duration_ms: started.elapsed().as_millis() as u64,
        selected: progress.planned.load(Ordering::Relaxed),
        copied: count(Outcome::Copied),
        skipped: count(Outcome::Skipped),
        failed: count(Outcome::Failed) + failed_repos,
        would_copy: count(Outcome::WouldCopy),
        cancelled,
        bytes: jobs.iter().map(|j| j.bytes).sum(),
        referrers: jobs.iter().map(|j| u64::from(j.referrers)).sum(),
        requests: Default::default(),
        blob_requests: Default::default(),
        peak_rss_bytes: None,
        repositories,
        jobs,
    };
    for r in engine.registries.all() {
        report
            .requests
            .insert(r.host().to_string(), r.counts.total.load(Ordering::Relaxed));
        report
            .blob_requests
            .insert(r.host().to_string(), r.counts.blob.load(Ordering::Relaxed));
    }
    if let Some(l) = ledger {
        let totals = crate::ledger::RunTotals {
            state: report.state,
            copied: report.copied,
            skipped: report.skipped,
            failed: report.failed,
            bytes: report.bytes,
        };
        l.finish_run(&report.run_id, &rfc3339(SystemTime::now()), &totals)?;
    }
    report.peak_rss_bytes = peak_rss_bytes();
    tracing::info!(run_id = %report.run_id, state = %state, copied = report.copied, skipped = report.skipped, failed = report.failed, bytes = report.bytes, "sync ended");
    Ok(report)
}

/// The report's repository lines: every repository something happened to (created, skipped,
/// failed), logged as they are listed.
fn repo_reports(plans: &[RepoPlan], dst_host: &str) -> Vec<RepoReport> {
    let mut out: Vec<RepoReport> = plans
        .iter()
        .filter(|p| p.event.is_some_and(|e| e != RepoEvent::Planned))
        .map(|p| {
            let event = p.event.expect("filtered above");
            let reason = p.reason.as_deref().unwrap_or("");
            match event {
                RepoEvent::Failed => {
                    tracing::error!(source = %p.source, reason, "repository failed")
                }
                _ => {
                    tracing::info!(source = %p.source, destination = %p.destination, event = %event, reason, "repository")
                }
            }
            RepoReport {
                source: p.source.clone(),
                destination: format!("{dst_host}/{}", p.destination),
                event,
                reason: p.reason.clone(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.destination.cmp(&b.destination));
    out
}
