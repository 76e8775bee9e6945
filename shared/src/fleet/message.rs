//! What arrives on the jobs queue: ecr-sync's own job messages (small versioned JSON), or raw
//! ECR push events that EventBridge delivers to the same queue (seed 001).
//!
//! A job message, version 1:
//! ```json
//! {"v": 1, "job_id": "…32 hex…", "run_id": "…",
//!  "source": {"registry": "111122223333.dkr.ecr.us-east-1.amazonaws.com",
//!             "repository": "team/app", "tag": "v1.2", "digest": "sha256:…"},
//!  "destination": {"registry": "222233334444.dkr.ecr.eu-west-1.amazonaws.com",
//!                  "repository": "app"},
//!  "immutable_tags": true, "probe": false}
//! ```
//! `probe` says the destination repository already held tags when planned, so blobs are checked
//! before they are sent ([`PlannedJob::dst_may_hold_blobs`]). A push event's job also carries
//! `"event_id"` (EventBridge's), which its job id includes.
//!
//! Compatibility: `probe` (default `false`) and `event_id` (absent for planned jobs) are
//! optional; every other field is required. A message that does not parse goes to the
//! dead-letter queue with the reason instead of being half-understood — except one a newer
//! ecr-sync wrote (a higher `v`, or a field this build does not know), which is handed back to
//! the queue after a delay for a newer worker: in a rolling upgrade, old workers never
//! dead-letter new messages (the queue's `maxReceiveCount` still ends one no worker reads).
//! A newer writer adds only optional fields within a version; anything an old reader must not
//! ignore raises `v`.

use crate::digest::Digest;
use crate::job::{CopyJob, Destination, PlannedJob};
use serde::{Deserialize, Serialize};

/// The message format version this build writes and reads.
pub const MESSAGE_VERSION: u32 = 1;

/// The source image of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceRef {
    /// Registry host.
    pub registry: String,
    /// Repository path.
    pub repository: String,
    /// Tag.
    pub tag: String,
    /// The digest the tag pointed at when planned; the worker copies exactly this.
    pub digest: String,
}

/// Where a job's image goes (the tag is the source's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationRef {
    /// Registry host.
    pub registry: String,
    /// Repository path.
    pub repository: String,
}

/// One copy job on the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobMessage {
    /// Format version ([`MESSAGE_VERSION`]).
    pub v: u32,
    /// [`CopyJob::id`] of the job.
    pub job_id: String,
    /// The run that planned it (`events-YYYY-MM-DD` for push events).
    pub run_id: String,
    /// The source image.
    pub source: SourceRef,
    /// The destination repository.
    pub destination: DestinationRef,
    /// Whether the destination repository's tags are immutable.
    pub immutable_tags: bool,
    /// Whether the destination repository held tags when planned (check blobs before sending).
    /// Spelled `probe` on the wire.
    #[serde(default, rename = "probe")]
    pub dst_may_hold_blobs: bool,
    /// The EventBridge event a push-event job came from (absent for planned jobs); part of
    /// its job id ([`CopyJob::event_job_id`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
}

impl JobMessage {
    /// The message for `planned` (whose source digest is set) in `run_id`.
    pub fn new(run_id: &str, planned: &PlannedJob) -> JobMessage {
        let job = &planned.job;
        JobMessage {
            v: MESSAGE_VERSION,
            job_id: job.id(),
            run_id: run_id.to_string(),
            source: SourceRef {
                registry: job.source_registry.clone(),
                repository: job.source_repo.clone(),
                tag: job.tag.clone(),
                digest: job
                    .source_digest
                    .as_ref()
                    .map(|d| d.to_string())
                    .unwrap_or_default(),
            },
            destination: DestinationRef {
                registry: job.destination_registry.clone(),
                repository: job.destination_repo.clone(),
            },
            immutable_tags: planned.immutable_tags,
            dst_may_hold_blobs: planned.dst_may_hold_blobs,
            event_id: None,
        }
    }

    /// The message for a job push event `event_id` asks for, in `run_id`.
    pub fn for_event(run_id: &str, planned: &PlannedJob, event_id: &str) -> JobMessage {
        let mut m = JobMessage::new(run_id, planned);
        m.job_id = planned.job.event_job_id(event_id);
        m.event_id = Some(event_id.to_string());
        m
    }

