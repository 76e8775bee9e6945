//! The fleet's ledger in DynamoDB: runs, the jobs they planned, and every job's history.
//!
//! # Schema (one table; `infra/` creates the same keys)
//! | item | `pk` | `sk` | `gsi1pk` | `gsi1sk` |
//! |---|---|---|---|---|
//! | run | `RUN#<run>` | `#RUN` | `RUNS` | `<started_at>#<run>` |
//! | repository in a run | `RUN#<run>` | `REPO#<destination repo>` | – | – |
//! | job in a run | `RUN#<run>` | `JOB#<job>` | `JOB#<job>` | `<queued_at>#<run>` |
//! | job history event | `JOB#<job>` | `<at>#<random>` | – | – |
//!
//! All keys are strings; `expires_at` (epoch seconds, [`HISTORY_DAYS`] ahead) is the TTL.
//! - status of run R: `Query pk = RUN#R` (the run, its repositories and its jobs);
//! - failed jobs of run R: `Query pk = RUN#R, begins_with(sk, "JOB#")` filtered on `state`;
//! - latest runs: `Query gsi1pk = RUNS` newest first;
//! - one job across runs: `Query gsi1pk = JOB#J` and its history `Query pk = JOB#J`.
//!
//! Job states ([`JobState`]): `queued → running → succeeded | skipped | failed | dead`; `failed`
//! is a transient failure whose message will come back. Transitions are conditional writes: a
//! job in a final state is never started or finished again (a duplicate delivery is acknowledged
//! instead), so a run ends with one consistent record per job.

mod bootstrap;
mod items;
mod reads;
mod update;

pub use bootstrap::bootstrap_table;
pub use items::{FleetJob, HistoryEntry, RunRecord};

use super::message::JobMessage;
use crate::aws::describe;
use crate::job::RepoPlan;
use crate::vocab::{ErrorClass, JobEvent, JobState, RunState};
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use futures_util::{StreamExt, TryStreamExt};
use items::{expires_at, get_n, is_conditional, job_attributes, job_key, n, now, run_key, s, Item};
use std::collections::HashMap;
use std::time::Duration;
use update::Update;

