//! The messages a worker holds, kept and acknowledged in batches: one heartbeat extends every
//! held message with `ChangeMessageVisibilityBatch` (ten per call), and finished messages are
//! deleted with `DeleteMessageBatch` (ten per call, or whatever gathered within
//! [`DELETE_LINGER`]). Under load that is about 0.1 SQS requests per job for each, where one
//! call per message per beat and per delete cost a request each.
//!
//! Why batching keeps the guarantees: a message is still deleted only after its outcome is in
//! the ledger; a delete that waits up to [`DELETE_LINGER`] (far below the visibility timeout)
//! and is then lost with a killed worker makes the message come back, and the ledger
//! acknowledges it as a duplicate — as with a lost single delete. A lease that SQS reports lost
//! in a batch entry stops that job as the single heartbeat did.

use crate::fleet::queue::{Queue, QueueError, SQS_BATCH};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

/// Longest a finished message waits for nine others before its batch is deleted. Far below
/// any visibility timeout (a delete lost with a killed worker only brings back a message the
/// ledger acknowledges), and long enough that jobs finishing apart on a busy machine still
/// share a call: at 200 ms a loaded worker deleted four or five per call.
pub const DELETE_LINGER: Duration = Duration::from_secs(1);

struct Entry {
    receipt: String,
    extended: Instant,
    lost: Option<oneshot::Sender<QueueError>>,
}

/// The messages whose jobs run here; see the module docs.
#[derive(Default)]
pub(super) struct Held {
    entries: Mutex<HashMap<u64, Entry>>,
    next: AtomicU64,
}

/// One held message; dropping it stops the heartbeat for it.
pub(super) struct Lease<'a> {
    held: &'a Held,
    id: u64,
    lost: Option<oneshot::Receiver<QueueError>>,
}

impl Lease<'_> {
    /// Resolves when SQS says the message is no longer ours (never, otherwise).
    pub(super) async fn lost(&mut self) -> QueueError {
        match self.lost.take() {
            Some(rx) => match rx.await {
                Ok(e) => e,
                Err(_) => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.held.entries.lock().unwrap().remove(&self.id);
    }
}

impl Held {
    /// Starts keeping the message with `receipt` invisible while the lease lives.
    pub(super) fn hold(&self, receipt: &str) -> Lease<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.entries.lock().unwrap().insert(
            id,
            Entry {
                receipt: receipt.to_string(),
                extended: Instant::now(),
                lost: Some(tx),
            },
        );
        Lease {
            held: self,
            id,
            lost: Some(rx),
        }
    }

    /// Every `every`, extends each message held for `every` or longer since its last extension
    /// by `visibility_seconds`, ten per call. Runs until dropped.
    pub(super) async fn heartbeat(&self, queue: &Queue, every: Duration, visibility_seconds: i32) {
        let mut tick = tokio::time::interval(every / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let due: Vec<(u64, String)> = {
                let now = Instant::now();
                let mut entries = self.entries.lock().unwrap();
                entries
                    .iter_mut()
                    .filter(|(_, e)| now.duration_since(e.extended) >= every)
                    .map(|(id, e)| {
                        e.extended = now;
                        (*id, e.receipt.clone())
                    })
                    .collect()
            };
            let calls = due.chunks(SQS_BATCH).map(|chunk| async move {
                let receipts: Vec<String> = chunk.iter().map(|(_, r)| r.clone()).collect();
                match queue
                    .set_visibility_batch(&receipts, visibility_seconds)
                    .await
                {
                    Ok(failed) => {
                        for (index, e) in failed {
                            self.refused(chunk[index].0, e);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, messages = chunk.len(), "heartbeat failed")
                    }
                }
            });
            futures_util::future::join_all(calls).await;
        }
    }

    /// A heartbeat entry SQS refused: a lost lease ends the job's attempt; anything else is
    /// tried again at the next beat.
    fn refused(&self, id: u64, e: QueueError) {
        if !e.lease_lost() {
            tracing::warn!(error = %e, "heartbeat failed for a message");
            return;
        }
        let sender = self
            .entries
            .lock()
            .unwrap()
            .get_mut(&id)
            .and_then(|entry| entry.lost.take());
        if let Some(tx) = sender {
            let _ = tx.send(e);
        }
    }
}

/// Finished messages waiting to be deleted in a batch; see the module docs.
#[derive(Default)]
pub(super) struct Deletes {
    pending: Mutex<Vec<String>>,
    full: Notify,
}

impl Deletes {
    /// Queues the message with `receipt` for deletion.
    pub(super) fn push(&self, receipt: &str) {
        let mut pending = self.pending.lock().unwrap();
        pending.push(receipt.to_string());
        if pending.len() >= SQS_BATCH {
            self.full.notify_one();
        }
    }

    /// Deletes what gathered whenever ten are waiting or [`DELETE_LINGER`] passed. Runs until
    /// dropped; [`Deletes::flush`] deletes the rest.
    pub(super) async fn run(&self, queue: &Queue) {
        loop {
            tokio::select! {
                _ = self.full.notified() => {}
                _ = tokio::time::sleep(DELETE_LINGER) => {}
            }
            self.flush(queue).await;
        }
    }

    /// Deletes every waiting message now.
    pub(super) async fn flush(&self, queue: &Queue) {
        let all = std::mem::take(&mut *self.pending.lock().unwrap());
        let calls = all.chunks(SQS_BATCH).map(|chunk| async move {
            let failed = match queue.delete_batch(chunk).await {
                Ok(failed) => failed.into_iter().map(|(_, e)| e).collect(),
                Err(e) => vec![e],
            };
            for e in failed {
                tracing::error!(error = %e, "could not delete a finished message; it will come back and be acknowledged as a duplicate");
            }
        });
        futures_util::future::join_all(calls).await;
    }
}
