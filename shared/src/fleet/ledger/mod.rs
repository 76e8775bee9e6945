//! The fleet's ledger in DynamoDB: runs, the repositories they planned, every job attempt and
//! its history, and the jobs still pending per destination repository.
//!
//! # Schema (one table; `infra/` creates the same keys)
//! | item | `pk` | `sk` | `gsi1pk` | `gsi1sk` |
//! |---|---|---|---|---|
//! | run | `RUN#<run>` | `#RUN` | `RUNS` | `<started_at>#<run>` |
//! | repository in a run | `RUN#<run>` | `REPO#<destination repo>` | – | – |
//! | job in a run, with its history | `RUN#<run>#<shard>` | `JOB#<job>` | – | – |
//! | jobs pending for a destination repository | `PENDING#<destination repo>` | `#PENDING` | – | – |
//! | the workers' leases on a rate budget ([`budget`]) | `BUDGET#<host>#<kind>` | `#BUDGET` | – | – |
//!
//! All keys are strings; `expires_at` (epoch seconds, [`HISTORY_DAYS`] ahead) is the TTL. A
//! run's job items are spread over [`JOB_SHARDS`] partitions by a hash of the job id.
//! - status of run R: `Query pk = RUN#R` (the run and its repositories) and one query per
//!   job partition `RUN#R#0` … `RUN#R#f`;
//! - latest runs: `Query gsi1pk = RUNS` newest first;
//! - one job across runs, with its history: a `BatchGetItem` of its key in the latest runs.
//!
//! # What a job costs: one write, two for a long one, no index write
//! The planner writes no item per job: it sends the messages, then counts them on the run and
//! records, once per destination repository, which jobs it left pending there (for the next
//! plan's check, [`pending`]). A worker reads the job item before it runs the job
//! (`start_job`: a job that already ended is not run again). A job still running after a
//! heartbeat interval is marked `running` (`mark_running`, which creates the item), so
//! `status` and `job show` see long jobs and their worker. The outcome (`finish_job`) is one
//! conditional write that creates or updates the item and appends the attempt to its
//! `history` list. Job items carry no index key, so no write touches the index. A job planned
//! but not yet started (or started less than a heartbeat ago) has no item: `status` counts it
//! as `queued` (planned minus recorded). Attempt numbers are set, not added, so a write the
//! SDK retries after a lost answer does not count twice.
//!
//! Job states ([`JobState`]): `queued → running → succeeded | skipped | superseded | conflict
//! | failed | dead`; `failed` is a transient failure whose message will come back. Transitions are
//! conditional writes: a job in a final state is never started or finished again (a duplicate
//! delivery is acknowledged instead), so a run ends with one consistent record per job.

mod bootstrap;
mod budget;
mod items;
pub mod pending;
mod reads;
mod update;

pub use bootstrap::bootstrap_table;
pub use budget::Lease;
pub use items::{FleetJob, HistoryEntry, RunRecord, JOB_SHARDS};

use super::message::JobMessage;
use crate::aws::describe;
use crate::job::RepoPlan;
use crate::vocab::{ErrorClass, JobEvent, JobState, RunState};
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use items::{
    expires_at, history_value, is_conditional, job_attributes, job_key, n, now, run_key, s, Item,
};
use std::collections::HashMap;
use std::time::Duration;
use update::Update;

/// History is kept this long (DynamoDB TTL removes it after).
pub const HISTORY_DAYS: u64 = 90;
/// DynamoDB's BatchWriteItem limit.
const WRITE_BATCH: usize = 25;
/// Times unprocessed batch items are written again (doubling from 50 ms: about 3 s in all).
const BATCH_REWRITES: u32 = 6;
/// The one global secondary index.
pub const GSI: &str = "gsi1";

/// A DynamoDB call that failed (after the SDK's own retries).
#[derive(Debug, thiserror::Error)]
#[error("DynamoDB {op} on {table}: {message}")]
pub struct TableError {
    /// The failure class.
    pub class: ErrorClass,
    /// The API operation.
    pub op: &'static str,
    /// The table.
    pub table: String,
    /// What went wrong.
    pub message: String,
}

