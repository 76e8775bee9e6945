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
//! Job states: `queued → running → succeeded | skipped | failed | dead`; `failed` is a
//! transient failure whose message will come back. Transitions are conditional writes: a job
//! that is `succeeded`, `skipped` or `dead` is never started or finished again (a duplicate
//! delivery is acknowledged instead), so a run ends with one consistent record per job.

use super::message::JobMessage;
use crate::sync::rfc3339_ms;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, PutRequest, ScalarAttributeType, TimeToLiveSpecification,
    WriteRequest,
};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// History is kept this long (DynamoDB TTL removes it after).
pub const HISTORY_DAYS: u64 = 90;
/// DynamoDB's BatchWriteItem limit.
const WRITE_BATCH: usize = 25;
/// Times unprocessed batch items are written again (doubling from 50 ms: about 3 s in all).
const BATCH_REWRITES: u32 = 6;
/// The one global secondary index.
pub const GSI: &str = "gsi1";

type Item = HashMap<String, AttributeValue>;

/// A DynamoDB call that failed (after the SDK's own retries).
#[derive(Debug, thiserror::Error)]
#[error("DynamoDB {op} on {table}: {message}")]
pub struct TableError {
    /// The API operation.
    pub op: &'static str,
    /// The table.
    pub table: String,
    /// What went wrong.
    pub message: String,
}

/// A run as recorded.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RunRecord {
    /// Run id.
    pub run_id: String,
    /// `planning`, `planned`, `failed` (planning stopped), or `events` (push events of a day).
    pub state: String,
    /// When planning started.
    pub started_at: String,
    /// When planning ended.
    pub planned_at: Option<String>,
    /// Where the config came from.
    pub config_source: String,
    /// The config version read (S3 version id / ETag, or a file hash).
    pub config_version: String,
    /// Jobs sent.
    pub planned: u64,
    /// Tags already equal at the destination.
    pub up_to_date: u64,
    /// Repositories that could not be planned.
    pub failed_repos: u64,
}

/// One repository of a run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepoRecord {
    /// `host/repo` at the source.
    pub source: String,
    /// Destination repository.
    pub destination: String,
    /// Jobs sent for it.
    pub planned: u64,
    /// Tags already equal.
    pub up_to_date: u64,
    /// `planned`, `created`, `skipped` or `failed`.
    pub event: String,
    /// Why skipped or failed.
    pub reason: Option<String>,
}

/// One job of one run, as it stands.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct JobItem {
    /// Run id.
    pub run_id: String,
    /// Job id.
    pub job_id: String,
    /// State (see the module docs).
    pub state: String,
    /// Attempts started.
    pub attempts: u64,
    /// Times replayed from the dead-letter queue.
    pub replays: u64,
    /// The last worker that touched it.
    pub worker: Option<String>,
    /// `host/repo:tag` at the source.
    pub source: String,
    /// `host/repo:tag` at the destination.
    pub destination: String,
    /// The source digest.
    pub digest: String,
    /// Bytes streamed by the attempt that finished it.
    pub bytes: u64,
    /// Duration of the attempt that finished it, in milliseconds.
    pub duration_ms: u64,
    /// Error class of the last failure.
    pub error_class: Option<String>,
    /// Reason of the last failure.
    pub error: Option<String>,
    /// When it was queued.
    pub queued_at: String,
    /// Last change.
    pub updated_at: String,
}

/// One entry of a job's history.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct JobEvent {
    /// When.
    pub at: String,
    /// The run.
    pub run_id: String,
    /// `succeeded`, `skipped`, `failed`, `dead`, `released`, `replayed`, `duplicate`.
    pub event: String,
    /// The attempt number it belongs to.
    pub attempt: u64,
    /// The worker (or `operator`).
    pub worker: Option<String>,
    /// Bytes streamed.
    pub bytes: u64,
    /// Milliseconds.
    pub duration_ms: u64,
    /// Error class.
    pub error_class: Option<String>,
    /// Reason.
    pub error: Option<String>,
}

