//! The worker: long-poll the jobs queue, run up to N jobs at once, record each in the ledger, and
//! drain on shutdown.
//!
//! Delivery is at least once, so every step is safe to repeat: the ledger refuses to start or
//! finish a job that already ended (a duplicate is acknowledged), and the copy checks the
//! destination digest before moving anything. A message is deleted only after its outcome is
//! recorded. Transient failures come back as a fresh copy of the message delayed by a time that
//! doubles per retry (so they do not use up the queue's `maxReceiveCount`, which is left to
//! catch messages that crash workers), until they have been failing for
//! [`WorkerOptions::give_up_after`]; permanent ones and the last transient one are
//! dead-lettered at once with their reason as message attributes.
//!
//! Shutdown (SIGTERM from ECS): stop receiving, let in-flight jobs finish until the drain
//! deadline, then release the rest (ledger `released`, message visible again) and return.

mod context;
mod handle;
mod held;
mod lambda;

pub use context::{event_run_id, ConfigVersion, CurrentConfig};
pub use lambda::{EventWorker, RELEASE_MARGIN};

use super::ledger::FleetLedger;
use super::queue::{self, Queue, QueueError, LONG_POLL_SECONDS, SQS_BATCH};
use crate::retry::RetryPolicy;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// Default seconds a received message stays invisible between heartbeats. Short, so the job of
/// a worker that died comes back within a minute; heartbeats every third of it keep live jobs.
pub const DEFAULT_VISIBILITY_SECONDS: u32 = 60;
/// Longest a worker with free job slots waits for a full batch of them (ten, or its
/// concurrency) before it receives: under load a receive then brings ten messages, about 0.1
/// requests per job; with long jobs it costs a slot at most this long per receive.
pub const RECEIVE_LINGER: Duration = Duration::from_millis(500);
/// Default longest job (matches the module's `worker_job_deadline_seconds`).
pub const DEFAULT_JOB_DEADLINE: Duration = Duration::from_secs(900);
/// Default drain deadline after SIGTERM: below ECS's default stop timeout of 120 s, leaving time
/// to release what is left.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(100);
/// Default interval between config reloads.
pub const DEFAULT_CONFIG_REFRESH: Duration = Duration::from_secs(300);
/// Delay before a transiently failed job's first retry; doubles per receive, at most
/// [`MAX_REQUEUE_DELAY`].
pub const DEFAULT_REQUEUE_DELAY: Duration = Duration::from_secs(30);
/// Longest delay before a retry (15 minutes: the most SQS delays a message).
pub const MAX_REQUEUE_DELAY: Duration = Duration::from_secs(900);
/// Default time a transiently failing job keeps being retried before it is dead-lettered:
/// outlasts an outage of a registry, ECR or DynamoDB of an hour or two.
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(3 * 3600);

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Config file or `s3://bucket/key`.
    pub config: String,
    /// This worker's name in the ledger.
    pub worker_id: String,
    /// Jobs at once (default: the config's `concurrency.jobs`).
    pub concurrency: Option<usize>,
    /// See [`DEFAULT_VISIBILITY_SECONDS`].
    pub visibility_seconds: u32,
    /// See [`DEFAULT_JOB_DEADLINE`].
    pub job_deadline: Duration,
    /// See [`DEFAULT_DRAIN`].
    pub drain: Duration,
    /// See [`DEFAULT_CONFIG_REFRESH`].
    pub config_refresh: Duration,
    /// See [`DEFAULT_REQUEUE_DELAY`].
    pub requeue_delay: Duration,
    /// See [`DEFAULT_GIVE_UP_AFTER`].
    pub give_up_after: Duration,
    /// Long-poll wait (at most 20 s).
    pub wait_seconds: i32,
    /// Registry retry policy.
    pub retry: RetryPolicy,
    /// Stop after this many messages (benchmarks and tests); `None` runs until shutdown.
    pub max_messages: Option<u64>,
    /// Stop when the queue stays empty this long; `None` runs until shutdown.
    pub exit_when_idle: Option<Duration>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            config: String::new(),
            worker_id: default_worker_id(),
            concurrency: None,
            visibility_seconds: DEFAULT_VISIBILITY_SECONDS,
            job_deadline: DEFAULT_JOB_DEADLINE,
            drain: DEFAULT_DRAIN,
            config_refresh: DEFAULT_CONFIG_REFRESH,
            requeue_delay: DEFAULT_REQUEUE_DELAY,
            give_up_after: DEFAULT_GIVE_UP_AFTER,
            wait_seconds: LONG_POLL_SECONDS,
            retry: RetryPolicy::default(),
            max_messages: None,
            exit_when_idle: None,
        }
    }
}