/// History is kept this long (DynamoDB TTL removes it after).
pub const HISTORY_DAYS: u64 = 90;
/// DynamoDB's BatchWriteItem limit.
const WRITE_BATCH: usize = 25;
/// Times unprocessed batch items are written again (doubling from 50 ms: about 3 s in all).
const BATCH_REWRITES: u32 = 6;
/// Conditional job-item writes in flight at once while planning.
const QUEUE_PUTS_AT_ONCE: usize = 16;
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

    /// Records planned jobs as `queued`, after their messages were sent: a planner that dies
    /// in between leaves messages without items (a worker's start creates the item), never a
    /// `queued` item without a message. Each item is written only if absent, so a job a worker
    /// already started or finished is not set back.
    pub async fn queue_jobs(&self, jobs: &[JobMessage]) -> Result<(), TableError> {
        let at = now();
        let items: Vec<Item> = jobs
            .iter()
            .map(|m| {
                let mut item = job_key(&m.run_id, &m.job_id);
                item.extend(
                    job_attributes(m)
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v)),
                );
                item.insert("state".to_string(), s(JobState::Queued.as_str()));
                item.insert("attempts".to_string(), n(0));
                item.insert("queued_at".to_string(), s(&at));
                item.insert("updated_at".to_string(), s(&at));
                item.insert("gsi1sk".to_string(), s(format!("{at}#{}", m.run_id)));
                item
            })
            .collect();
        futures_util::stream::iter(items.into_iter().map(|item| self.put_if_absent(item)))
            .buffer_unordered(QUEUE_PUTS_AT_ONCE)
            .try_collect::<Vec<()>>()
            .await
            .map(drop)
    }

    /// Puts `item` unless an item with its key exists.
    async fn put_if_absent(&self, item: Item) -> Result<(), TableError> {
        let out = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e) if is_conditional(&e) => Ok(()),
            Err(e) => Err(self.error("PutItem", e)),
        }
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
    async fn write_all(&self, items: Vec<Item>) -> Result<(), TableError> {
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

    /// Marks a job `running` for `worker` and counts the attempt, unless it already ended.
    /// Creates the item when the planner did not (push events).
    pub async fn start_job(&self, m: &JobMessage, worker: &str) -> Result<Start, TableError> {
        let at = now();
        let mut u = Update::default();
        u.set("state", s(JobState::Running.as_str()))
            .set("worker", s(worker))
            .set("updated_at", s(&at))
            .increment("attempts")
            .set_if_missing("queued_at", s(&at))
            .set_if_missing("gsi1sk", s(format!("{at}#{}", m.run_id)))
            .unless_final(true);
        for (name, value) in job_attributes(m) {
            u.set(name, value);
        }
        let out = u
            .request(&self.client, &self.table, job_key(&m.run_id, &m.job_id))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        match out {
            // No history event here: the item says `running`, and the attempt's end writes one.
            Ok(out) => Ok(Start::Go(
                out.attributes().map(|a| get_n(a, "attempts")).unwrap_or(1),
            )),
            Err(e) if is_conditional(&e) => {
                // The condition failed, so the item exists in a final state.
                let ended = match self.job(&m.run_id, &m.job_id).await? {
                    Some(j) => Ended {
                        state: j.state,
                        error_class: j.error_class,
                        error: j.error,
                    },
                    None => Ended {
                        state: JobState::Dead,
                        error_class: None,
                        error: None,
                    },
                };
                Ok(Start::AlreadyDone(ended))
            }
            Err(e) => Err(self.error("UpdateItem", e)),
        }
    }

    /// Records how an attempt ended. Returns `false` (and records a `duplicate` event instead)
    /// when the job had already ended for good — another delivery of it finished first.
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
            .set("duration_ms", n(f.duration_ms))
            .unless_final(false);
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
        let out = u
            .request(&self.client, &self.table, job_key(&m.run_id, &m.job_id))
            .send()
            .await;
        // The history event follows in a second write: one TransactWriteItems would be neater,
        // but moto (the test stack) deep-copies the whole table per transaction and fails under
        // concurrent writes. A worker dying between the two writes loses only that event.
        match out {
            Ok(_) => {
                self.add_event(m, f.state.into(), f.attempt, Some(worker), f)
                    .await?;
                Ok(true)
            }
            Err(e) if is_conditional(&e) => {
                self.add_event(m, JobEvent::Duplicate, f.attempt, Some(worker), f)
                    .await?;
                Ok(false)
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
        let out = u
            .request(&self.client, &self.table, job_key(&m.run_id, &m.job_id))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        let attempt = match out {
            Ok(out) => out.attributes().map(|a| get_n(a, "attempts")).unwrap_or(0),
            Err(e) if is_conditional(&e) => return Ok(()),
            Err(e) => return Err(self.error("UpdateItem", e)),
        };
        self.add_event(m, event, attempt, Some(who), &Finish::default())
            .await
    }

    async fn add_event(
        &self,
        m: &JobMessage,
        event: JobEvent,
        attempt: u64,
        worker: Option<&str>,
        f: &Finish,
    ) -> Result<(), TableError> {
        let at = now();
        let mut item = HashMap::from([
            ("pk".to_string(), s(format!("JOB#{}", m.job_id))),
            (
                "sk".to_string(),
                s(format!("{at}#{:08x}", fastrand::u32(..))),
            ),
            ("kind".to_string(), s("event")),
            ("run_id".to_string(), s(&m.run_id)),
            ("event".to_string(), s(event.as_str())),
            ("attempt".to_string(), n(attempt)),
            ("bytes".to_string(), n(f.bytes)),
            ("duration_ms".to_string(), n(f.duration_ms)),
            ("expires_at".to_string(), expires_at()),
        ]);
        if let Some(w) = worker {
            item.insert("worker".to_string(), s(w));
        }
        if let Some(c) = f.error_class {
            item.insert("error_class".to_string(), s(c.as_str()));
        }
        if let Some(e) = &f.error {
            item.insert("error".to_string(), s(e));
        }
        self.put(item).await
    }
}