/// How a job attempt ended, for [`FleetLedger::finish_job`].
#[derive(Debug, Clone, Default)]
pub struct Finish {
    /// `succeeded`, `skipped`, `failed` or `dead`.
    pub state: &'static str,
    /// The attempt number.
    pub attempt: u64,
    /// Bytes streamed.
    pub bytes: u64,
    /// Milliseconds.
    pub duration_ms: u64,
    /// Error class (failures).
    pub error_class: Option<String>,
    /// Reason (failures and skips).
    pub error: Option<String>,
}

/// The answer to [`FleetLedger::start_job`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Go ahead; this is attempt n.
    Go(u64),
    /// The job already ended in this state; acknowledge the message and do nothing.
    AlreadyDone(String),
}

/// The DynamoDB ledger table.
#[derive(Clone)]
pub struct FleetLedger {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn get_s(item: &Item, key: &str) -> Option<String> {
    item.get(key).and_then(|v| v.as_s().ok()).cloned()
}

fn get_n(item: &Item, key: &str) -> u64 {
    item.get(key)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn expires_at() -> AttributeValue {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    n(now + HISTORY_DAYS * 86_400)
}

fn now() -> String {
    rfc3339_ms(SystemTime::now())
}

fn job_key(run_id: &str, job_id: &str) -> Item {
    HashMap::from([
        ("pk".to_string(), s(format!("RUN#{run_id}"))),
        ("sk".to_string(), s(format!("JOB#{job_id}"))),
    ])
}

fn run_key(run_id: &str) -> Item {
    HashMap::from([
        ("pk".to_string(), s(format!("RUN#{run_id}"))),
        ("sk".to_string(), s("#RUN")),
    ])
}

fn is_conditional<E: ProvideErrorMetadata>(e: &aws_sdk_dynamodb::error::SdkError<E>) -> bool {
    e.as_service_error().and_then(|s| s.code()) == Some("ConditionalCheckFailedException")
}

/// An UpdateItem expression under construction. Every attribute goes through a `#name`
/// placeholder, so DynamoDB's reserved words (`state`, `source`, `bytes`, …) never bite.
#[derive(Default)]
struct Update {
    sets: Vec<String>,
    removes: Vec<String>,
    condition: Option<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Update {
    fn name(&mut self, attr: &str) -> String {
        let key = format!("#{attr}");
        self.names.insert(key.clone(), attr.to_string());
        key
    }

    fn value(&mut self, v: AttributeValue) -> String {
        let key = format!(":v{}", self.values.len());
        self.values.insert(key.clone(), v);
        key
    }

    fn set(&mut self, attr: &str, v: AttributeValue) -> &mut Self {
        let (n, v) = (self.name(attr), self.value(v));
        self.sets.push(format!("{n} = {v}"));
        self
    }

    fn set_if_missing(&mut self, attr: &str, v: AttributeValue) -> &mut Self {
        let (n, v) = (self.name(attr), self.value(v));
        self.sets.push(format!("{n} = if_not_exists({n}, {v})"));
        self
    }

    fn increment(&mut self, attr: &str) -> &mut Self {
        let (n, zero, one) = (self.name(attr), self.value(n(0)), self.value(n(1)));
        self.sets
            .push(format!("{n} = if_not_exists({n}, {zero}) + {one}"));
        self
    }

    fn remove(&mut self, attr: &str) -> &mut Self {
        let n = self.name(attr);
        self.removes.push(n);
        self
    }

    /// Only when the job has not ended for good (`absent_ok`: or does not exist yet).
    fn unless_final(&mut self, absent_ok: bool) -> &mut Self {
        let state = self.name("state");
        let finals: Vec<String> = FINAL.iter().map(|f| self.value(s(*f))).collect();
        let exists = if absent_ok {
            "attribute_not_exists(pk) OR"
        } else {
            "attribute_exists(pk) AND"
        };
        self.condition = Some(format!("{exists} NOT ({state} IN ({}))", finals.join(", ")));
        self
    }

    fn only_in_state(&mut self, wanted: &str) -> &mut Self {
        let (n, v) = (self.name("state"), self.value(s(wanted)));
        self.condition = Some(format!("{n} = {v}"));
        self
    }

    fn expression(&self) -> String {
        let mut e = format!("SET {}", self.sets.join(", "));
        if !self.removes.is_empty() {
            e.push_str(&format!(" REMOVE {}", self.removes.join(", ")));
        }
        e
    }

    /// The request for `key` in `table`.
    fn request(
        self,
        client: &aws_sdk_dynamodb::Client,
        table: &str,
        key: Item,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        client
            .update_item()
            .table_name(table)
            .set_key(Some(key))
            .update_expression(self.expression())
            .set_condition_expression(self.condition)
            .set_expression_attribute_names(Some(self.names))
            .set_expression_attribute_values(Some(self.values))
    }
}

/// States in which a job is finished for good.
const FINAL: [&str; 3] = ["succeeded", "skipped", "dead"];

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

    fn error<E: std::error::Error + 'static>(&self, op: &'static str, e: E) -> TableError {
        TableError {
            op,
            table: self.table.clone(),
            message: DisplayErrorContext(&e).to_string(),
        }
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
            ("state".to_string(), s(&run.state)),
            ("started_at".to_string(), s(&run.started_at)),
            ("config_source".to_string(), s(&run.config_source)),
            ("config_version".to_string(), s(&run.config_version)),
            ("expires_at".to_string(), expires_at()),
        ]);
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| self.error("PutItem", e))?;
        Ok(())
    }

    /// Records the end of planning with its counts.
    pub async fn finish_run(&self, run: &RunRecord) -> Result<(), TableError> {
        let mut u = Update::default();
        u.set("state", s(&run.state))
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
            .set("state", s("events"))
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
    pub async fn record_repos(&self, run_id: &str, repos: &[RepoRecord]) -> Result<(), TableError> {
        let items = repos.iter().map(|r| {
            let mut item = HashMap::from([
                ("pk".to_string(), s(format!("RUN#{run_id}"))),
                ("sk".to_string(), s(format!("REPO#{}", r.destination))),
                ("kind".to_string(), s("repo")),
                ("source".to_string(), s(&r.source)),
                ("destination".to_string(), s(&r.destination)),
                ("planned".to_string(), n(r.planned)),
                ("up_to_date".to_string(), n(r.up_to_date)),
                ("event".to_string(), s(&r.event)),
                ("expires_at".to_string(), expires_at()),
            ]);
            if let Some(reason) = &r.reason {
                item.insert("reason".to_string(), s(reason));
            }
            item
        });
        self.write_all(items.collect()).await
    }

    /// Records planned jobs as `queued` (before their messages are sent, so a job on the queue
    /// always has a ledger item).
    pub async fn queue_jobs(&self, jobs: &[JobMessage]) -> Result<(), TableError> {
        let at = now();
        let items = jobs.iter().map(|m| {
            let mut item = job_key(&m.run_id, &m.job_id);
            item.extend(
                job_attributes(m)
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v)),
            );
            item.insert("state".to_string(), s("queued"));
            item.insert("attempts".to_string(), n(0));
            item.insert("queued_at".to_string(), s(&at));
            item.insert("updated_at".to_string(), s(&at));
            item.insert("gsi1sk".to_string(), s(format!("{at}#{}", m.run_id)));
            item
        });
        self.write_all(items.collect()).await
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
        u.set("state", s("running"))
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
                let state = self
                    .job(&m.run_id, &m.job_id)
                    .await?
                    .map(|j| j.state)
                    .unwrap_or_default();
                Ok(Start::AlreadyDone(state))
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
        u.set("state", s(f.state))
            .set("worker", s(worker))
            .set("updated_at", s(now()))
            .set("bytes", n(f.bytes))
            .set("duration_ms", n(f.duration_ms))
            .unless_final(false);
        match (&f.error_class, &f.error) {
            (Some(class), Some(error)) => {
                u.set("error_class", s(class)).set("error", s(error));
            }
            // A success clears the reason of an earlier failed attempt.
            _ if f.state == "succeeded" => {
                u.remove("error_class").remove("error");
            }
            _ => {}
        }
        let out = u
            .request(&self.client, &self.table, job_key(&m.run_id, &m.job_id))
            .send()
            .await;
        match out {
            Ok(_) => {
                self.add_event(m, f.state, f.attempt, Some(worker), f)
                    .await?;
                Ok(true)
            }
            Err(e) if is_conditional(&e) => {
                self.add_event(m, "duplicate", f.attempt, Some(worker), f)
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
        event: &'static str,
        who: &str,
    ) -> Result<(), TableError> {
        let mut u = Update::default();
        u.set("state", s("queued"))
            .set("updated_at", s(now()))
            .set("worker", s(who));
        if event == "replayed" {
            u.increment("replays");
            for (name, value) in job_attributes(m) {
                u.set_if_missing(name, value);
            }
        } else {
            u.only_in_state("running");
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
        event: &str,
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
            ("event".to_string(), s(event)),
            ("attempt".to_string(), n(attempt)),
            ("bytes".to_string(), n(f.bytes)),
            ("duration_ms".to_string(), n(f.duration_ms)),
            ("expires_at".to_string(), expires_at()),
        ]);
        if let Some(w) = worker {
            item.insert("worker".to_string(), s(w));
        }
        if let Some(c) = &f.error_class {
            item.insert("error_class".to_string(), s(c));
        }
        if let Some(e) = &f.error {
            item.insert("error".to_string(), s(e));
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| self.error("PutItem", e))?;
        Ok(())
    }

    /// One job of one run.
    pub async fn job(&self, run_id: &str, job_id: &str) -> Result<Option<JobItem>, TableError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(job_key(run_id, job_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.error("GetItem", e))?;
        Ok(out.item().map(job_item))
    }

    /// A run, or the latest one when `run_id` is `None`.
    pub async fn run(&self, run_id: Option<&str>) -> Result<Option<RunRecord>, TableError> {
        let item = match run_id {
            Some(id) => self
                .client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(run_key(id)))
                .send()
                .await
                .map_err(|e| self.error("GetItem", e))?
                .item()
                .cloned(),
            None => self.query_index("RUNS", 1, false).await?.into_iter().next(),
        };
        Ok(item.map(|i| RunRecord {
            run_id: get_s(&i, "run_id").unwrap_or_default(),
            state: get_s(&i, "state").unwrap_or_default(),
            started_at: get_s(&i, "started_at").unwrap_or_default(),
            planned_at: get_s(&i, "planned_at"),
            config_source: get_s(&i, "config_source").unwrap_or_default(),
            config_version: get_s(&i, "config_version").unwrap_or_default(),
            planned: get_n(&i, "planned"),
            up_to_date: get_n(&i, "up_to_date"),
            failed_repos: get_n(&i, "failed_repos"),
        }))
    }

    /// The repositories and jobs of a run (one paginated query).
    pub async fn run_contents(
        &self,
        run_id: &str,
    ) -> Result<(Vec<RepoRecord>, Vec<JobItem>), TableError> {
        let items = self.query_pk(&format!("RUN#{run_id}"), None, None).await?;
        let mut repos = Vec::new();
        let mut jobs = Vec::new();
        for i in items {
            match get_s(&i, "kind").as_deref() {
                Some("repo") => repos.push(RepoRecord {
                    source: get_s(&i, "source").unwrap_or_default(),
                    destination: get_s(&i, "destination").unwrap_or_default(),
                    planned: get_n(&i, "planned"),
                    up_to_date: get_n(&i, "up_to_date"),
                    event: get_s(&i, "event").unwrap_or_default(),
                    reason: get_s(&i, "reason"),
                }),
                Some("job") => jobs.push(job_item(&i)),
                _ => {}
            }
        }
        Ok((repos, jobs))
    }

    /// The jobs of a run in one of `states` (a key query with a filter, not a scan).
    pub async fn jobs_in_state(
        &self,
        run_id: &str,
        states: &[&str],
    ) -> Result<Vec<JobItem>, TableError> {
        let items = self
            .query_pk(&format!("RUN#{run_id}"), Some("JOB#"), Some(states))
            .await?;
        Ok(items.iter().map(job_item).collect())
    }

    /// Every run's record of a job, newest first.
    pub async fn job_runs(&self, job_id: &str) -> Result<Vec<JobItem>, TableError> {
        let items = self
            .query_index(&format!("JOB#{job_id}"), 100, false)
            .await?;
        Ok(items.iter().map(job_item).collect())
    }

    /// A job's history, oldest first.
    pub async fn job_history(&self, job_id: &str) -> Result<Vec<JobEvent>, TableError> {
        let items = self.query_pk(&format!("JOB#{job_id}"), None, None).await?;
        Ok(items
            .iter()
            .map(|i| JobEvent {
                at: get_s(i, "sk")
                    .and_then(|sk| sk.split('#').next().map(str::to_string))
                    .unwrap_or_default(),
                run_id: get_s(i, "run_id").unwrap_or_default(),
                event: get_s(i, "event").unwrap_or_default(),
                attempt: get_n(i, "attempt"),
                worker: get_s(i, "worker"),
                bytes: get_n(i, "bytes"),
                duration_ms: get_n(i, "duration_ms"),
                error_class: get_s(i, "error_class"),
                error: get_s(i, "error"),
            })
            .collect())
    }

    async fn query_pk(
        &self,
        pk: &str,
        sk_prefix: Option<&str>,
        states: Option<&[&str]>,
    ) -> Result<Vec<Item>, TableError> {
        let mut key = "pk = :pk".to_string();
        let mut req = self
            .client
            .query()
            .table_name(&self.table)
            .expression_attribute_values(":pk", s(pk));
        if let Some(prefix) = sk_prefix {
            key.push_str(" AND begins_with(sk, :prefix)");
            req = req.expression_attribute_values(":prefix", s(prefix));
        }
        if let Some(states) = states {
            let names: Vec<String> = (0..states.len()).map(|i| format!(":s{i}")).collect();
            req = req
                .filter_expression(format!("#state IN ({})", names.join(", ")))
                .expression_attribute_names("#state", "state");
            for (name, state) in names.iter().zip(states) {
                req = req.expression_attribute_values(name, s(*state));
            }
        }
        let mut pages = req.key_condition_expression(key).into_paginator().send();
        let mut items = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error("Query", e))?;
            items.extend(page.items().iter().cloned());
        }
        Ok(items)
    }

    async fn query_index(
        &self,
        gsi1pk: &str,
        limit: i32,
        oldest_first: bool,
    ) -> Result<Vec<Item>, TableError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(GSI)
            .key_condition_expression("gsi1pk = :pk")
            .expression_attribute_values(":pk", s(gsi1pk))
            .scan_index_forward(oldest_first)
            .limit(limit)
            .send()
            .await
            .map_err(|e| self.error("Query", e))?;
        Ok(out.items().to_vec())
    }
}

