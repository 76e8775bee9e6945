//! SQS (aws-sdk-sqs): the jobs queue and its dead-letter queue. The SDK retries throttling and
//! transport errors itself; the one loop here resends the entries a `SendMessageBatch` answered
//! as failed, which the SDK cannot know to retry.
//!
//! `AWS_ENDPOINT_URL_SQS` is honoured by the SDK, which is how tests point this at moto.

use crate::aws::describe;
use crate::vocab::ErrorClass;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchRequestEntry,
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName, SendMessageBatchRequestEntry,
};
use std::collections::HashMap;
use std::time::Duration;

/// SQS's batch limit for sends, receives and visibility changes.
pub const SQS_BATCH: usize = 10;
/// Longest long poll SQS allows.
pub const LONG_POLL_SECONDS: i32 = 20;
/// Times a batch's failed entries are sent again before the send fails (doubling from 100 ms:
/// about 6 s in all).
const BATCH_RESENDS: u32 = 6;
/// Message attribute naming the error class of a dead-lettered job.
pub const ATTR_ERROR_CLASS: &str = "ecr_sync_error_class";
/// Message attribute with the reason of a dead-lettered job.
pub const ATTR_ERROR: &str = "ecr_sync_error";
/// Message attribute of a job sent back for a retry: how many retries it has had.
pub const ATTR_RETRIES: &str = "ecr_sync_retries";
/// Message attribute of a job sent back for a retry: when its first retry was decided (Unix
/// seconds), so the give-up window spans the fresh copies.
pub const ATTR_RETRYING_SINCE: &str = "ecr_sync_retrying_since";
/// Default receives of one message before SQS moves it to the dead-letter queue (`bootstrap`,
/// and the module's `max_receive_count`). Retries do not use receives (they are fresh copies),
/// so only receives that end without the worker acknowledging do: a worker that died holding
/// the message, a receive answer lost on the way, a hand-back. Ten lets a job outlive a run of
/// killed workers (one whose every receive was lost would reach the DLQ without a reason, its
/// job still `queued`), and still moves a message that crashes its workers within ten
/// visibility timeouts.
pub const DEFAULT_MAX_RECEIVE_COUNT: u32 = 10;
/// Longest delivery delay SQS allows on a message.
pub const MAX_DELAY_SECONDS: u32 = 900;

/// An SQS call that failed (after the SDK's own retries).
#[derive(Debug, thiserror::Error)]
#[error("SQS {op} on {queue}: {message}")]
pub struct QueueError {
    /// The failure class.
    pub class: ErrorClass,
    /// The API operation.
    pub op: &'static str,
    /// The queue URL (or name).
    pub queue: String,
    /// What went wrong, with the SDK's context.
    pub message: String,
    /// The service's error code, when it answered with one.
    pub code: Option<String>,
}

impl QueueError {
    /// Whether SQS says the message is no longer this receiver's: the receipt handle is stale
    /// (another receive got it, or it was deleted) — a heartbeat that hears this has lost the
    /// job's lease.
    pub fn lease_lost(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some(
                "ReceiptHandleIsInvalid"
                    | "MessageNotInflight"
                    | "AWS.SimpleQueueService.MessageNotInflight"
                    | "InvalidReceiptHandle"
            )
        )
    }
}

/// A message taken from a queue.
#[derive(Debug, Clone)]
pub struct Received {
    /// SQS message id.
    pub message_id: String,
    /// Receipt handle for delete and visibility changes.
    pub receipt: String,
    /// The body.
    pub body: String,
    /// Times SQS has handed it out (this one included).
    pub receive_count: u32,
    /// String message attributes.
    pub attributes: HashMap<String, String>,
}

/// One SQS queue.
#[derive(Clone)]
pub struct Queue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl Queue {
    /// The queue at `url`, using `client`.
    pub fn new(client: aws_sdk_sqs::Client, url: &str) -> Queue {
        Queue {
            client,
            url: url.to_string(),
        }
    }

