//! One message, start to end: understand it, claim the job in the ledger, copy while a heartbeat
//! keeps the message invisible, record the outcome, and only then delete (or dead-letter, or
//! hand back) the message.

use super::context::Context;
use super::Shared;
use crate::copy::{decide, CopyError, Decision, ImageCopy};
use crate::digest::Digest;
use crate::fleet::ledger::{Finish, Start};
use crate::fleet::message::{Incoming, JobMessage};
use crate::fleet::metrics;
use crate::fleet::queue::{Received, ATTR_ERROR, ATTR_ERROR_CLASS};
use crate::retry::Transient;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// How a copy attempt ended.
enum Attempt {
    Copied(u64),
    UpToDate,
    Failed {
        class: String,
        reason: String,
        transient: bool,
    },
    /// The drain deadline passed first.
    Released,
}

impl Attempt {
    fn failed(class: &str, reason: impl Into<String>, transient: bool) -> Attempt {
        Attempt::Failed {
            class: class.to_string(),
            reason: reason.into(),
            transient,
        }
    }
}

impl From<CopyError> for Attempt {
    fn from(e: CopyError) -> Attempt {
        Attempt::failed(e.class(), e.to_string(), e.is_transient())
    }
}

/// Handles one received message; never fails (every problem ends in a log line and a message
/// that is deleted, dead-lettered or left to come back).
pub(super) async fn message(shared: Arc<Shared>, msg: Received) {
    let job = match Incoming::parse(&msg.body) {
        Ok(Incoming::Job(job)) => job,
        Ok(Incoming::Push(event)) => {
            let ctx = shared.contexts.current();
            match ctx.job_for_event(&event).await {
                Ok(Ok(job)) => {
                    tracing::info!(job_id = %job.job_id, run_id = %job.run_id, source = %format!("{}/{}:{}", job.source.registry, job.source.repository, job.source.tag), "push event accepted");
                    if let Err(e) = shared.ensure_event_run(&job.run_id).await {
                        tracing::error!(error = %e, "could not record the event run; the message will come back");
                        return shared.come_back(&msg, msg.receive_count).await;
                    }
                    job
                }
                Ok(Err(reason)) => {
                    tracing::info!(repository = %event.repository, tag = event.tag.as_deref().unwrap_or(""), reason = %reason, "push event not covered by the config; acknowledged");
                    return shared.delete(&msg).await;
                }
                Err(reason) => {
                    tracing::warn!(repository = %event.repository, reason = %reason, "push event could not be resolved; it will come back");
                    return shared.come_back(&msg, msg.receive_count).await;
                }
            }
        }
        Err(reason) => {
            tracing::error!(message_id = %msg.message_id, reason = %reason, "malformed message; dead-lettering it");
            return shared
                .dead_letter(&msg, &msg.body, "bad_message", &reason)
                .await;
        }
    };
    let span = tracing::info_span!("job", run_id = %job.run_id, job_id = %job.job_id, src = %format!("{}/{}", job.source.registry, job.source.repository), dst = %format!("{}/{}", job.destination.registry, job.destination.repository), tag = %job.source.tag);
    run_job(shared, msg, job).instrument(span).await
}

async fn run_job(shared: Arc<Shared>, msg: Received, job: JobMessage) {
    if !shared.running.lock().unwrap().insert(job.job_id.clone()) {
        tracing::info!("this worker is already running the job; the duplicate comes back later");
        return shared.come_back(&msg, 1).await;
    }
    run_claimed(&shared, &msg, &job).await;
    shared.running.lock().unwrap().remove(&job.job_id);
}