/// The attributes a job item takes from its message.
fn job_attributes(m: &JobMessage) -> Vec<(&'static str, AttributeValue)> {
    vec![
        ("kind", s("job")),
        ("run_id", s(&m.run_id)),
        ("job_id", s(&m.job_id)),
        ("gsi1pk", s(format!("JOB#{}", m.job_id))),
        (
            "source",
            s(format!(
                "{}/{}:{}",
                m.source.registry, m.source.repository, m.source.tag
            )),
        ),
        (
            "destination",
            s(format!(
                "{}/{}:{}",
                m.destination.registry, m.destination.repository, m.source.tag
            )),
        ),
        ("digest", s(&m.source.digest)),
        ("expires_at", expires_at()),
    ]
}

fn job_item(i: &Item) -> JobItem {
    JobItem {
        run_id: get_s(i, "run_id").unwrap_or_default(),
        job_id: get_s(i, "job_id").unwrap_or_default(),
        state: get_s(i, "state").unwrap_or_default(),
        attempts: get_n(i, "attempts"),
        replays: get_n(i, "replays"),
        worker: get_s(i, "worker"),
        source: get_s(i, "source").unwrap_or_default(),
        destination: get_s(i, "destination").unwrap_or_default(),
        digest: get_s(i, "digest").unwrap_or_default(),
        bytes: get_n(i, "bytes"),
        duration_ms: get_n(i, "duration_ms"),
        error_class: get_s(i, "error_class"),
        error: get_s(i, "error"),
        queued_at: get_s(i, "queued_at").unwrap_or_default(),
        updated_at: get_s(i, "updated_at").unwrap_or_default(),
    }
}