    /// The job id this message's contents give.
    pub fn expected_id(&self) -> String {
        match &self.event_id {
            Some(event) => self.job().event_job_id(event),
            None => self.job().id(),
        }
    }

    /// The job this message describes.
    pub fn job(&self) -> CopyJob {
        CopyJob {
            source_registry: self.source.registry.clone(),
            source_repo: self.source.repository.clone(),
            tag: self.source.tag.clone(),
            source_digest: Digest::parse(&self.source.digest).ok(),
            destination_registry: self.destination.registry.clone(),
            destination_repo: self.destination.repository.clone(),
        }
    }

    /// The job to run. The destination is asked again (the message may be old); a redelivered
    /// job may have left blobs behind, so they are checked before they are sent.
    pub fn planned(&self, redelivered: bool) -> PlannedJob {
        PlannedJob {
            job: self.job(),
            immutable_tags: self.immutable_tags,
            dst_may_hold_blobs: self.dst_may_hold_blobs || redelivered,
            destination: Destination::Unchecked,
            manifest: None,
            confirm_source_tag: true,
            source_schema_tags: None,
        }
    }

    /// The message body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain data serializes")
    }
}

/// An ECR "Image Action" event as EventBridge delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushEvent {
    /// EventBridge's event id (a redelivery repeats it; a new push has a new one).
    pub id: String,
    /// The account that owns the source registry.
    pub account: String,
    /// Its region.
    pub region: String,
    /// `PUSH`, `DELETE`, …
    pub action: String,
    /// `SUCCESS` or `FAILURE`.
    pub result: String,
    /// The source repository.
    pub repository: String,
    /// The pushed tag (absent for a push by digest).
    pub tag: Option<String>,
    /// The pushed image's digest.
    pub digest: String,
    /// The event's time (RFC 3339).
    pub time: String,
}

impl PushEvent {
    /// The source registry host the event is about, in its usual form (for messages; match
    /// config hosts with [`PushEvent::is_from`], which knows the other forms).
    pub fn registry(&self) -> String {
        let partition = if self.region.starts_with("cn-") {
            "amazonaws.com.cn"
        } else {
            "amazonaws.com"
        };
        format!("{}.dkr.ecr.{}.{partition}", self.account, self.region)
    }

    /// Whether `host` is this event's registry: an ECR host (any form: standard, FIPS, China,
    /// dual-stack) of the event's account and region.
    pub fn is_from(&self, host: &str) -> bool {
        crate::config::is_ecr_host(host)
            .is_some_and(|h| h.account == self.account && h.region == self.region)
    }

    /// Why this event is not a copy job (`None` when it is: a successful push of a tag).
    pub fn not_a_push(&self) -> Option<String> {
        if self.action != "PUSH" {
            return Some(format!("action-type is {:?}, not PUSH", self.action));
        }
        if self.result != "SUCCESS" {
            return Some(format!("result is {:?}, not SUCCESS", self.result));
        }
        if self.tag.is_none() {
            return Some("the image was pushed by digest, without a tag".to_string());
        }
        None
    }
}

/// A message from the jobs queue, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A planned (or replayed) job.
    Job(JobMessage),
    /// An ECR push event.
    Push(PushEvent),
    /// A job message written by a newer ecr-sync (a higher version, or a field this worker
    /// does not know): handed back for a newer worker during a rolling upgrade, never
    /// dead-lettered by an older one. Says why.
    Newer(String),
}

/// A job message with every optional field set: its JSON holds every field this build knows.
fn every_field() -> serde_json::Value {
    let full = JobMessage {
        v: MESSAGE_VERSION,
        job_id: String::new(),
        run_id: String::new(),
        source: SourceRef {
            registry: String::new(),
            repository: String::new(),
            tag: String::new(),
            digest: String::new(),
        },
        destination: DestinationRef {
            registry: String::new(),
            repository: String::new(),
        },
        immutable_tags: false,
        dst_may_hold_blobs: false,
        event_id: Some(String::new()),
    };
    serde_json::to_value(full).expect("plain data serializes")
}

