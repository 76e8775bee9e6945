//! The warm worker path: a fleet worker started as ECS starts it (no arguments but its name; 20 s
//! long polls on the jobs queue), left idle until its first long poll is surely waiting, then
//! sent the push events on the jobs queue.

use super::probe::{self, until, until_copied, Consumer};
use super::{summarise, EventPath, EventsOpts, PathResult};
use crate::stack::Stack;
use ecr_sync::fleet::queue::Queue;
use std::time::Duration;

/// How long the worker is left idle after it started: its first long poll is then waiting
/// when the first event comes.
const IDLE_SETTLE: Duration = Duration::from_secs(1);
/// How often its log is read for the end of a job.
const SETTLED_CHECK: Duration = Duration::from_millis(10);

/// Runs the warm worker path: `opts.events` images pushed and their events sent, one at a time.
pub(super) async fn run(stack: &Stack, opts: &EventsOpts) -> anyhow::Result<PathResult> {
    let path = EventPath::WarmWorker;
    let queue = Queue::new(stack.aws().sqs().await, &stack.queue_url);
    let dst = probe::destination(stack)?;
    let worker = Consumer::start(stack, "warm worker", "worker-warm.err", |c| {
        c.args(["--worker-id", "warm"]);
    })?;
    until(
        "the warm worker to start",
        SETTLED_CHECK,
        || {
            worker.running()?;
            Ok(worker.log().contains("worker started"))
        },
        || worker.log_tail(),
    )
    .await?;
    tokio::time::sleep(IDLE_SETTLE).await;
    let (mut each, mut sent_at) = (Vec::new(), Vec::new());
    for i in 0..opts.events {
        let sent = probe::push_and_send(stack, &queue, path, i).await?;
        each.push(until_copied(stack, &dst, &sent, opts.poll, &worker).await?);
        sent_at.push(sent.wall);
        // Settled: the job's outcome is recorded (the job span ends with the tag).
        let done = format!("tag={}}}: job done", sent.tag);
        until(
            &format!("the job for {}:{} to be recorded", sent.repo, sent.tag),
            SETTLED_CHECK,
            || {
                worker.running()?;
                let log = worker.log();
                Ok(log
                    .lines()
                    .any(|l| l.contains(&done) && l.contains(sent.repo)))
            },
            || worker.log_tail(),
        )
        .await?;
    }
    Ok(summarise(path, each, &worker.log(), &sent_at, None))
}