/// Creates the ledger table with the schema above (on-demand, TTL on `expires_at`) unless it
/// exists, and waits until it is active.
pub async fn bootstrap_table(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<(), TableError> {
    let err = |op, e: &dyn std::fmt::Display| TableError {
        op,
        table: table.to_string(),
        message: e.to_string(),
    };
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .expect("name and type are set")
    };
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .expect("name and type are set")
    };
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .attribute_definitions(attr("pk"))
        .attribute_definitions(attr("sk"))
        .attribute_definitions(attr("gsi1pk"))
        .attribute_definitions(attr("gsi1sk"))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(GSI)
                .key_schema(key("gsi1pk", KeyType::Hash))
                .key_schema(key("gsi1sk", KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .expect("index fields are set"),
        )
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(e) if e.as_service_error().and_then(|s| s.code()) == Some("ResourceInUseException") => {
        }
        Err(e) => return Err(err("CreateTable", &DisplayErrorContext(&e))),
    }
    for _ in 0..120 {
        let out = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| err("DescribeTable", &DisplayErrorContext(&e)))?;
        let status = out.table().and_then(|t| t.table_status().cloned());
        if status == Some(aws_sdk_dynamodb::types::TableStatus::Active) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name("expires_at")
                .enabled(true)
                .build()
                .expect("name and flag are set"),
        )
        .send()
        .await
        .map(|_| ())
        .or_else(|e| {
            // Enabling TTL twice is an error on AWS; the second call changes nothing.
            if e.as_service_error()
                .and_then(|s| s.message())
                .is_some_and(|m| m.contains("already enabled"))
            {
                Ok(())
            } else {
                Err(err("UpdateTimeToLive", &DisplayErrorContext(&e)))
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_name_every_attribute_through_a_placeholder() {
        let mut u = Update::default();
        u.set("state", s("running"))
            .increment("attempts")
            .set_if_missing("source", s("x"))
            .remove("error")
            .unless_final(true);
        assert_eq!(
            u.expression(),
            "SET #state = :v0, #attempts = if_not_exists(#attempts, :v1) + :v2, \
             #source = if_not_exists(#source, :v3) REMOVE #error"
        );
        assert_eq!(
            u.condition.as_deref(),
            Some("attribute_not_exists(pk) OR NOT (#state IN (:v4, :v5, :v6))")
        );
        assert_eq!(u.names["#source"], "source");
        assert_eq!(u.values.len(), 7);
    }
}
