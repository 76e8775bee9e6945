//! An SQS event source mapping, as Lambda runs one in front of a function: it long-polls the
//! queue, invokes the function (through [`LambdaApi`]) with each batch as an SQS event — the
//! records exactly as Lambda builds them — and deletes the messages the function did not report
//! in `batchItemFailures` (the mapping's `ReportBatchItemFailures` response type).
//!
//! As Lambda, it deletes nothing when the invocation fails as a whole: an error, a timeout, or a
//! response that reports an id not in the batch (Lambda then counts every record failed); those
//! messages come back after the queue's visibility timeout. Unlike Lambda it runs one poller and
//! one invocation at a time (Lambda starts five pollers and scales them with the queue), which
//! keeps a test's order readable; a batching window of 0 s (the Terraform module's) is the only
//! one it knows: a batch is what one receive brings.
//!
//! [`EventSourceMapping::poll_once`] is one turn, for a test that plays the mapping step by step;
//! [`EventSourceMapping::start`] runs turns in a task until the mapping is dropped.

use crate::lambda_api::{LambdaApi, Outcome};
use anyhow::Context;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName, QueueAttributeName,
};
use base64::Engine;
use serde_json::{json, Map, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The long-poll wait of the mapping's receives: Lambda's pollers wait 20 s, SQS's longest.
pub const POLL_WAIT: Duration = Duration::from_secs(20);

/// Most messages per batch: one receive brings at most ten, and with a batching window of 0 s
/// Lambda invokes with what one receive brought.
pub const MAX_BATCH_SIZE: i32 = 10;

/// How long past the function's timeout an invocation's answer is awaited before it counts as
/// timed out: the Runtime API starts the deadline when the function takes the invocation, which
/// after a cold start is after its init (Lambda allows init 10 s), and a loaded test machine is
/// slow to start a process.
pub const ANSWER_GRACE: Duration = Duration::from_secs(30);

/// The pause after a turn that failed (SQS refused a receive or a delete), so a queue that is
/// gone is not hammered.
const FAILED_TURN_PAUSE: Duration = Duration::from_secs(1);

/// One message of a batch, as the function got it.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The SQS message id (the record's `messageId`, a `batchItemFailures` item's
    /// `itemIdentifier`).
    pub message_id: String,
    /// The message body.
    pub body: String,
}

/// One turn of the mapping: the batch received, how the invocation ended, what was deleted.
#[derive(Debug, Clone)]
pub struct Turn {
    /// The invocation's request id at the Runtime API.
    pub request_id: String,
    /// The batch, in the order of the event's records.
    pub messages: Vec<Delivered>,
    /// When the receive returned the batch (just before the invocation).
    pub received_at: Instant,
    /// When the invocation ended (answered, or given up on as timed out).
    pub answered_at: Instant,
    /// How the invocation ended; a function that never answered is [`Outcome::TimedOut`].
    pub outcome: Outcome,
    /// The message ids the response reported in `batchItemFailures`.
    pub reported: Vec<String>,
    /// Why Lambda counts the whole batch failed (an error, a timeout, a response it cannot
    /// use), and deleted nothing; `None` when it deleted every message not reported.
    pub batch_failed: Option<String>,
    /// The ids of the messages deleted.
    pub deleted: Vec<String>,
}

impl Turn {
    /// The message id of the batch's message with `body`.
    pub fn id_of(&self, body: &str) -> Option<&str> {
        self.messages
            .iter()
            .find(|m| m.body == body)
            .map(|m| m.message_id.as_str())
    }
}

/// What the mapping has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Invocations made.
    pub invocations: u64,
    /// Records sent in them.
    pub records: u64,
    /// Message ids reported in `batchItemFailures`.
    pub reported: u64,
    /// Invocations that failed as a whole (error, timeout, unusable response).
    pub batches_failed: u64,
    /// Messages deleted.
    pub deleted: u64,
    /// Turns that failed on SQS (a receive or a delete refused).
    pub sqs_errors: u64,
}