/// Fields of a job message this build does not know, as `path` names (nested objects too).
fn unknown_fields(obj: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    fn walk(
        got: &serde_json::Map<String, serde_json::Value>,
        known: &serde_json::Value,
        prefix: &str,
        out: &mut Vec<String>,
    ) {
        for (key, value) in got {
            match known.get(key) {
                None => out.push(format!("{prefix}{key}")),
                Some(inner) if inner.is_object() => {
                    if let Some(value) = value.as_object() {
                        walk(value, inner, &format!("{prefix}{key}."), out);
                    }
                }
                Some(_) => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(obj, &every_field(), "", &mut out);
    out
}

impl Incoming {
    /// Parses a message body. The error says what is wrong with it, for the dead-letter queue.
    pub fn parse(body: &str) -> Result<Incoming, String> {
        let value: serde_json::Value =
            serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
        let Some(obj) = value.as_object() else {
            return Err("not a JSON object".to_string());
        };
        if let Some(v) = obj.get("v") {
            match v.as_u64() {
                Some(n) if n > MESSAGE_VERSION as u64 => {
                    return Ok(Incoming::Newer(format!(
                        "message version {n} is newer than this worker's v{MESSAGE_VERSION}"
                    )))
                }
                Some(n) if n == MESSAGE_VERSION as u64 => {}
                _ => {
                    return Err(format!(
                        "unsupported message version {v} (this worker reads v{MESSAGE_VERSION})"
                    ))
                }
            }
            let unknown = unknown_fields(obj);
            if !unknown.is_empty() {
                return Ok(Incoming::Newer(format!(
                    "fields this worker does not know ({}): written by a newer ecr-sync",
                    unknown.join(", ")
                )));
            }
            let job: JobMessage =
                serde_json::from_value(value).map_err(|e| format!("job message: {e}"))?;
            check_job(&job)?;
            return Ok(Incoming::Job(job));
        }
        match obj.get("detail-type").and_then(|d| d.as_str()) {
            Some("ECR Image Action") => parse_event(obj).map(Incoming::Push),
            Some(other) => Err(format!(
                "detail-type {other:?} is not an ECR Image Action event"
            )),
            None => Err(
                "neither an ecr-sync job (no \"v\") nor an EventBridge event (no \"detail-type\")"
                    .to_string(),
            ),
        }
    }
}

fn check_job(job: &JobMessage) -> Result<(), String> {
    Digest::parse(&job.source.digest).map_err(|e| format!("job message: source.digest: {e}"))?;
    for (field, value) in [
        ("job_id", &job.job_id),
        ("run_id", &job.run_id),
        ("source.registry", &job.source.registry),
        ("source.repository", &job.source.repository),
        ("source.tag", &job.source.tag),
        ("destination.registry", &job.destination.registry),
        ("destination.repository", &job.destination.repository),
    ] {
        if value.is_empty() {
            return Err(format!("job message: {field} is empty"));
        }
    }
    let expected = job.expected_id();
    if expected != job.job_id {
        return Err(format!(
            "job message: job_id {} does not match its source and destination (expected {expected})",
            job.job_id,
        ));
    }
    Ok(())
}

fn parse_event(obj: &serde_json::Map<String, serde_json::Value>) -> Result<PushEvent, String> {
    let text = |o: &serde_json::Map<String, serde_json::Value>, path: &str, key: &str| {
        o.get(key)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("ECR event: {path}{key} is missing or not a string"))
    };
    let detail = obj
        .get("detail")
        .and_then(|d| d.as_object())
        .ok_or("ECR event: detail is missing or not an object")?;
    Ok(PushEvent {
        id: text(obj, "", "id")?,
        account: text(obj, "", "account")?,
        region: text(obj, "", "region")?,
        time: text(obj, "", "time").unwrap_or_default(),
        action: text(detail, "detail.", "action-type")?,
        result: text(detail, "detail.", "result")?,
        repository: text(detail, "detail.", "repository-name")?,
        tag: text(detail, "detail.", "image-tag")
            .ok()
            .filter(|t| !t.is_empty()),
        digest: text(detail, "detail.", "image-digest")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> CopyJob {
        CopyJob {
            source_registry: "src.io".into(),
            source_repo: "team/app".into(),
            tag: "v1".into(),
            source_digest: Some(Digest::of(b"m")),
            destination_registry: "dst.io".into(),
            destination_repo: "app".into(),
        }
    }

    fn message(run_id: &str) -> JobMessage {
        let planned = PlannedJob {
            job: job(),
            immutable_tags: true,
            dst_may_hold_blobs: false,
            destination: Destination::Absent,
            manifest: None,
            confirm_source_tag: false,
            source_schema_tags: None,
        };
        JobMessage::new(run_id, &planned)
    }

    #[test]
    fn job_messages_round_trip_and_stay_small() {
        let m = message("run-1");
        let body = m.to_json();
        assert!(body.len() < 600, "{body}");
        assert_eq!(Incoming::parse(&body).unwrap(), Incoming::Job(m.clone()));
        assert_eq!(m.job(), job());
    }

    #[test]
    fn bad_job_messages_say_what_is_wrong() {
        let good = serde_json::to_value(message("r")).unwrap();
        let cases = [
            ("v", serde_json::json!(0), "unsupported message version 0"),
            ("v", serde_json::json!("1"), "unsupported message version"),
            ("job_id", serde_json::json!("abc"), "does not match"),
            ("run_id", serde_json::json!(""), "run_id is empty"),
        ];
        for (key, value, expected) in cases {
            let mut v = good.clone();
            v[key] = value;
            let err = Incoming::parse(&v.to_string()).unwrap_err();
            assert!(err.contains(expected), "{key}: {err}");
        }
        let mut v = good.clone();
        v["source"]["digest"] = serde_json::json!("sha256:xyz");
        assert!(Incoming::parse(&v.to_string())
            .unwrap_err()
            .contains("source.digest"));
        assert!(Incoming::parse("hello").unwrap_err().contains("not JSON"));
        // Written by a newer ecr-sync: handed back, not an error.
        let mut newer = good.clone();
        newer["v"] = serde_json::json!(2);
        let Ok(Incoming::Newer(why)) = Incoming::parse(&newer.to_string()) else {
            panic!("a v2 message is not for a newer worker")
        };
        assert!(why.contains("version 2"), "{why}");
        let mut extra = good.clone();
        extra["priority"] = serde_json::json!(1);
        extra["source"]["platform"] = serde_json::json!("linux/arm64");
        let Ok(Incoming::Newer(why)) = Incoming::parse(&extra.to_string()) else {
            panic!("unknown fields are not for a newer worker")
        };
        assert!(why.contains("priority, source.platform"), "{why}");
        assert!(Incoming::parse("{}").unwrap_err().contains("neither"));
    }

    #[test]
    fn ecr_push_events() {
        let body = r#"{"version":"0","id":"1","detail-type":"ECR Image Action","source":"aws.ecr",
            "account":"111122223333","time":"2026-11-22T10:00:00Z","region":"us-east-1","resources":[],
            "detail":{"result":"SUCCESS","repository-name":"team/app","image-digest":"sha256:aa",
            "action-type":"PUSH","image-tag":"v1"}}"#;
        let Incoming::Push(e) = Incoming::parse(body).unwrap() else {
            panic!("not an event")
        };
        assert_eq!(e.registry(), "111122223333.dkr.ecr.us-east-1.amazonaws.com");
        assert_eq!(e.tag.as_deref(), Some("v1"));
        assert_eq!(e.not_a_push(), None);
        let delete = body.replace("\"PUSH\"", "\"DELETE\"");
        let Incoming::Push(e) = Incoming::parse(&delete).unwrap() else {
            panic!("not an event")
        };
        assert!(e.not_a_push().unwrap().contains("DELETE"));
        let other = body.replace("ECR Image Action", "ECR Scan");
        assert!(Incoming::parse(&other).unwrap_err().contains("ECR Scan"));
        let broken = body.replace("\"repository-name\"", "\"repo\"");
        assert!(Incoming::parse(&broken)
            .unwrap_err()
            .contains("detail.repository-name"));
    }
}
