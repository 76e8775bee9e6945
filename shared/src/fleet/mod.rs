//! The fleet: the planner puts per-tag jobs on SQS, any number of workers copy them, and every
//! outcome lands in a DynamoDB ledger; poison jobs end in the dead-letter queue, where operators
//! inspect and replay them.
//!
//! - [`message`] — job messages (versioned JSON) and ECR push events.
//! - [`queue`] — SQS: send in batches, receive, visibility, dead-letter queue, bootstrap.
//! - [`ledger`] — the DynamoDB ledger: schema, conditional job transitions, queries.
//! - [`plan`] — config → jobs on the queue, recorded as a run.
//! - [`worker`] — the consumer: heartbeat, retries via visibility, dead-lettering, drain.
//! - [`ops`] — status, dead-letter listing and replay, job history.
//! - [`metrics`] — CloudWatch embedded-metric-format lines.

pub mod ledger;
pub mod message;
pub mod metrics;
pub mod ops;
pub mod plan;
pub mod queue;
pub mod worker;

/// AWS settings the SDK's usual way (environment, profile, container role); `AWS_ENDPOINT_URL_*`
/// variables point single services elsewhere (moto in tests).
pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}

/// An SQS client from `sdk`.
pub fn sqs_client(sdk: &aws_config::SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(sdk)
}

/// A DynamoDB client from `sdk`.
pub fn dynamodb_client(sdk: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(sdk)
}