/// The ARN of the queue at `url`, the name an event source mapping gives its queue
/// (`eventSourceARN`).
pub async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> anyhow::Result<String> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .with_context(|| format!("cannot read the attributes of queue {url}"))?;
    out.attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .with_context(|| format!("queue {url} has no QueueArn attribute"))
}

/// The mapping's settings and what it has done, shared with its task.
struct Mapping {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    queue_arn: String,
    /// The region the records name (`awsRegion`), from the queue's ARN.
    region: String,
    api: Arc<LambdaApi>,
    batch_size: i32,
    function_timeout: Duration,
    counts: Mutex<Counts>,
    turns: Mutex<Vec<Turn>>,
    last_error: Mutex<Option<String>>,
}

/// An event source mapping from an SQS queue to the function behind a [`LambdaApi`]; its task
/// (if started) stops when it is dropped.
pub struct EventSourceMapping {
    mapping: Arc<Mapping>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for EventSourceMapping {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl EventSourceMapping {
    /// A mapping from the queue at `queue_url` (whose ARN is `queue_arn`) to the function
    /// behind `api`, `batch_size` messages at most per invocation (1 to [`MAX_BATCH_SIZE`]),
    /// each invocation allowed `function_timeout`. It does nothing until
    /// [`EventSourceMapping::poll_once`] is called; [`EventSourceMapping::start`] runs it.
    pub fn new(
        sqs: aws_sdk_sqs::Client,
        queue_url: &str,
        queue_arn: &str,
        api: Arc<LambdaApi>,
        batch_size: i32,
        function_timeout: Duration,
    ) -> EventSourceMapping {
        assert!(
            (1..=MAX_BATCH_SIZE).contains(&batch_size),
            "batch size {batch_size}: give 1 to {MAX_BATCH_SIZE} (larger batches need a batching window, which this mapping does not have)"
        );
        // arn:aws:sqs:REGION:ACCOUNT:NAME
        let region = queue_arn.split(':').nth(3).unwrap_or_default().to_string();
        EventSourceMapping {
            mapping: Arc::new(Mapping {
                sqs,
                queue_url: queue_url.to_string(),
                queue_arn: queue_arn.to_string(),
                region,
                api,
                batch_size,
                function_timeout,
                counts: Mutex::default(),
                turns: Mutex::default(),
                last_error: Mutex::default(),
            }),
            task: None,
        }
    }

    /// [`EventSourceMapping::new`], running: turn after turn, each long-polling
    /// [`POLL_WAIT`], until the mapping is dropped. A turn that fails on SQS is counted
    /// ([`Counts::sqs_errors`], [`EventSourceMapping::last_error`]) and the next follows
    /// after a pause.
    pub fn start(
        sqs: aws_sdk_sqs::Client,
        queue_url: &str,
        queue_arn: &str,
        api: Arc<LambdaApi>,
        batch_size: i32,
        function_timeout: Duration,
    ) -> EventSourceMapping {
        let mut esm =
            EventSourceMapping::new(sqs, queue_url, queue_arn, api, batch_size, function_timeout);
        let mapping = esm.mapping.clone();
        esm.task = Some(tokio::spawn(async move {
            loop {
                if let Err(e) = mapping.turn(POLL_WAIT).await {
                    mapping.counts.lock().unwrap().sqs_errors += 1;
                    *mapping.last_error.lock().unwrap() = Some(format!("{e:#}"));
                    tokio::time::sleep(FAILED_TURN_PAUSE).await;
                }
            }
        }));
        esm
    }

    /// One turn: receives up to the batch size (long-polling `wait`, in whole seconds, at most
    /// [`POLL_WAIT`]), invokes the function with the batch and waits for the outcome, then
    /// deletes what Lambda would delete. `None` when no message came within `wait`. Meant for a
    /// mapping that was not started: beside a running one, the two would share the queue's
    /// messages.
    pub async fn poll_once(&self, wait: Duration) -> anyhow::Result<Option<Turn>> {
        self.mapping.turn(wait).await
    }

    /// What the mapping has done so far.
    pub fn counts(&self) -> Counts {
        *self.mapping.counts.lock().unwrap()
    }

    /// The turns that invoked the function since the last call, oldest first (the mapping
    /// keeps every turn until it is taken).
    pub fn take_turns(&self) -> Vec<Turn> {
        std::mem::take(&mut *self.mapping.turns.lock().unwrap())
    }

    /// Why the last failed turn failed, if one did.
    pub fn last_error(&self) -> Option<String> {
        self.mapping.last_error.lock().unwrap().clone()
    }
}

impl Mapping {
    async fn turn(&self, wait: Duration) -> anyhow::Result<Option<Turn>> {
        let got = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(self.batch_size)
            .wait_time_seconds(wait.as_secs().min(POLL_WAIT.as_secs()) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .with_context(|| format!("ReceiveMessage on {} failed", self.queue_url))?;
        let received_at = Instant::now();
        let messages = got.messages();
        if messages.is_empty() {
            return Ok(None);
        }
        let records: Vec<Value> = messages.iter().map(|m| self.record(m)).collect();
        let delivered: Vec<Delivered> = messages
            .iter()
            .map(|m| Delivered {
                message_id: m.message_id().unwrap_or_default().to_string(),
                body: m.body().unwrap_or_default().to_string(),
            })
            .collect();
        let request_id = self
            .api
            .invoke(json!({ "Records": records }), self.function_timeout);
        {
            let mut counts = self.counts.lock().unwrap();
            counts.invocations += 1;
            counts.records += records.len() as u64;
        }
        let outcome = self
            .api
            .outcome(&request_id, self.function_timeout + ANSWER_GRACE)
            .await
            .unwrap_or(Outcome::TimedOut);
        let answered_at = Instant::now();
        let ids: Vec<&str> = delivered.iter().map(|m| m.message_id.as_str()).collect();
        let (reported, batch_failed) = match judge(&outcome, &ids) {
            Ok(reported) => (reported, None),
            Err((reported, why)) => (reported, Some(why)),
        };
        let to_delete: Vec<&Message> = match batch_failed {
            Some(_) => Vec::new(),
            None => messages
                .iter()
                .filter(|m| !reported.iter().any(|r| Some(r.as_str()) == m.message_id()))
                .collect(),
        };
        let deleted = self.delete(&to_delete).await;
        {
            let mut counts = self.counts.lock().unwrap();
            counts.reported += reported.len() as u64;
            counts.batches_failed += u64::from(batch_failed.is_some());
            counts.deleted += deleted.as_ref().map_or(0, |d| d.len() as u64);
        }
        let turn = Turn {
            request_id,
            messages: delivered,
            received_at,
            answered_at,
            outcome,
            reported,
            batch_failed,
            deleted: deleted?,
        };
        self.turns.lock().unwrap().push(turn.clone());
        Ok(Some(turn))
    }

    /// An SQS event record, as Lambda builds it from a received message.
    fn record(&self, m: &Message) -> Value {
        let attributes: Map<String, Value> = m
            .attributes()
            .map(|attrs| {
                attrs
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), json!(v)))
                    .collect()
            })
            .unwrap_or_default();
        let b64 = |b: &aws_sdk_sqs::primitives::Blob| {
            base64::engine::general_purpose::STANDARD.encode(b.as_ref())
        };
        let message_attributes: Map<String, Value> = m
            .message_attributes()
            .map(|attrs| {
                attrs
                    .iter()
                    .map(|(name, v)| {
                        let mut value = Map::new();
                        if let Some(s) = v.string_value() {
                            value.insert("stringValue".into(), json!(s));
                        }
                        if let Some(b) = v.binary_value() {
                            value.insert("binaryValue".into(), json!(b64(b)));
                        }
                        value.insert("stringListValues".into(), json!(v.string_list_values()));
                        let binaries: Vec<String> =
                            v.binary_list_values().iter().map(b64).collect();
                        value.insert("binaryListValues".into(), json!(binaries));
                        value.insert("dataType".into(), json!(v.data_type()));
                        (name.clone(), Value::Object(value))
                    })
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "messageId": m.message_id(),
            "receiptHandle": m.receipt_handle(),
            "body": m.body(),
            "attributes": attributes,
            "messageAttributes": message_attributes,
            "md5OfBody": m.md5_of_body(),
            "md5OfMessageAttributes": m.md5_of_message_attributes(),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.queue_arn,
            "awsRegion": self.region,
        })
    }