impl WorkerOptions {
    /// The delay before the `n`th retry (or the `n`th receive's hand-back).
    pub fn requeue_delay(&self, n: u32) -> Duration {
        let factor = 1u32 << n.saturating_sub(1).min(16);
        (self.requeue_delay * factor).min(MAX_REQUEUE_DELAY)
    }
}

/// The ECS task id when running in ECS, `lambda-` and the execution environment's id under
/// Lambda, else `host-pid`.
pub fn default_worker_id() -> String {
    if let Ok(stream) = std::env::var("AWS_LAMBDA_LOG_STREAM_NAME") {
        // `2026/12/03/[$LATEST]0123abcd…`: one stream per execution environment.
        let id = stream.rsplit(']').next().unwrap_or(&stream);
        return format!("lambda-{}", id.chars().take(12).collect::<String>());
    }
    if let Ok(uri) = std::env::var("ECS_CONTAINER_METADATA_URI_V4") {
        if let Some(last) = uri.trim_end_matches('/').rsplit('/').next() {
            return last.split('-').next().unwrap_or(last).to_string();
        }
    }
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_string());
    format!("{host}-{}", std::process::id())
}

/// Why the worker could not run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The config did not load.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A registry client could not be made.
    #[error(transparent)]
    Setup(#[from] crate::registries::SetupError),
    /// The queue could not be read at start.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The ledger table could not be read at start.
    #[error(transparent)]
    Ledger(#[from] super::ledger::TableError),
}

/// What a worker did, for its exit line.
#[derive(Debug, Clone, Default)]
pub struct WorkerStats {
    /// Messages taken from the queue.
    pub received: u64,
    /// Jobs released at the drain deadline.
    pub released: bool,
}

/// What became of a received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Finished with (recorded, dead-lettered, or replaced by a delayed copy): delete it. The
    /// fleet worker deletes it in a batch; under Lambda the event source mapping does.
    Done,
    /// Left to come back (handed back with a delay, released, or no longer ours): a Lambda
    /// function reports it in `batchItemFailures`.
    Back,
}

/// One worker process: what every job task shares.
pub(crate) struct Worker {
    opts: WorkerOptions,
    queue: Queue,
    dlq: Option<Queue>,
    ledger: FleetLedger,
    config: CurrentConfig,
    max_receive_count: Option<u32>,
    abort: watch::Receiver<bool>,
    /// Jobs running in this process: a second delivery of one of them waits its turn instead
    /// of copying the same image twice at once.
    running: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The messages whose jobs run here, kept invisible by one batched heartbeat.
    held: held::Held,
    /// Finished messages, deleted in batches; `None` under Lambda, whose event source mapping
    /// deletes them.
    deletes: Option<held::Deletes>,
    /// The push-event run this process has already recorded: one ledger write per day, not
    /// one per event.
    event_run: std::sync::Mutex<Option<String>>,
}

impl Worker {
    /// Makes sure the ledger holds the push-event run `run_id`, writing only the first time
    /// this process sees it.
    async fn ensure_event_run(&self, run_id: &str) -> Result<(), super::ledger::TableError> {
        if self.event_run.lock().unwrap().as_deref() == Some(run_id) {
            return Ok(());
        }
        self.ledger
            .ensure_event_run(run_id, "ECR push events")
            .await?;
        *self.event_run.lock().unwrap() = Some(run_id.to_string());
        Ok(())
    }

    /// How often held messages are extended: a third of their visibility timeout.
    fn heartbeat_every(&self) -> Duration {
        Duration::from_secs((self.opts.visibility_seconds / 3).max(1) as u64)
    }

    /// Resolves once the drain deadline has passed.
    async fn aborted(&self) {
        let mut abort = self.abort.clone();
        let _ = abort.wait_for(|a| *a).await;
    }
}

