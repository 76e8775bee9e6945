//! Ledger items ↔ records: attribute values, keys, and the records the ledger reads back.

use crate::fleet::message::JobMessage;
use crate::time::rfc3339_ms;
use crate::vocab::{ErrorClass, JobEvent, JobState, RunState};
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;
use std::time::SystemTime;

use super::HISTORY_DAYS;

/// One DynamoDB item.
pub(super) type Item = HashMap<String, AttributeValue>;

/// A run as recorded.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RunRecord {
    /// Run id.
    pub run_id: String,
    /// `planning`, `planned`, `failed` (planning stopped), or `events` (push events of a day).
    pub state: RunState,
    /// When planning started.
    pub started_at: String,
    /// When planning ended.
    pub planned_at: Option<String>,
    /// When planning last made progress (jobs sent).
    pub updated_at: Option<String>,
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

/// One job of one run, as it stands.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FleetJob {
    /// Run id.
    pub run_id: String,
    /// Job id.
    pub job_id: String,
    /// State (see the module docs).
    pub state: JobState,
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
    /// Referrers copied by the attempt that finished it.
    pub referrers: u64,
    /// Duration of the attempt that finished it, in milliseconds.
    pub duration_ms: u64,
    /// Error class of the last failure.
    pub error_class: Option<ErrorClass>,
    /// Reason of the last failure.
    pub error: Option<String>,
    /// When it was queued.
    pub queued_at: String,
    /// Last change.
    pub updated_at: String,
}

/// One entry of a job's history.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HistoryEntry {
    /// When.
    pub at: String,
    /// The run.
    pub run_id: String,
    /// What happened (`None`: a word this version does not know).
    pub event: Option<JobEvent>,
    /// The attempt number it belongs to.
    pub attempt: u64,
    /// The worker (or `operator`).
    pub worker: Option<String>,
    /// Bytes streamed.
    pub bytes: u64,
    /// Milliseconds.
    pub duration_ms: u64,
    /// Error class.
    pub error_class: Option<ErrorClass>,
    /// Reason.
    pub error: Option<String>,
}

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(super) fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) fn get_s(item: &Item, key: &str) -> Option<String> {
    item.get(key).and_then(|v| v.as_s().ok()).cloned()
}

pub(super) fn get_n(item: &Item, key: &str) -> u64 {
    item.get(key)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A vocabulary word stored under `key`; a missing or unknown one (written by a newer version)
/// reads as `None` and is logged.
pub(super) fn parse_word<T: std::str::FromStr<Err = crate::vocab::UnknownWord>>(
    item: &Item,
    key: &str,
) -> Option<T> {
    let text = get_s(item, key)?;
    match text.parse() {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(attribute = key, error = %e, "ledger item holds an unknown word");
            None
        }
    }
}

pub(super) fn expires_at() -> AttributeValue {
    n(crate::time::unix_seconds(SystemTime::now()) + HISTORY_DAYS * 86_400)
}

pub(super) fn now() -> String {
    rfc3339_ms(SystemTime::now())
}

/// Partitions a run's job items are spread over (their `pk` is `RUN#<run>#<shard>`). Changing
/// it would hide the jobs of earlier runs from `status`.
pub const JOB_SHARDS: u32 = 16;

/// The partition of a run's job items that holds `job_id`: a stable hash of the id (FNV-1a),
/// so a run's writes spread evenly over [`JOB_SHARDS`] partitions.
pub(super) fn job_shard(job_id: &str) -> u32 {
    let hash = job_id.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    hash % JOB_SHARDS
}

/// The partition key of shard `shard` of run `run_id`'s jobs.
pub(super) fn job_partition(run_id: &str, shard: u32) -> String {
    format!("RUN#{run_id}#{shard:x}")
}

pub(super) fn job_key(run_id: &str, job_id: &str) -> Item {
    HashMap::from([
        (
            "pk".to_string(),
            s(job_partition(run_id, job_shard(job_id))),
        ),
        ("sk".to_string(), s(format!("JOB#{job_id}"))),
    ])
}

pub(super) fn run_key(run_id: &str) -> Item {
    HashMap::from([
        ("pk".to_string(), s(format!("RUN#{run_id}"))),
        ("sk".to_string(), s("#RUN")),
    ])
}

pub(super) fn is_conditional<E: ProvideErrorMetadata>(
    e: &aws_sdk_dynamodb::error::SdkError<E>,
) -> bool {
    e.as_service_error().and_then(|s| s.code()) == Some("ConditionalCheckFailedException")
}

/// The attributes a job item takes from its message.
pub(super) fn job_attributes(m: &JobMessage) -> Vec<(&'static str, AttributeValue)> {
    vec![
        ("kind", s("job")),
        ("run_id", s(&m.run_id)),
        ("job_id", s(&m.job_id)),
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

/// Longest reason kept in a history entry (a job item holds its whole history and must stay
/// far below DynamoDB's 400 KB item limit).
const HISTORY_REASON_CHARS: usize = 1024;

/// One history entry as the map appended to a job item's `history` list.
pub(super) fn history_value(e: &HistoryEntry) -> AttributeValue {
    let mut m = HashMap::from([
        ("at".to_string(), s(&e.at)),
        ("run_id".to_string(), s(&e.run_id)),
        ("attempt".to_string(), n(e.attempt)),
        ("bytes".to_string(), n(e.bytes)),
        ("duration_ms".to_string(), n(e.duration_ms)),
    ]);
    if let Some(event) = e.event {
        m.insert("event".to_string(), s(event.as_str()));
    }
    if let Some(w) = &e.worker {
        m.insert("worker".to_string(), s(w));
    }
    if let Some(c) = e.error_class {
        m.insert("error_class".to_string(), s(c.as_str()));
    }
    if let Some(reason) = &e.error {
        m.insert(
            "error".to_string(),
            s(reason
                .chars()
                .take(HISTORY_REASON_CHARS)
                .collect::<String>()),
        );
    }
    AttributeValue::M(m)
}

/// A job item's history entries, oldest first.
pub(super) fn history_entries(i: &Item) -> Vec<HistoryEntry> {
    let Some(AttributeValue::L(list)) = i.get("history") else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|v| v.as_m().ok())
        .map(|e| HistoryEntry {
            at: get_s(e, "at").unwrap_or_default(),
            run_id: get_s(e, "run_id").unwrap_or_default(),
            event: parse_word(e, "event"),
            attempt: get_n(e, "attempt"),
            worker: get_s(e, "worker"),
            bytes: get_n(e, "bytes"),
            duration_ms: get_n(e, "duration_ms"),
            error_class: parse_word(e, "error_class"),
            error: get_s(e, "error"),
        })
        .collect()
}

pub(super) fn job_item(i: &Item) -> FleetJob {
    FleetJob {
        run_id: get_s(i, "run_id").unwrap_or_default(),
        job_id: get_s(i, "job_id").unwrap_or_default(),
        state: parse_word(i, "state").unwrap_or(JobState::Queued),
        attempts: get_n(i, "attempts"),
        replays: get_n(i, "replays"),
        worker: get_s(i, "worker"),
        source: get_s(i, "source").unwrap_or_default(),
        destination: get_s(i, "destination").unwrap_or_default(),
        digest: get_s(i, "digest").unwrap_or_default(),
        bytes: get_n(i, "bytes"),
        referrers: get_n(i, "referrers"),
        duration_ms: get_n(i, "duration_ms"),
        error_class: parse_word(i, "error_class"),
        error: get_s(i, "error"),
        queued_at: get_s(i, "queued_at").unwrap_or_default(),
        updated_at: get_s(i, "updated_at").unwrap_or_default(),
    }
}
