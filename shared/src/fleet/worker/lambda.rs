//! The worker under AWS Lambda: a function fed push events (and the jobs they fan out to) by an
//! SQS event source mapping. Each message takes the fleet worker's path — authorised against
//! the config, claimed and recorded in the ledger, dead-lettered when it cannot succeed — and
//! what is to come back is reported as a partial batch failure, so Lambda deletes the rest and
//! one bad message does not bring the batch back.
//!
//! What differs from the fleet: Lambda receives and deletes, so there is no polling and no
//! batched delete; no heartbeat either, since the queue's visibility timeout outlasts the
//! function's timeout (AWS asks for six times it). A job still running near the invocation's
//! deadline is released — recorded `released`, its message visible again at once and reported
//! failed — so a timeout never cuts a copy off half-recorded; its next delivery finds the
//! layers already copied. The config is loaded once per cold start and reloaded, and the
//! manifest PUT budget shared with the other workers, by the same background tasks as in the
//! fleet, which run while the function runs and sleep while it is frozen.

use super::{handle, Ack, Mode, Worker, WorkerError, WorkerOptions};
use crate::fleet::ledger::FleetLedger;
use crate::fleet::queue::{Queue, Received};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{watch, Semaphore};

/// How long before an invocation's deadline running jobs are released: time to record the
/// release and make the message visible again (at most a quarter of the invocation's time).
pub const RELEASE_MARGIN: Duration = Duration::from_secs(5);

/// A worker built once per cold start, handling the batches of its invocations.
pub struct EventWorker {
    shared: Arc<Worker>,
    /// Held so a drain never triggers: a function is not drained, its jobs are released at
    /// each invocation's deadline.
    _abort: watch::Sender<bool>,
    _sharing: watch::Sender<bool>,
    background: [tokio::task::JoinHandle<()>; 2],
}

impl Drop for EventWorker {
    fn drop(&mut self) {
        for task in &self.background {
            task.abort();
        }
    }
}

impl EventWorker {
    /// Loads and checks the config, the queue's redrive policy and the ledger, and starts the
    /// background tasks. `queue` is the queue the function is fed from: retries and the jobs
    /// of a push event that several config entries cover are sent back to it.
    pub async fn start(
        opts: WorkerOptions,
        aws: crate::aws::Aws,
        queue: Queue,
        dlq: Option<Queue>,
        ledger: FleetLedger,
    ) -> Result<EventWorker, WorkerError> {
        let (worker, abort) = Worker::start(opts, aws, queue, dlq, ledger, Mode::Lambda).await?;
        let shared = Arc::new(worker);
        let (sharing_tx, sharing) = watch::channel(false);
        let (sharer, refresh) = shared.spawn_background(sharing);
        Ok(EventWorker {
            shared,
            _abort: abort,
            _sharing: sharing_tx,
            background: [sharer, refresh],
        })
    }

    /// The queue the function is fed from.
    pub fn queue(&self) -> &Queue {
        &self.shared.queue
    }

    /// Handles one batch, at most the configured number of jobs at once, by `deadline` (the
    /// invocation's); returns the message ids to report in `batchItemFailures`.
    pub async fn batch(&self, messages: Vec<Received>, deadline: SystemTime) -> Vec<String> {
        let remaining = deadline
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let release_at = Instant::now() + remaining.saturating_sub(release_margin(remaining));
        let permits = Semaphore::new(self.shared.limit());
        let handled = messages.into_iter().map(|msg| {
            let permits = &permits;
            async move {
                let id = msg.message_id.clone();
                let _permit = permits.acquire().await.expect("never closed");
                if Instant::now() >= release_at {
                    // Its turn came too late to start: not touched, it comes back.
                    tracing::warn!(message_id = %id, "no time left in the invocation to start the message; it comes back");
                    return (id, Ack::Back);
                }
                let ack = handle::message(self.shared.clone(), msg, Some(release_at)).await;
                (id, ack)
            }
        });
        futures_util::future::join_all(handled)
            .await
            .into_iter()
            .filter(|(_, ack)| *ack == Ack::Back)
            .map(|(id, _)| id)
            .collect()
    }
}

/// The margin kept before a deadline `remaining` away: [`RELEASE_MARGIN`], at most a quarter of
/// the time.
fn release_margin(remaining: Duration) -> Duration {
    RELEASE_MARGIN.min(remaining / 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_margin_is_five_seconds_or_a_quarter_of_a_short_invocation() {
        assert_eq!(
            release_margin(Duration::from_secs(900)),
            Duration::from_secs(5)
        );
        assert_eq!(
            release_margin(Duration::from_secs(8)),
            Duration::from_secs(2)
        );
        assert_eq!(release_margin(Duration::ZERO), Duration::ZERO);
    }
}
