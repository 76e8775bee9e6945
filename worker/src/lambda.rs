//! The worker as an AWS Lambda function: chosen when the Lambda runtime starts the binary (it
//! sets `AWS_LAMBDA_RUNTIME_API`). Glue only: an SQS event's records become received messages
//! for [`EventWorker::batch`], and the ids it hands back are the batch's
//! `batchItemFailures` (the event source mapping needs `ReportBatchItemFailures`).

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use ecr_sync::console::exit;
use ecr_sync::fleet::queue::Received;
use ecr_sync::fleet::worker::EventWorker;
use lambda_runtime::{service_fn, LambdaEvent};
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;

/// Whether the Lambda runtime started this process.
pub fn under_lambda() -> bool {
    std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some()
}

/// Serves invocations until the runtime stops the process. A worker that cannot start (a
/// config that does not load, a queue or table that cannot be read) is reported to Lambda as
/// the init error, so the invocation shows the reason.
pub async fn serve(
    start: impl std::future::Future<Output = Result<EventWorker, ecr_sync::fleet::worker::WorkerError>>,
) -> ExitCode {
    let worker = match start.await {
        Ok(worker) => Arc::new(worker),
        Err(e) => {
            eprintln!("error: {e}");
            report_init_error(&e.to_string()).await;
            return ExitCode::from(exit::USAGE);
        }
    };
    let handler = service_fn(move |event: LambdaEvent<SqsEvent>| {
        let worker = worker.clone();
        async move { Ok::<_, lambda_runtime::Error>(invocation(&worker, event).await) }
    });
    match lambda_runtime::run(handler).await {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("error: the Lambda runtime stopped: {e}");
            ExitCode::from(exit::JOBS_FAILED)
        }
    }
}

/// One invocation: its records through the worker; the ones to come back are reported.
async fn invocation(worker: &EventWorker, event: LambdaEvent<SqsEvent>) -> SqsBatchResponse {
    let deadline = event.context.deadline();
    let queue = queue_name(worker.queue().url());
    let mut failures = Vec::new();
    let mut messages = Vec::new();
    for record in event.payload.records {
        match received(record, queue) {
            Ok(msg) => messages.push(msg),
            Err((id, why)) => {
                tracing::error!(message_id = id.as_deref().unwrap_or(""), reason = %why, "unusable SQS record; it comes back");
                failures.extend(id);
            }
        }
    }
    let batch = messages.len();
    failures.extend(worker.batch(messages, deadline).await);
    tracing::info!(
        request_id = %event.context.request_id,
        messages = batch,
        back = failures.len(),
        "invocation done"
    );
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failures
        .into_iter()
        .map(|id| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failure
        })
        .collect();
    response
}

/// The message an SQS record carries; an error (with the message id, when it has one) for a
/// record that lacks a field or comes from a queue other than the function's.
fn received(record: SqsMessage, queue: &str) -> Result<Received, (Option<String>, String)> {
    let id = record.message_id.clone();
    let fail = |why: String| (id.clone(), why);
    if let Some(arn) = &record.event_source_arn {
        let from = arn.rsplit(':').next().unwrap_or(arn);
        if from != queue {
            return Err(fail(format!(
                "the record comes from queue {from}, but the function sends retries to {queue} \
                 (ECR_SYNC_QUEUE_URL); point both at the events queue"
            )));
        }
    }
    let message_id = id.clone().ok_or_else(|| fail("no messageId".into()))?;
    let receipt = record
        .receipt_handle
        .ok_or_else(|| fail("no receiptHandle".into()))?;
    let body = record.body.ok_or_else(|| fail("no body".into()))?;
    let receive_count = match record.attributes.get("ApproximateReceiveCount") {
        Some(n) => n.parse().map_err(|_| {
            fail(format!(
                "attributes.ApproximateReceiveCount {n:?} is not a count"
            ))
        })?,
        None => 1,
    };
    let attributes: HashMap<String, String> = record
        .message_attributes
        .into_iter()
        .filter_map(|(name, value)| value.string_value.map(|v| (name, v)))
        .collect();
    Ok(Received {
        message_id,
        receipt,
        body,
        receive_count,
        attributes,
    })
}

/// The queue name at the end of a queue URL.
fn queue_name(url: &str) -> &str {
    url.trim_end_matches('/').rsplit('/').next().unwrap_or(url)
}

/// Tells the Runtime API why the function could not start (`/runtime/init/error`); Lambda
/// then fails the invocation with this message instead of a bare exit status.
async fn report_init_error(message: &str) {
    let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") else {
        return;
    };
    let body = serde_json::json!({ "errorType": "ecr-sync.StartError", "errorMessage": message });
    let sent = reqwest::Client::new()
        .post(format!("http://{api}/2018-06-01/runtime/init/error"))
        .header("Lambda-Runtime-Function-Error-Type", "ecr-sync.StartError")
        .header("content-type", "application/json")
        .body(body.to_string())
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await;
    if let Err(e) = sent {
        eprintln!("error: could not report the init error to the Lambda runtime: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(arn: &str) -> SqsMessage {
        serde_json::from_value(serde_json::json!({
            "messageId": "m-1",
            "receiptHandle": "r-1",
            "body": "{}",
            "attributes": { "ApproximateReceiveCount": "3" },
            "messageAttributes": {
                "ecr-sync-retries": { "stringValue": "2", "dataType": "Number",
                                      "stringListValues": [], "binaryListValues": [] }
            },
            "eventSourceARN": arn,
            "eventSource": "aws:sqs",
            "awsRegion": "us-east-1"
        }))
        .unwrap()
    }

    #[test]
    fn a_record_becomes_a_received_message_with_its_count_and_attributes() {
        let msg = received(
            record("arn:aws:sqs:us-east-1:123456789012:sync-events"),
            "sync-events",
        )
        .unwrap();
        assert_eq!(
            (msg.message_id.as_str(), msg.receipt.as_str()),
            ("m-1", "r-1")
        );
        assert_eq!(msg.receive_count, 3);
        assert_eq!(msg.attributes["ecr-sync-retries"], "2");
    }

    #[test]
    fn a_record_from_another_queue_is_refused_by_name() {
        let (id, why) = received(
            record("arn:aws:sqs:us-east-1:123456789012:other"),
            "sync-events",
        )
        .unwrap_err();
        assert_eq!(id.as_deref(), Some("m-1"));
        assert!(
            why.contains("queue other") && why.contains("sync-events"),
            "{why}"
        );
    }

    #[test]
    fn the_queue_name_is_the_url_path_end() {
        assert_eq!(queue_name("http://127.0.0.1:5000/123456789012/q/"), "q");
        assert_eq!(
            queue_name("https://sqs.us-east-1.amazonaws.com/1/events"),
            "events"
        );
    }
}