    /// The queue URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn error<E, R>(&self, op: &'static str, e: SdkError<E, R>) -> QueueError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        QueueError {
            class: ErrorClass::of_sdk(&e),
            op,
            queue: self.url.clone(),
            message: describe(&e),
            code: e.code().map(str::to_string),
        }
    }

    /// Sends up to [`SQS_BATCH`] bodies in one `SendMessageBatch`, resending entries SQS
    /// reports as failed until all are in or the resends run out.
    pub async fn send_batch(&self, bodies: &[String]) -> Result<(), QueueError> {
        assert!(bodies.len() <= SQS_BATCH, "SQS batches hold at most 10");
        let mut pending: Vec<(String, &String)> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| (i.to_string(), b))
            .collect();
        let mut delay = Duration::from_millis(100);
        for attempt in 0..=BATCH_RESENDS {
            if pending.is_empty() {
                return Ok(());
            }
            if attempt > 0 {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            let entries = pending
                .iter()
                .map(|(id, body)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(id)
                        .message_body(*body)
                        .build()
                        .expect("id and body are set")
                })
                .collect();
            let out = self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| self.error("SendMessageBatch", e))?;
            let failed: Vec<_> = out.failed().to_vec();
            if let Some(f) = failed.iter().find(|f| f.sender_fault()) {
                return Err(QueueError {
                    class: ErrorClass::Rejected,
                    op: "SendMessageBatch",
                    queue: self.url.clone(),
                    message: format!(
                        "entry rejected: {}: {}",
                        f.code(),
                        f.message().unwrap_or("")
                    ),
                    code: Some(f.code().to_string()),
                });
            }
            pending.retain(|(id, _)| failed.iter().any(|f| f.id() == id));
            if !pending.is_empty() {
                tracing::warn!(
                    failed = pending.len(),
                    attempt,
                    "SendMessageBatch partly failed; resending those entries"
                );
            }
        }
        Err(QueueError {
            class: ErrorClass::Transient,
            op: "SendMessageBatch",
            queue: self.url.clone(),
            message: format!(
                "{} entries still failing after {BATCH_RESENDS} resends",
                pending.len()
            ),
            code: None,
        })
    }

    /// Sends one body with string attributes; returns the message id.
    pub async fn send(
        &self,
        body: &str,
        attributes: &[(&str, &str)],
    ) -> Result<String, QueueError> {
        self.send_delayed(body, attributes, 0).await
    }

    /// Sends one body with string attributes, delivered after `delay_seconds` (at most
    /// [`MAX_DELAY_SECONDS`]); returns the message id.
    pub async fn send_delayed(
        &self,
        body: &str,
        attributes: &[(&str, &str)],
        delay_seconds: u32,
    ) -> Result<String, QueueError> {
        let mut req = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(delay_seconds.min(MAX_DELAY_SECONDS) as i32);
        for (name, value) in attributes {
            // SQS rejects empty attribute values and values over 256 KiB with the body.
            let value: String = if value.is_empty() { "-" } else { value }
                .chars()
                .take(4096)
                .collect();
            req = req.message_attributes(
                *name,
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(value)
                    .build()
                    .expect("data type is set"),
            );
        }
        let out = req.send().await.map_err(|e| self.error("SendMessage", e))?;
        Ok(out.message_id().unwrap_or_default().to_string())
    }

    /// Receives up to `max` messages, waiting up to `wait_seconds` for the first; each stays
    /// invisible for `visibility_seconds` (the queue's default when `None`).
    pub async fn receive(
        &self,
        max: usize,
        wait_seconds: i32,
        visibility_seconds: Option<i32>,
    ) -> Result<Vec<Received>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, SQS_BATCH) as i32)
            .wait_time_seconds(wait_seconds)
            .set_visibility_timeout(visibility_seconds)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_attribute_names("All")
            .customize()
            .config_override(aws_sdk_sqs::config::Builder::default().timeout_config(
                crate::aws::long_poll_attempt_timeout(Duration::from_secs(
                    wait_seconds.max(0) as u64
                )),
            ))
            .send()
            .await
            .map_err(|e| self.error("ReceiveMessage", e))?;
        Ok(out
            .messages()
            .iter()
            .map(|m| Received {
                message_id: m.message_id().unwrap_or_default().to_string(),
                receipt: m.receipt_handle().unwrap_or_default().to_string(),
                body: m.body().unwrap_or_default().to_string(),
                receive_count: m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1),
                attributes: m
                    .message_attributes()
                    .map(|a| {
                        a.iter()
                            .filter_map(|(k, v)| {
                                v.string_value().map(|s| (k.clone(), s.to_string()))
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect())
    }

    /// Deletes a received message.
    pub async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| self.error("DeleteMessage", e))?;
        Ok(())
    }

    /// Keeps a received message invisible for `seconds` more from now (0: visible at once).
    pub async fn set_visibility(&self, receipt: &str, seconds: i32) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(seconds)
            .send()
            .await
            .map_err(|e| self.error("ChangeMessageVisibility", e))?;
        Ok(())
    }

    /// Makes received messages visible again at once, ten per call.
    pub async fn release_all(&self, receipts: &[String]) -> Result<(), QueueError> {
        for chunk in receipts.chunks(SQS_BATCH) {
            self.set_visibility_batch(chunk, 0).await?;
        }
        Ok(())
    }

    /// Sets the visibility of up to [`SQS_BATCH`] received messages in one
    /// `ChangeMessageVisibilityBatch`. Returns the entries SQS refused, by index into
    /// `receipts`, with their error (whose [`QueueError::lease_lost`] says whether the message
    /// is no longer ours).
    pub async fn set_visibility_batch(
        &self,
        receipts: &[String],
        seconds: i32,
    ) -> Result<Vec<(usize, QueueError)>, QueueError> {
        assert!(receipts.len() <= SQS_BATCH, "SQS batches hold at most 10");
        let entries = receipts
            .iter()
            .enumerate()
            .map(|(i, r)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(r)
                    .visibility_timeout(seconds)
                    .build()
                    .expect("id and receipt are set")
            })
            .collect();
        let out = self
            .client
            .change_message_visibility_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| self.error("ChangeMessageVisibilityBatch", e))?;
        Ok(self.entry_errors("ChangeMessageVisibilityBatch", out.failed()))
    }

    /// Deletes up to [`SQS_BATCH`] received messages in one `DeleteMessageBatch`. Returns the
    /// entries SQS refused, by index into `receipts`.
    pub async fn delete_batch(
        &self,
        receipts: &[String],
    ) -> Result<Vec<(usize, QueueError)>, QueueError> {
        assert!(receipts.len() <= SQS_BATCH, "SQS batches hold at most 10");
        let entries = receipts
            .iter()
            .enumerate()
            .map(|(i, r)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(r)
                    .build()
                    .expect("id and receipt are set")
            })
            .collect();
        let out = self
            .client
            .delete_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| self.error("DeleteMessageBatch", e))?;
        Ok(self.entry_errors("DeleteMessageBatch", out.failed()))
    }

    /// A batch answer's failed entries (ids are indexes) as errors.
    fn entry_errors(
        &self,
        op: &'static str,
        failed: &[BatchResultErrorEntry],
    ) -> Vec<(usize, QueueError)> {
        failed
            .iter()
            .filter_map(|f| {
                let index = f.id().parse().ok()?;
                Some((
                    index,
                    QueueError {
                        class: if f.sender_fault() {
                            ErrorClass::Rejected
                        } else {
                            ErrorClass::Transient
                        },
                        op,
                        queue: self.url.clone(),
                        message: format!("{}: {}", f.code(), f.message().unwrap_or("")),
                        code: Some(f.code().to_string()),
                    },
                ))
            })
            .collect()
    }

    /// The redrive policy's `maxReceiveCount`, if the queue has one.
    pub async fn max_receive_count(&self) -> Result<Option<u32>, QueueError> {
        let attrs = self
            .attributes(&[QueueAttributeName::RedrivePolicy])
            .await?;
        Ok(attrs
            .get(&QueueAttributeName::RedrivePolicy)
            .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
            .and_then(|p| match &p["maxReceiveCount"] {
                serde_json::Value::Number(n) => n.as_u64(),
                serde_json::Value::String(s) => s.parse().ok(),
                _ => None,
            })
            .map(|n| n as u32))
    }

    /// The dead-letter queue named by the redrive policy, if any.
    pub async fn dead_letter_queue(&self) -> Result<Option<Queue>, QueueError> {
        let attrs = self
            .attributes(&[QueueAttributeName::RedrivePolicy])
            .await?;
        let Some(arn) = attrs
            .get(&QueueAttributeName::RedrivePolicy)
            .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
            .and_then(|p| p["deadLetterTargetArn"].as_str().map(str::to_string))
        else {
            return Ok(None);
        };
        // arn:aws:sqs:<region>:<account>:<name>
        let parts: Vec<&str> = arn.split(':').collect();
        let (Some(account), Some(name)) = (parts.get(4), parts.get(5)) else {
            return Ok(None);
        };
        let out = self
            .client
            .get_queue_url()
            .queue_name(*name)
            .queue_owner_aws_account_id(*account)
            .send()
            .await
            .map_err(|e| self.error("GetQueueUrl", e))?;
        Ok(out
            .queue_url()
            .map(|url| Queue::new(self.client.clone(), url)))
    }

    /// Approximate (visible, in flight) message counts.
    pub async fn depth(&self) -> Result<(u64, u64), QueueError> {
        let attrs = self
            .attributes(&[
                QueueAttributeName::ApproximateNumberOfMessages,
                QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            ])
            .await?;
        let get = |k| attrs.get(&k).and_then(|v| v.parse().ok()).unwrap_or(0u64);
        Ok((
            get(QueueAttributeName::ApproximateNumberOfMessages),
            get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        ))
    }

    async fn attributes(
        &self,
        names: &[QueueAttributeName],
    ) -> Result<HashMap<QueueAttributeName, String>, QueueError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .set_attribute_names(Some(names.to_vec()))
            .send()
            .await
            .map_err(|e| self.error("GetQueueAttributes", e))?;
        Ok(out.attributes().cloned().unwrap_or_default())
    }

    /// Receives every message in the queue (up to `limit`), each once, and keeps them hidden for
    /// `hide_seconds`. An empty answer can come while messages exist (SQS samples servers), so
    /// it stops after two receives in a row that bring nothing new. Meant for the dead-letter
    /// queue, where nothing else consumes. On an error, what was received is made visible again.
    pub async fn take_all(
        &self,
        limit: usize,
        hide_seconds: i32,
    ) -> Result<Vec<Received>, QueueError> {
        let mut seen: Vec<Received> = Vec::new();
        let mut ids = std::collections::HashSet::new();
        let mut empty = 0;
        while seen.len() < limit && empty < 2 {
            let batch = match self.receive(SQS_BATCH, 1, Some(hide_seconds)).await {
                Ok(b) => b,
                Err(e) => {
                    let receipts: Vec<String> = seen.iter().map(|m| m.receipt.clone()).collect();
                    let _ = self.release_all(&receipts).await;
                    return Err(e);
                }
            };
            let before = seen.len();
            for m in batch {
                if ids.insert(m.message_id.clone()) {
                    seen.push(m);
                }
            }
            // Only new messages count as progress: ones seen before (back after their hide
            // time) must not keep a long read going forever.
            empty = if seen.len() == before { empty + 1 } else { 0 };
        }
        Ok(seen)
    }

    /// Reads every message in the queue without taking any: [`Queue::take_all`], then all are
    /// made visible again (receive counts only grow).
    pub async fn peek_all(&self, limit: usize) -> Result<Vec<Received>, QueueError> {
        let seen = self.take_all(limit, 60).await?;
        let receipts: Vec<String> = seen.iter().map(|m| m.receipt.clone()).collect();
        self.release_all(&receipts).await?;
        Ok(seen)
    }
}