/// How a job attempt ended, for [`FleetLedger::finish_job`].
#[derive(Debug, Clone, Default)]
pub struct Finish {
    /// `succeeded`, `skipped`, `failed` or `dead`.
    pub state: JobState,
    /// The attempt number.
    pub attempt: u64,
    /// Bytes streamed.
    pub bytes: u64,
    /// Referrers copied.
    pub referrers: u32,
    /// Milliseconds.
    pub duration_ms: u64,
    /// Error class (failures).
    pub error_class: Option<ErrorClass>,
    /// Reason (failures and skips).
    pub error: Option<String>,
}

/// The answer to [`FleetLedger::start_job`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Go ahead; this is attempt n.
    Go(u64),
    /// The job already ended; acknowledge the message (a `dead` one is dead-lettered again,
    /// so a dead job is never lost between the ledger and the dead-letter queue).
    AlreadyDone(Ended),
}

/// How an ended job ended, as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// Its final state.
    pub state: JobState,
    /// Error class, when it failed.
    pub error_class: Option<ErrorClass>,
    /// Reason, when it failed or was superseded.
    pub error: Option<String>,
}

/// The DynamoDB ledger table.
#[derive(Clone)]
pub struct FleetLedger {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl FleetLedger {
    /// The ledger in `table`.
    pub fn new(client: aws_sdk_dynamodb::Client, table: &str) -> FleetLedger {
        FleetLedger {
            client,
            table: table.to_string(),
        }
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Checks that the table exists and can be read, so a wrong name fails at start rather
    /// than at the first job.
    pub async fn check(&self) -> Result<(), TableError> {
        self.client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| self.error("DescribeTable", e))?;
        Ok(())
    }

    fn error<E, R>(&self, op: &'static str, e: SdkError<E, R>) -> TableError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        TableError {
            class: ErrorClass::of_sdk(&e),
            op,
            table: self.table.clone(),
            message: describe(&e),
        }
    }

