//! Ledger items ↔ records: attribute values, keys, and the records the ledger reads back.

use crate::fleet::message::JobMessage;
use crate::sync::rfc3339_ms;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use super::HISTORY_DAYS;

/// One DynamoDB item.
pub(super) type Item = HashMap<String, AttributeValue>;

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

pub(super) fn expires_at() -> AttributeValue {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    n(now + HISTORY_DAYS * 86_400)
}

pub(super) fn now() -> String {
    rfc3339_ms(SystemTime::now())
}

pub(super) fn job_key(run_id: &str, job_id: &str) -> Item {
    HashMap::from([
        ("pk".to_string(), s(format!("RUN#{run_id}"))),
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

/// A history event item (`JOB#<job>` / `<at>#<random>`) read back.
pub(super) fn job_event(i: &Item) -> JobEvent {
    JobEvent {
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
    }
}

pub(super) fn job_item(i: &Item) -> JobItem {
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