async fn run_claimed(shared: &Shared, msg: &Received, job: &JobMessage) {
    let attempt = match shared.ledger.start_job(job, &shared.opts.worker_id).await {
        Ok(Start::Go(n)) => n,
        Ok(Start::AlreadyDone(state)) => {
            tracing::info!(state = %state, "job already ended; duplicate delivery acknowledged");
            return shared.delete(msg).await;
        }
        Err(e) => {
            tracing::error!(error = %e, "ledger unavailable; the message will come back");
            return shared.come_back(msg, msg.receive_count).await;
        }
    };
    let started = Instant::now();
    let ctx = shared.contexts.current();
    let copy = copy(&ctx, job, attempt > 1);
    let outcome = tokio::select! {
        outcome = with_deadline(copy, shared.opts.job_deadline) => outcome,
        _ = shared.heartbeat(msg) => unreachable!("the heartbeat never ends"),
        _ = shared.aborted() => Attempt::Released,
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    let worker = &shared.opts.worker_id;
    let last_try = shared
        .max_receive_count
        .is_some_and(|max| msg.receive_count >= max);
    let (state, bytes, class, reason) = match &outcome {
        Attempt::Copied(b) => ("succeeded", *b, None, None),
        Attempt::UpToDate => ("skipped", 0, None, Some("up to date".to_string())),
        Attempt::Failed {
            class,
            reason,
            transient,
        } => (
            if *transient && !last_try {
                "failed"
            } else {
                "dead"
            },
            0,
            Some(class.clone()),
            Some(reason.clone()),
        ),
        Attempt::Released => {
            tracing::warn!("drain deadline passed; job released to the queue");
            if let Err(e) = shared.ledger.requeue_job(job, "released", worker).await {
                tracing::error!(error = %e, "could not record the release");
            }
            metrics::emit_job("released", 0, duration_ms, &job.run_id, &job.job_id);
            return shared.release(msg).await;
        }
    };
    let finish = Finish {
        state,
        attempt,
        bytes,
        duration_ms,
        error_class: class.clone().filter(|_| state != "skipped"),
        error: reason.clone().filter(|_| state != "skipped"),
    };
    let recorded = match shared.ledger.finish_job(job, worker, &finish).await {
        Ok(recorded) => recorded,
        Err(e) => {
            tracing::error!(error = %e, "could not record the outcome; the message will come back");
            return shared.come_back(msg, msg.receive_count).await;
        }
    };
    metrics::emit_job(state, bytes, duration_ms, &job.run_id, &job.job_id);
    match state {
        "succeeded" | "skipped" => {
            tracing::info!(state, bytes, duration_ms, attempt, recorded, "job done")
        }
        "failed" => {
            tracing::warn!(
                error_class = class.as_deref(),
                reason = reason.as_deref(),
                attempt,
                "job failed; it will be retried"
            )
        }
        _ => {
            tracing::error!(
                error_class = class.as_deref(),
                reason = reason.as_deref(),
                attempt,
                "job dead; dead-lettering it"
            )
        }
    }
    match state {
        "failed" => shared.come_back(msg, msg.receive_count).await,
        "dead" if recorded => {
            shared
                .dead_letter(
                    msg,
                    &job.to_json(),
                    class.as_deref().unwrap_or("unknown"),
                    reason.as_deref().unwrap_or(""),
                )
                .await
        }
        _ => shared.delete(msg).await,
    }
}

async fn with_deadline(copy: impl std::future::Future<Output = Attempt>, d: Duration) -> Attempt {
    match tokio::time::timeout(d, copy).await {
        Ok(a) => a,
        Err(_) => Attempt::failed(
            "timeout",
            format!("the job ran longer than its deadline of {} s", d.as_secs()),
            true,
        ),
    }
}

/// The copy itself: digest check first, then the image.
async fn copy(ctx: &Context, job: &JobMessage, redelivered: bool) -> Attempt {
    let (src, dst) = match (
        ctx.registries.get(&job.source.registry).await,
        ctx.registries.get(&job.destination.registry).await,
    ) {
        (Ok(s), Ok(d)) => (s, d),
        (Err(e), _) | (_, Err(e)) => return Attempt::failed("setup", e.to_string(), false),
    };
    let Ok(digest) = Digest::parse(&job.source.digest) else {
        return Attempt::failed("bad_message", "source.digest is not a digest", false);
    };
    let (src_repo, dst_repo, tag) = (
        &job.source.repository,
        &job.destination.repository,
        &job.source.tag,
    );
    let existing = match dst.head_manifest(dst_repo, tag).await {
        Ok(d) => d,
        Err(e) => return CopyError::from(e).into(),
    };
    match decide(&digest, existing.as_ref(), job.immutable_tags) {
        Decision::UpToDate => return Attempt::UpToDate,
        Decision::ImmutableConflict { existing } => {
            return CopyError::ImmutableTag {
                tag: tag.clone(),
                existing: existing.to_string(),
                wanted: digest.to_string(),
            }
            .into()
        }
        Decision::Copy => {}
    }
    let manifest = match src.get_manifest(src_repo, digest.as_str()).await {
        Ok(Some(m)) => m,
        Ok(None) => {
            return Attempt::failed(
                "not_found",
                format!(
                    "{}/{src_repo}@{digest} no longer exists at the source",
                    job.source.registry
                ),
                false,
            )
        }
        Err(e) => return CopyError::from(e).into(),
    };
    let mover = ctx.mover(&job.destination.registry);
    let copy = ImageCopy {
        src: &src,
        src_repo,
        dst: &dst,
        dst_repo,
        probe: job.probe || redelivered || existing.is_some(),
        blobs: &mover,
    };
    match copy.run(&manifest, tag).await {
        Ok(bytes) => Attempt::Copied(bytes),
        Err(e) => e.into(),
    }
}

impl Shared {
    async fn delete(&self, msg: &Received) {
        if let Err(e) = self.queue.delete(&msg.receipt).await {
            tracing::error!(error = %e, "could not delete the message; it will come back and be acknowledged as a duplicate");
        }
    }

    /// Lets the message come back after a delay that grows with its receive count.
    async fn come_back(&self, msg: &Received, receive_count: u32) {
        let delay = self.opts.requeue_delay(receive_count);
        if let Err(e) = self
            .queue
            .set_visibility(&msg.receipt, delay.as_secs() as i32)
            .await
        {
            tracing::error!(error = %e, "could not set the retry delay; the message comes back after its visibility timeout");
        }
    }

    /// Makes the message visible at once (a draining worker gives it back).
    async fn release(&self, msg: &Received) {
        if let Err(e) = self.queue.set_visibility(&msg.receipt, 0).await {
            tracing::error!(error = %e, "could not release the message; it comes back after its visibility timeout");
        }
    }

    /// Puts `body` (the job message — for a push event the job it became — or the raw body of
    /// a malformed message) on the dead-letter queue with its reason, then deletes `msg`.
    async fn dead_letter(&self, msg: &Received, body: &str, class: &str, reason: &str) {
        let Some(dlq) = &self.dlq else {
            tracing::error!(
                "no dead-letter queue known; the message stays and SQS redrive decides"
            );
            return self.come_back(msg, msg.receive_count).await;
        };
        match dlq
            .send(body, &[(ATTR_ERROR_CLASS, class), (ATTR_ERROR, reason)])
            .await
        {
            Ok(_) => self.delete(msg).await,
            Err(e) => {
                tracing::error!(error = %e, "could not dead-letter the message; it will come back");
                self.come_back(msg, msg.receive_count).await
            }
        }
    }

    /// Keeps the message invisible while its job runs; never returns.
    async fn heartbeat(&self, msg: &Received) {
        let every = Duration::from_secs((self.opts.visibility_seconds / 3).max(1) as u64);
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = self
                .queue
                .set_visibility(&msg.receipt, self.opts.visibility_seconds as i32)
                .await
            {
                tracing::warn!(error = %e, "heartbeat failed");
            }
        }
    }
}
