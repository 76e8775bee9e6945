//! The fleet: the planner puts per-tag jobs on SQS, any number of workers copy them, and every
//! outcome lands in a DynamoDB ledger; poison jobs end in the dead-letter queue, where operators
//! inspect and replay them.
//!
//! - [`message`] — job messages (versioned JSON) and ECR push events.
//! - [`queue`] — SQS: send in batches, receive, visibility, dead-letter queue, bootstrap.
//! - [`ledger`] — the DynamoDB ledger: schema, conditional job transitions, queries.
//! - [`plan`] — the planning stream's sink into the ledger and the queue, recorded as a run.
//! - [`worker`] — the consumer: heartbeat, retries via visibility, dead-lettering, drain.
//! - [`ops`] — status, dead-letter listing and replay, job history.
//! - [`metrics`] — CloudWatch embedded-metric-format lines.
//! - [`budget`] — the workers' shares of a registry's manifest PUT budget.

pub mod budget;
pub mod ledger;
pub mod message;
pub mod metrics;
pub mod ops;
pub mod plan;
pub mod queue;
pub mod worker;