/// How a worker takes its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Long-polls the queue, keeps its messages invisible with heartbeats and deletes them.
    Fleet,
    /// Handed batches by a Lambda event source mapping, which deletes what is done.
    Lambda,
}

impl Worker {
    /// Loads and checks the config, reads the queue's redrive policy (finding the dead-letter
    /// queue when none is given) and checks the ledger table: all a worker needs before its
    /// first message.
    async fn start(
        opts: WorkerOptions,
        aws: crate::aws::Aws,
        queue: Queue,
        dlq: Option<Queue>,
        ledger: FleetLedger,
        mode: Mode,
    ) -> Result<(Worker, watch::Sender<bool>), WorkerError> {
        let config = CurrentConfig::load(&opts.config, opts.retry.clone(), aws).await?;
        config.check().await?;
        let max_receive_count = queue.max_receive_count().await?;
        ledger.check().await?;
        let dlq = match dlq {
            Some(d) => Some(d),
            None => queue.dead_letter_queue().await?,
        };
        let (abort_tx, abort) = watch::channel(false);
        let worker = Worker {
            opts,
            queue,
            dlq,
            ledger,
            config,
            max_receive_count,
            abort,
            running: Default::default(),
            held: Default::default(),
            deletes: (mode == Mode::Fleet).then(Default::default),
            event_run: Default::default(),
        };
        tracing::info!(mode = ?mode, worker_id = %worker.opts.worker_id, queue = %worker.queue.url(), dlq = worker.dlq.as_ref().map(|d| d.url()).unwrap_or("none"), concurrency = worker.limit(), max_receive_count, "worker started");
        Ok((worker, abort_tx))
    }

    /// Jobs at once.
    fn limit(&self) -> usize {
        self.opts
            .concurrency
            .unwrap_or(self.config.current().config().concurrency.jobs)
            .max(1)
    }

    /// Starts the tasks every worker runs beside its jobs: its share of the manifest PUT
    /// budgets (until `sharing` turns true) and the config reloads. Under Lambda they run
    /// while the function runs and sleep while it is frozen between invocations.
    fn spawn_background(
        self: &Arc<Self>,
        sharing: watch::Receiver<bool>,
    ) -> (tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>) {
        let sharer = tokio::spawn(super::budget::share(
            self.ledger.clone(),
            self.config.budgets.clone(),
            self.opts.worker_id.clone(),
            sharing,
        ));
        let refresh = {
            let shared = self.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(shared.opts.config_refresh);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                every.tick().await;
                loop {
                    every.tick().await;
                    shared.config.reload().await;
                }
            })
        };
        (sharer, refresh)
    }
}