    /// Deletes `messages` (`DeleteMessageBatch`, ten at a time); returns their ids. An entry
    /// SQS refuses fails the turn, naming it.
    async fn delete(&self, messages: &[&Message]) -> anyhow::Result<Vec<String>> {
        let mut deleted = Vec::new();
        for chunk in messages.chunks(MAX_BATCH_SIZE as usize) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(m.receipt_handle().unwrap_or_default())
                        .build()
                        .expect("id and receipt handle are set")
                })
                .collect();
            let out = self
                .sqs
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .with_context(|| format!("DeleteMessageBatch on {} failed", self.queue_url))?;
            if let Some(f) = out.failed().first() {
                let m = chunk[f.id().parse::<usize>().unwrap_or(0)];
                anyhow::bail!(
                    "DeleteMessageBatch on {} refused message {}: {} {}",
                    self.queue_url,
                    m.message_id().unwrap_or_default(),
                    f.code(),
                    f.message().unwrap_or_default()
                );
            }
            deleted.extend(
                chunk
                    .iter()
                    .map(|m| m.message_id().unwrap_or_default().to_string()),
            );
        }
        Ok(deleted)
    }
}

/// Lambda's reading of an invocation's `outcome` for a batch of message ids `ids`: the ids
/// reported in `batchItemFailures` (none when the list is missing, null or empty), or — with
/// what was reported — why the whole batch counts as failed: the invocation failed or timed
/// out, or the response reports an item without an id or with one not in the batch.
fn judge(outcome: &Outcome, ids: &[&str]) -> Result<Vec<String>, (Vec<String>, String)> {
    let response = match outcome {
        Outcome::Response(r) => r,
        Outcome::Error(e) => return Err((Vec::new(), format!("the function failed: {e}"))),
        Outcome::TimedOut => return Err((Vec::new(), "the invocation timed out".into())),
    };
    let items = match response.get("batchItemFailures") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err((
                Vec::new(),
                format!("batchItemFailures is not a list: {other}"),
            ))
        }
    };
    let reported: Vec<String> = items
        .iter()
        .filter_map(|i| i["itemIdentifier"].as_str())
        .map(str::to_string)
        .collect();
    if reported.len() != items.len() {
        return Err((
            reported,
            format!("a batchItemFailures item has no itemIdentifier: {response}"),
        ));
    }
    if let Some(stranger) = reported
        .iter()
        .find(|r| r.is_empty() || !ids.contains(&r.as_str()))
    {
        let why = format!("batchItemFailures reports {stranger:?}, not a message of the batch");
        return Err((reported, why));
    }
    Ok(reported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_without_failures_deletes_the_whole_batch() {
        let ids = ["a", "b"];
        for response in [
            json!({}),
            json!({"batchItemFailures": null}),
            json!({"batchItemFailures": []}),
        ] {
            assert_eq!(judge(&Outcome::Response(response), &ids), Ok(Vec::new()));
        }
    }

    #[test]
    fn reported_messages_stay_and_the_rest_are_deleted() {
        let response = json!({"batchItemFailures": [{"itemIdentifier": "b"}]});
        assert_eq!(
            judge(&Outcome::Response(response), &["a", "b"]),
            Ok(vec!["b".to_string()])
        );
    }

    #[test]
    fn an_error_a_timeout_or_an_unknown_id_fails_the_whole_batch() {
        let ids = ["a"];
        let error = Outcome::Error(json!({"errorType": "Boom"}));
        assert!(judge(&error, &ids).unwrap_err().1.contains("Boom"));
        assert!(judge(&Outcome::TimedOut, &ids).is_err());
        for items in [
            json!([{"itemIdentifier": "z"}]),
            json!([{"itemIdentifier": ""}]),
            json!([{}]),
        ] {
            let response = Outcome::Response(json!({ "batchItemFailures": items }));
            assert!(judge(&response, &ids).is_err(), "{items}");
        }
    }
}