    async fn put(&self, item: Item) -> Result<(), TableError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| self.error("PutItem", e))?;
        Ok(())
    }

    /// Records a run that starts planning.
    pub async fn start_run(&self, run: &RunRecord) -> Result<(), TableError> {
        let mut item = run_key(&run.run_id);
        item.extend([
            ("gsi1pk".to_string(), s("RUNS")),
            (
                "gsi1sk".to_string(),
                s(format!("{}#{}", run.started_at, run.run_id)),
            ),
            ("kind".to_string(), s("run")),
            ("run_id".to_string(), s(&run.run_id)),
            ("state".to_string(), s(run.state.as_str())),
            ("started_at".to_string(), s(&run.started_at)),
            ("config_source".to_string(), s(&run.config_source)),
            ("config_version".to_string(), s(&run.config_version)),
            ("expires_at".to_string(), expires_at()),
        ]);
        self.put(item).await
    }

    /// Records the end of planning with its counts.
    pub async fn finish_run(&self, run: &RunRecord) -> Result<(), TableError> {
        let mut u = Update::default();
        u.set("state", s(run.state.as_str()))
            .set("planned_at", s(run.planned_at.clone().unwrap_or_else(now)))
            .set("planned", n(run.planned))
            .set("up_to_date", n(run.up_to_date))
            .set("failed_repos", n(run.failed_repos));
        u.request(&self.client, &self.table, run_key(&run.run_id))
            .send()
            .await
            .map_err(|e| self.error("UpdateItem", e))?;
        Ok(())
    }

    /// Makes sure the run item of a push-event day exists (`events-YYYY-MM-DD`).
    pub async fn ensure_event_run(&self, run_id: &str, source: &str) -> Result<(), TableError> {
        let at = now();
        let mut u = Update::default();
        u.set("kind", s("run"))
            .set("run_id", s(run_id))
            .set("state", s(RunState::Events.as_str()))
            .set_if_missing("started_at", s(&at))
            .set("config_source", s(source))
            .set("gsi1pk", s("RUNS"))
            .set_if_missing("gsi1sk", s(format!("{at}#{run_id}")))
            .set("expires_at", expires_at());
        u.request(&self.client, &self.table, run_key(run_id))
            .send()
            .await
            .map_err(|e| self.error("UpdateItem", e))?;
        Ok(())
    }

    /// Records the repositories of a run.
    pub async fn record_repos(&self, run_id: &str, repos: &[RepoPlan]) -> Result<(), TableError> {
        let items = repos.iter().map(|r| {
            let mut item = HashMap::from([
                ("pk".to_string(), s(format!("RUN#{run_id}"))),
                ("sk".to_string(), s(format!("REPO#{}", r.destination))),
                ("kind".to_string(), s("repo")),
                ("source".to_string(), s(&r.source)),
                ("destination".to_string(), s(&r.destination)),
                ("planned".to_string(), n(r.planned)),
                ("up_to_date".to_string(), n(r.up_to_date)),
                ("pending_elsewhere".to_string(), n(r.pending_elsewhere)),
                ("failed_tags".to_string(), n(r.failed)),
                ("expires_at".to_string(), expires_at()),
            ]);
            if let Some(event) = r.event {
                item.insert("event".to_string(), s(event.as_str()));
            }
            if let Some(reason) = &r.reason {
                item.insert("reason".to_string(), s(reason));
            }
            item
        });
        self.write_all(items.collect()).await
    }

    /// Records that planning made progress: `sent` more jobs are on the queue. `status` tells
    /// a planner that died (no progress for a while) from one that is working.
    pub async fn progress_run(&self, run_id: &str, sent: u64) -> Result<(), TableError> {
        let mut u = Update::default();
        u.set("updated_at", s(now())).add("planned", sent);
        u.request(&self.client, &self.table, run_key(run_id))
            .send()
            .await
            .map_err(|e| self.error("UpdateItem", e))?;
        Ok(())
    }

    /// BatchWriteItem in chunks of 25, writing unprocessed items again with backoff.
    pub(super) async fn write_all(&self, items: Vec<Item>) -> Result<(), TableError> {
        for chunk in items.chunks(WRITE_BATCH) {
            let mut pending: Vec<WriteRequest> = chunk
                .iter()
                .map(|item| {
                    WriteRequest::builder()
                        .put_request(
                            PutRequest::builder()
                                .set_item(Some(item.clone()))
                                .build()
                                .expect("item is set"),
                        )
                        .build()
                })
                .collect();
            let mut delay = Duration::from_millis(50);
            for attempt in 0..=BATCH_REWRITES {
                if pending.is_empty() {
                    break;
                }
                if attempt > 0 {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, pending.clone())
                    .send()
                    .await
                    .map_err(|e| self.error("BatchWriteItem", e))?;
                pending = out
                    .unprocessed_items()
                    .and_then(|u| u.get(&self.table).cloned())
                    .unwrap_or_default();
            }
            if !pending.is_empty() {
                return Err(TableError {
                    class: ErrorClass::Transient,
                    op: "BatchWriteItem",
                    table: self.table.clone(),
                    message: format!(
                        "{} items still unprocessed after {BATCH_REWRITES} rewrites",
                        pending.len()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Whether a delivery of `m` may run, and as which attempt: a strongly consistent read,
    /// no write. A job that already ended is not run again (its message is acknowledged, or
    /// dead-lettered again when it is `dead`).
    pub async fn start_job(&self, m: &JobMessage) -> Result<Start, TableError> {
        Ok(match self.job(&m.run_id, &m.job_id).await? {
            Some(j) if j.state.is_final() => Start::AlreadyDone(Ended {
                state: j.state,
                error_class: j.error_class,
                error: j.error,
            }),
            Some(j) => Start::Go(j.attempts + 1),
            None => Start::Go(1),
        })
    }

    /// Marks a job `running` for `worker` as attempt `attempt`, unless it already ended
    /// (then `false`); creates the item. The worker calls it only for a job still running
    /// after a heartbeat interval, so a short job costs one write (its finish).
    pub async fn mark_running(
        &self,
        m: &JobMessage,
        worker: &str,
        attempt: u64,
    ) -> Result<bool, TableError> {
        let at = now();
        let mut u = Update::default();
        u.set("state", s(JobState::Running.as_str()))
            .set("worker", s(worker))
            .set("updated_at", s(&at))
            .set("attempts", n(attempt))
            .set_if_missing("queued_at", s(&at))
            .unless_final(true);
        for (name, value) in job_attributes(m) {
            u.set(name, value);
        }
        let out = u
            .request(&self.client, &self.table, job_key(&m.run_id, &m.job_id))
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(e) if is_conditional(&e) => Ok(false),
            Err(e) => Err(self.error("UpdateItem", e)),
        }
    }

    /// Records how an attempt ended, appending it to the job's history. Returns `false` (and
    /// records a `duplicate` event instead) when the job had already ended for good — another
    /// delivery of it finished first. Creates the item when no start did (a job rejected
    /// before it ran).
    pub async fn finish_job(
        &self,
        m: &JobMessage,
        worker: &str,
        f: &Finish,
    ) -> Result<bool, TableError> {
        let mut u = Update::default();
        u.set("state", s(f.state.as_str()))
            .set("worker", s(worker))
            .set("updated_at", s(now()))
            .set("bytes", n(f.bytes))
            .set("referrers", n(u64::from(f.referrers)))
            .set("duration_ms", n(f.duration_ms))
            .set("attempts", n(f.attempt))
            .set_if_missing("queued_at", s(now()))
            .unless_final(true);
        for (name, value) in job_attributes(m) {
            u.set_if_missing(name, value);
        }
        match (&f.error_class, &f.error) {
            (Some(class), Some(error)) => {
                u.set("error_class", s(class.as_str()))
                    .set("error", s(error));
            }
            // A success clears the reason of an earlier failed attempt.
            _ if f.state == JobState::Succeeded => {
                u.remove("error_class").remove("error");
            }
            _ => {}
        }
        u.append(
            "history",
            history_value(&entry(m, f.state.into(), f.attempt, worker, f)),
        );
        let out = u
            .request(&self.client, &self.table, job_key(&m.run_id, &m.job_id))
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(e) if is_conditional(&e) => {
                // Rare (two deliveries raced): a second write leaves the loser's trace.
                let mut u = Update::default();
                u.append(
                    "history",
                    history_value(&entry(m, JobEvent::Duplicate, f.attempt, worker, f)),
                )
                .only_if_exists();
                match u
                    .request(&self.client, &self.table, job_key(&m.run_id, &m.job_id))
                    .send()
                    .await
                {
                    Ok(_) => Ok(false),
                    Err(e) if is_conditional(&e) => Ok(false),
                    Err(e) => Err(self.error("UpdateItem", e)),
                }
            }
            Err(e) => Err(self.error("UpdateItem", e)),
        }
    }

    /// Puts a job back to `queued`: `released` (a draining worker gave it back; only if it is
    /// still `running`) or `replayed` (an operator moved it out of the dead-letter queue;
    /// counted in `replays`).
    pub async fn requeue_job(
        &self,
        m: &JobMessage,
        event: JobEvent,
        who: &str,
    ) -> Result<(), TableError> {
        let mut u = Update::default();
        u.set("state", s(JobState::Queued.as_str()))
            .set("updated_at", s(now()))
            .set("worker", s(who));
        if event == JobEvent::Replayed {
            u.increment("replays");
            for (name, value) in job_attributes(m) {
                u.set_if_missing(name, value);
            }
        } else {
            u.only_in_state(JobState::Running);
        }
        // The attempt it belongs to (a read: releases and replays are rare).
        let attempt = self
            .job(&m.run_id, &m.job_id)
            .await?
            .map_or(0, |j| j.attempts);
        u.append(
            "history",
            history_value(&entry(m, event, attempt, who, &Finish::default())),
        );
        match u
            .request(&self.client, &self.table, job_key(&m.run_id, &m.job_id))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_conditional(&e) => Ok(()),
            Err(e) => Err(self.error("UpdateItem", e)),
        }
    }
}

/// The history entry of `event` for job `m`, now.
fn entry(m: &JobMessage, event: JobEvent, attempt: u64, worker: &str, f: &Finish) -> HistoryEntry {
    HistoryEntry {
        at: now(),
        run_id: m.run_id.clone(),
        event: Some(event),
        attempt,
        worker: Some(worker.to_string()),
        bytes: f.bytes,
        duration_ms: f.duration_ms,
        error_class: f.error_class,
        error: f.error.clone(),
    }
}