/// Creates (or finds) the jobs queue `<name>-jobs` and its dead-letter queue `<name>-jobs-dlq`
/// (the Terraform module's names) with a redrive policy of `max_receive_count`. Returns (jobs
/// URL, DLQ URL). `CreateQueue` is idempotent for equal attributes; the redrive policy is set
/// again on existing queues.
pub async fn bootstrap_queues(
    client: &aws_sdk_sqs::Client,
    name: &str,
    max_receive_count: u32,
    visibility_seconds: u32,
) -> Result<(String, String), QueueError> {
    let err = |op, queue: &str, message: String| QueueError {
        class: ErrorClass::Rejected,
        op,
        queue: queue.to_string(),
        message,
        code: None,
    };
    let dlq_name = format!("{name}-jobs-dlq");
    let dlq = client
        .create_queue()
        .queue_name(&dlq_name)
        .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
        .attributes(QueueAttributeName::SqsManagedSseEnabled, "true")
        .send()
        .await
        .map_err(|e| err("CreateQueue", &dlq_name, describe(&e)))?;
    let dlq_url = dlq.queue_url().unwrap_or_default().to_string();
    let arn = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| err("GetQueueAttributes", &dlq_url, describe(&e)))?
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .unwrap_or_default();
    let redrive = serde_json::json!({
        "deadLetterTargetArn": arn,
        "maxReceiveCount": max_receive_count,
    })
    .to_string();
    let jobs_name = format!("{name}-jobs");
    let jobs = client
        .create_queue()
        .queue_name(&jobs_name)
        .attributes(QueueAttributeName::SqsManagedSseEnabled, "true")
        .attributes(
            QueueAttributeName::ReceiveMessageWaitTimeSeconds,
            LONG_POLL_SECONDS.to_string(),
        )
        .send()
        .await
        .map_err(|e| err("CreateQueue", &jobs_name, describe(&e)))?;
    let jobs_url = jobs.queue_url().unwrap_or_default().to_string();
    client
        .set_queue_attributes()
        .queue_url(&jobs_url)
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            visibility_seconds.to_string(),
        )
        .send()
        .await
        .map_err(|e| err("SetQueueAttributes", &jobs_url, describe(&e)))?;
    Ok((jobs_url, dlq_url))
}