/// Runs the worker until `shutdown` resolves (or a configured stop), then drains.
pub async fn run(
    opts: WorkerOptions,
    aws: crate::aws::Aws,
    queue: Queue,
    dlq: Option<Queue>,
    ledger: FleetLedger,
    shutdown: impl Future<Output = ()>,
) -> Result<WorkerStats, WorkerError> {
    let (worker, abort_tx) = Worker::start(opts, aws, queue, dlq, ledger, Mode::Fleet).await?;
    let limit = worker.limit();
    let shared = Arc::new(worker);
    let bookkeeping = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let every = shared.heartbeat_every();
            let visibility = shared.opts.visibility_seconds as i32;
            let deletes = shared.deletes.as_ref().expect("a fleet worker deletes");
            tokio::join!(
                shared.held.heartbeat(&shared.queue, every, visibility),
                deletes.run(&shared.queue),
            );
        })
    };
    let permits = Arc::new(Semaphore::new(limit));
    let mut tasks = JoinSet::new();
    let mut stats = WorkerStats::default();
    tokio::pin!(shutdown);
    let (stop_sharing, sharing) = watch::channel(false);
    let (sharer, refresh) = shared.spawn_background(sharing);
    let mut idle_since = tokio::time::Instant::now();
    let mut failures = 0u32;
    loop {
        if shared
            .opts
            .max_messages
            .is_some_and(|max| stats.received >= max)
        {
            break;
        }
        let first = tokio::select! {
            _ = &mut shutdown => break,
            p = permits.clone().acquire_owned() => p.expect("never closed"),
        };
        while tasks.try_join_next().is_some() {}
        // Under load, wait a moment for a full batch of free slots: one receive then brings
        // ten jobs instead of one or two (see `RECEIVE_LINGER`).
        let batch = limit.min(SQS_BATCH);
        if permits.available_permits() + 1 < batch {
            let more = permits.clone().acquire_many_owned(batch as u32 - 1);
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::timeout(RECEIVE_LINGER, more) => {}
            }
        }
        let room = (permits.available_permits() + 1).min(SQS_BATCH);
        let mut receive = Box::pin({
            let shared = shared.clone();
            async move {
                let opts = &shared.opts;
                let visibility = Some(opts.visibility_seconds as i32);
                let received = shared
                    .queue
                    .receive(room, opts.wait_seconds, visibility)
                    .await;
                (shared, received)
            }
        });
        let received = tokio::select! {
            (_, r) = &mut receive => r,
            _ = &mut shutdown => {
                // Dropping the poll would not cancel it at SQS: messages it takes after we hang
                // up would stay hidden for a whole visibility timeout. Let it end (≤ 20 s) next
                // to the draining jobs, and hand back whatever it brings.
                tasks.spawn(async move {
                    let (shared, received) = receive.await;
                    release_unstarted(&shared.queue, received).await;
                });
                break;
            }
        };
        let messages = match received {
            Ok(m) => {
                failures = 0;
                m
            }
            Err(e) => {
                failures += 1;
                let pause = Duration::from_secs(1 << failures.min(5));
                tracing::error!(error = %e, pause_s = pause.as_secs(), "receive failed");
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(pause) => continue,
                }
            }
        };
        if messages.is_empty() {
            drop(first);
            if let Some(idle) = shared.opts.exit_when_idle {
                if idle_since.elapsed() >= idle && tasks.is_empty() {
                    tracing::info!("queue idle; stopping");
                    break;
                }
            }
            continue;
        }
        idle_since = tokio::time::Instant::now();
        let mut first = Some(first);
        for msg in messages {
            stats.received += 1;
            let permit = match first.take() {
                Some(p) => p,
                None => permits
                    .clone()
                    .try_acquire_owned()
                    .expect("received no more than the free permits"),
            };
            let shared = shared.clone();
            tasks.spawn(async move {
                handle::message(shared, msg, None).await;
                drop(permit);
            });
        }
    }
    refresh.abort();
    let in_flight = tasks.len();
    if in_flight > 0 {
        tracing::info!(
            in_flight,
            drain_s = shared.opts.drain.as_secs(),
            "stopped receiving; draining"
        );
    }
    let drained = tokio::time::timeout(shared.opts.drain, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        stats.released = true;
        let _ = abort_tx.send(true);
        while tasks.join_next().await.is_some() {}
    }
    bookkeeping.abort();
    let _ = stop_sharing.send(true);
    let _ = sharer.await;
    if let Some(deletes) = &shared.deletes {
        deletes.flush(&shared.queue).await;
    }
    tracing::info!(
        received = stats.received,
        released = stats.released,
        "worker stopped"
    );
    Ok(stats)
}

/// Makes messages received while stopping visible again at once; they were never started.
async fn release_unstarted(queue: &Queue, received: Result<Vec<queue::Received>, QueueError>) {
    let receipts: Vec<String> = match received {
        Ok(messages) => messages.into_iter().map(|m| m.receipt).collect(),
        Err(_) => return,
    };
    if receipts.is_empty() {
        return;
    }
    match queue.release_all(&receipts).await {
        Ok(()) => tracing::info!(
            messages = receipts.len(),
            "released messages received while stopping"
        ),
        Err(e) => tracing::warn!(
            messages = receipts.len(),
            error = %e,
            "could not release messages received while stopping; they return after their visibility timeout"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_per_receive_up_to_the_cap() {
        let opts = WorkerOptions::default();
        assert_eq!(opts.requeue_delay(1), Duration::from_secs(30));
        assert_eq!(opts.requeue_delay(2), Duration::from_secs(60));
        assert_eq!(opts.requeue_delay(4), Duration::from_secs(240));
        assert_eq!(opts.requeue_delay(6), MAX_REQUEUE_DELAY);
        assert_eq!(opts.requeue_delay(1000), MAX_REQUEUE_DELAY);
        assert_eq!(opts.requeue_delay(0), Duration::from_secs(30));
    }
}
