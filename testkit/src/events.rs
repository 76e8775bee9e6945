//! Push events as the tests and the load test put them on a queue: ECR's "Image Action" event
//! as EventBridge delivers it, from one source account ([`ECR_SOURCE`]), and the events queue a
//! push-event function is fed from, made as the Terraform module makes it.

use anyhow::Context;
use aws_sdk_sqs::types::QueueAttributeName;
use std::time::Duration;

/// The source account's ECR registry host the events name; a config maps it to a local
/// registry with `registries[ECR_SOURCE].endpoint`.
pub const ECR_SOURCE: &str = "111122223333.dkr.ecr.us-east-1.amazonaws.com";

/// A successful push of `repo:tag` at `digest` to [`ECR_SOURCE`], with EventBridge's event
/// `id` (each event has its own; a redelivery repeats the body).
pub fn ecr_push_event(repo: &str, tag: &str, digest: &str, id: &str) -> String {
    serde_json::json!({
        "version": "0", "id": id, "detail-type": "ECR Image Action", "source": "aws.ecr",
        "account": "111122223333", "time": "2026-11-22T10:00:00Z", "region": "us-east-1",
        "resources": [],
        "detail": {"result": "SUCCESS", "repository-name": repo, "image-digest": digest,
                   "action-type": "PUSH", "image-tag": tag}
    })
    .to_string()
}

/// Creates the queue `name` a push-event function is fed from, as the Terraform module does:
/// visibility six times the function's `timeout` (AWS's advice), 20 s long polls, dead-lettering
/// into `dlq_url` after `max_receive_count` receives. Returns its URL and ARN.
pub async fn events_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    timeout: Duration,
    dlq_url: &str,
    max_receive_count: u32,
) -> anyhow::Result<(String, String)> {
    let dlq_arn = crate::esm::queue_arn(sqs, dlq_url).await?;
    let redrive =
        serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count});
    let url = sqs
        .create_queue()
        .queue_name(name)
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            (6 * timeout.as_secs()).to_string(),
        )
        .attributes(QueueAttributeName::ReceiveMessageWaitTimeSeconds, "20")
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .send()
        .await
        .with_context(|| format!("cannot create the events queue {name}"))?
        .queue_url()
        .context("CreateQueue answered no queue URL")?
        .to_string();
    let arn = crate::esm::queue_arn(sqs, &url).await?;
    Ok((url, arn))
}
