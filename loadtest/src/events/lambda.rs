//! The Lambda path: an events queue dead-lettering into the fleet's DLQ, testkit's event source
//! mapping and Runtime API, and the worker binary as the function, started at its first
//! invocation. Its init — from the process's start to its first connection to the Runtime API,
//! which `lambda_runtime` opens for its first `GET …/invocation/next` — is seen by a relay in
//! front of the API.

use super::probe::{self, until, until_copied, Consumer};
use super::{summarise, EventPath, EventsOpts, PathResult, MAX_RECEIVE_COUNT};
use crate::stack::Stack;
use anyhow::bail;
use ecr_sync::fleet::queue::Queue;
use ecr_sync_testkit::esm::{EventSourceMapping, Turn};
use ecr_sync_testkit::events::events_queue;
use ecr_sync_testkit::lambda_api::LambdaApi;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The function's timeout: the Terraform module's default (`event_lambda.timeout_seconds`).
const FUNCTION_TIMEOUT: Duration = Duration::from_secs(900);
/// Messages per invocation: the module's default (`event_lambda.batch_size`).
const BATCH_SIZE: i32 = 10;
/// How often the first invocation is looked for: the function starts this late at most.
const INVOKED_CHECK: Duration = Duration::from_millis(1);
/// How often the end of an invocation is looked for.
const SETTLED_CHECK: Duration = Duration::from_millis(10);

/// Runs the Lambda path: `opts.events` images pushed and their events sent, one at a time.
pub(super) async fn run(stack: &Stack, opts: &EventsOpts) -> anyhow::Result<PathResult> {
    let path = EventPath::Lambda;
    let sqs = stack.aws().sqs().await;
    let (url, arn) = events_queue(
        &sqs,
        "loadtest-events",
        FUNCTION_TIMEOUT,
        &stack.dlq_url,
        MAX_RECEIVE_COUNT,
    )
    .await?;
    let queue = Queue::new(sqs.clone(), &url);
    let api = Arc::new(LambdaApi::start().await);
    let relay = Relay::start(api.runtime_api()).await?;
    let esm = EventSourceMapping::start(sqs, &url, &arn, api, BATCH_SIZE, FUNCTION_TIMEOUT);
    let dst = probe::destination(stack)?;
    let mut function: Option<(Consumer, Instant)> = None;
    let mut turns: Vec<Turn> = Vec::new();
    let (mut each, mut sent_at) = (Vec::new(), Vec::new());
    for i in 0..opts.events {
        let sent = probe::push_and_send(stack, &queue, path, i).await?;
        if function.is_none() {
            let what = format!(
                "the event source mapping to invoke the function ({})",
                sent.tag
            );
            until(
                &what,
                INVOKED_CHECK,
                || Ok(esm.counts().invocations > 0),
                || esm.last_error().unwrap_or_default(),
            )
            .await?;
            let started = Instant::now();
            let consumer = Consumer::start(stack, "function", "function.err", |c| {
                c.env("ECR_SYNC_QUEUE_URL", &url)
                    .env("AWS_LAMBDA_RUNTIME_API", &relay.addr)
                    .env("AWS_LAMBDA_FUNCTION_NAME", "loadtest-events")
                    .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
                    .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
                    .env(
                        "AWS_LAMBDA_LOG_STREAM_NAME",
                        "2026/01/01/[$LATEST]0123456789abcdef",
                    );
            })?;
            function = Some((consumer, started));
        }
        let (consumer, _) = function.as_ref().expect("started above");
        let mut timings = until_copied(stack, &dst, &sent, opts.poll, consumer).await?;
        // Settled: the turn that carried the event has ended and deleted its batch.
        let mut turn = None;
        until(
            &format!("the invocation for {} to end", sent.tag),
            SETTLED_CHECK,
            || {
                consumer.running()?;
                turns.extend(esm.take_turns());
                turn = turns
                    .iter()
                    .find(|t| t.id_of(&sent.body).is_some())
                    .cloned();
                Ok(turn.is_some())
            },
            || esm.last_error().unwrap_or_default(),
        )
        .await?;
        let turn = turn.expect("found above");
        if let Some(why) = &turn.batch_failed {
            bail!(
                "the invocation for {} failed ({why}); the function's log ends:\n{}",
                sent.tag,
                consumer.log_tail()
            );
        }
        timings.pickup_ms = Some(probe::ms(
            turn.received_at.saturating_duration_since(sent.at),
        ));
        each.push(timings);
        sent_at.push(sent.wall);
    }
    let (consumer, started) = function.expect("one event at least");
    let init_ms = relay
        .first
        .get()
        .map(|first| probe::ms(first.saturating_duration_since(started)));
    Ok(summarise(path, each, &consumer.log(), &sent_at, init_ms))
}

/// A loopback TCP relay to the Runtime API that notes when the function first connects.
/// Stops when dropped.
struct Relay {
    /// `127.0.0.1:PORT`, the function's `AWS_LAMBDA_RUNTIME_API`.
    addr: String,
    /// When the first connection came.
    first: Arc<OnceLock<Instant>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    async fn start(upstream: String) -> anyhow::Result<Relay> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let first = Arc::new(OnceLock::new());
        let seen = first.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let _ = seen.set(Instant::now());
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Ok(Relay { addr, first, task })
    }
}
