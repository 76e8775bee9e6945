//! One message, start to end: understand it, claim the job in the ledger, run it through the
//! engine while a heartbeat keeps the message invisible, record the outcome, and only then
//! delete (or dead-letter, or hand back) the message.

use super::{Ack, Worker};
use crate::fleet::ledger::{Finish, Start};
use crate::fleet::message::{Incoming, JobMessage};
use crate::fleet::metrics;
use crate::fleet::queue::{
    Received, ATTR_ERROR, ATTR_ERROR_CLASS, ATTR_RETRIES, ATTR_RETRYING_SINCE, SQS_BATCH,
};
use crate::job::{JobError, JobOutcome};
use crate::vocab::{ErrorClass, JobEvent, JobState};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// How an attempt ended: the engine's outcome, the drain deadline passing first, or the
/// heartbeat learning that the message is no longer ours.
enum Attempt {
    Ran(JobOutcome),
    /// Stopped at the named deadline.
    Released(&'static str),
    LeaseLost(crate::fleet::queue::QueueError),
}

/// Handles one received message; never fails (every problem ends in a log line and a message
/// that is deleted, dead-lettered or left to come back). A job still running at `release_at`
/// (a Lambda invocation's deadline, less a margin) is handed back like one still running at
/// the drain deadline.
pub(super) async fn message(
    shared: Arc<Worker>,
    msg: Received,
    release_at: Option<Instant>,
) -> Ack {
    let job = match Incoming::parse(&msg.body) {
        Ok(Incoming::Job(job)) => job,
        Ok(Incoming::Push(event)) => {
            let current = shared.config.current();
            match current.jobs_for_event(&event).await {
                Ok(Ok(mut jobs)) => {
                    let run_id = jobs[0].run_id.clone();
                    tracing::info!(run_id = %run_id, jobs = jobs.len(), source = %format!("{}/{}:{}", event.registry(), event.repository, event.tag.as_deref().unwrap_or("")), "push event accepted");
                    if let Err(e) = shared.ensure_event_run(&run_id).await {
                        tracing::error!(error = %e, "could not record the event run; the message will come back");
                        return shared.retry_later(&msg).await;
                    }
                    if jobs.len() > 1 {
                        return shared.fan_out(&msg, &jobs).await;
                    }
                    jobs.remove(0)
                }
                Ok(Err(reason)) => {
                    tracing::info!(repository = %event.repository, tag = event.tag.as_deref().unwrap_or(""), reason = %reason, "push event not covered by the config; acknowledged");
                    return shared.delete(&msg);
                }
                Err(reason) => {
                    tracing::warn!(repository = %event.repository, reason = %reason, "push event could not be resolved; it will come back");
                    return shared.retry_later(&msg).await;
                }
            }
        }
        Ok(Incoming::Newer(reason)) => {
            tracing::warn!(message_id = %msg.message_id, reason = %reason, "message for a newer worker; handing it back");
            return shared.hand_back(&msg, msg.receive_count).await;
        }
        Err(reason) => {
            tracing::error!(message_id = %msg.message_id, reason = %reason, "malformed message; dead-lettering it");
            return shared
                .dead_letter(&msg, &msg.body, ErrorClass::BadMessage, &reason)
                .await;
        }
    };
    let span = tracing::info_span!("job", run_id = %job.run_id, job_id = %job.job_id, src = %format!("{}/{}", job.source.registry, job.source.repository), dst = %format!("{}/{}", job.destination.registry, job.destination.repository), tag = %job.source.tag);
    run_job(shared, msg, job, release_at).instrument(span).await
}

async fn run_job(
    shared: Arc<Worker>,
    msg: Received,
    job: JobMessage,
    release_at: Option<Instant>,
) -> Ack {
    tracing::debug!(message_id = %msg.message_id, receive_count = msg.receive_count, "job received");
    if let Err(e) = shared.config.current().authorize(&job).await {
        if e.class == ErrorClass::RejectedJob {
            tracing::error!(reason = %e.reason, "job rejected: the config does not ask for it; dead-lettering it");
            shared.reject(&job).await;
            return shared
                .dead_letter(&msg, &job.to_json(), e.class, &e.reason)
                .await;
        }
        tracing::error!(error = %e, "cannot check the job against the config; it will come back");
        return shared.retry_later(&msg).await;
    }
    let Some(_running) = Running::claim(&shared.running, &job.job_id) else {
        tracing::info!("this worker is already running the job; the duplicate comes back later");
        return shared.hand_back(&msg, 1).await;
    };
    run_claimed(&shared, &msg, &job, release_at).await
}

/// A job id in the worker's running set for as long as it lives — also when the job panics:
/// the unwinding drops it (with the job's slot and its message's lease, so the message comes
/// back after its visibility timeout), and a later delivery is not refused as a duplicate.
struct Running<'a> {
    set: &'a std::sync::Mutex<std::collections::HashSet<String>>,
    job_id: String,
}

impl<'a> Running<'a> {
    /// Claims `job_id` in `set`; `None` when it is running already.
    fn claim(
        set: &'a std::sync::Mutex<std::collections::HashSet<String>>,
        job_id: &str,
    ) -> Option<Running<'a>> {
        let fresh = set.lock().unwrap().insert(job_id.to_string());
        fresh.then(|| Running {
            set,
            job_id: job_id.to_string(),
        })
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        // A panic elsewhere may have poisoned the lock; the set is still sound.
        let mut set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        set.remove(&self.job_id);
    }
}

async fn run_claimed(
    shared: &Worker,
    msg: &Received,
    job: &JobMessage,
    release_at: Option<Instant>,
) -> Ack {
    let attempt = match shared.ledger.start_job(job).await {
        Ok(Start::Go(n)) => n,
        Ok(Start::AlreadyDone(ended)) if ended.state == JobState::Dead => {
            // Recorded dead, but whether it reached the dead-letter queue is unknown (the send
            // may have failed, or the worker died): send it (again). Never zero times.
            let class = ended.error_class.unwrap_or(ErrorClass::Transient);
            let reason = ended.error.unwrap_or_else(|| "recorded dead".to_string());
            tracing::warn!(error_class = %class, "job already dead; making sure it is in the dead-letter queue");
            return shared
                .dead_letter(msg, &job.to_json(), class, &reason)
                .await;
        }
        Ok(Start::AlreadyDone(ended)) => {
            tracing::info!(state = %ended.state, "job already ended; duplicate delivery acknowledged");
            return shared.delete(msg);
        }
        Err(e) => {
            tracing::error!(error = %e, "ledger unavailable; the message will come back");
            return shared.retry_later(msg).await;
        }
    };
    let started = Instant::now();
    let current = shared.config.current();
    let planned = job.planned(attempt > 1);
    let run = current.engine.run(&planned, false);
    let mut lease = shared.held.hold(&msg.receipt);
    let outcome = tokio::select! {
        outcome = with_deadline(run, shared.opts.job_deadline) => Attempt::Ran(outcome),
        never = shared.mark_running_later(job, attempt) => match never {},
        e = lease.lost() => Attempt::LeaseLost(e),
        _ = shared.aborted() => Attempt::Released("the worker's drain deadline"),
        _ = until(release_at) => Attempt::Released("the function's timeout"),
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    let worker = &shared.opts.worker_id;
    let outcome = match outcome {
        Attempt::Ran(o) => o,
        Attempt::LeaseLost(e) => {
            // Another receive holds the message now (or it is gone): that delivery records
            // the job; this one stops copying and touches neither the ledger nor the message.
            tracing::warn!(error = %e, "lease lost: the message is no longer this worker's; copy stopped");
            return Ack::Back;
        }
        // On its last delivery a released message would be moved to the dead-letter queue by
        // SQS with no reason and no ledger record: it ends as a failure instead, recorded.
        Attempt::Released(deadline) if shared.last_try(msg) => JobOutcome::Failed(JobError::new(
            ErrorClass::Timeout,
            format!("the job was still running at {deadline} on its last delivery"),
        )),
        Attempt::Released(deadline) => {
            tracing::warn!(
                deadline,
                "job still running at the deadline; released to the queue"
            );
            if let Err(e) = shared
                .ledger
                .requeue_job(job, JobEvent::Released, worker)
                .await
            {
                tracing::error!(error = %e, "could not record the release");
            }
            metrics::emit_job(JobEvent::Released, 0, duration_ms, &job.run_id, &job.job_id);
            return shared.release(msg).await;
        }
    };
    let last_try = shared.last_try(msg);
    let state = match &outcome {
        JobOutcome::Copied { .. } => JobState::Succeeded,
        // Referrers copied to an image already there (a late signature): work done.
        JobOutcome::UpToDate { referrers, .. } if *referrers > 0 => JobState::Succeeded,
        JobOutcome::UpToDate { .. } | JobOutcome::WouldCopy => JobState::Skipped,
        JobOutcome::Superseded(_) => JobState::Superseded,
        // No retry or replay can copy over an immutable tag: recorded, and kept out of the
        // dead-letter queue (and its alarm).
        JobOutcome::Failed(e) if e.class == ErrorClass::ImmutableTag => JobState::Conflict,
        // A setup problem (a registry client that cannot be made) is the deployment's, not
        // the job's: it comes back later instead of being dead-lettered.
        JobOutcome::Failed(e)
            if (e.class.is_transient() || e.class == ErrorClass::Setup) && !last_try =>
        {
            JobState::Failed
        }
        JobOutcome::Failed(_) => JobState::Dead,
    };
    let bytes = outcome.bytes();
    let error = outcome.error();
    let finish = Finish {
        state,
        attempt,
        bytes,
        referrers: outcome.referrers(),
        duration_ms,
        error_class: error.map(|e| e.class),
        error: match &outcome {
            JobOutcome::Superseded(why) => Some(why.clone()),
            _ => error.map(|e| e.reason.clone()),
        },
    };
    let recorded = match shared.ledger.finish_job(job, worker, &finish).await {
        Ok(recorded) => recorded,
        Err(e) => {
            tracing::error!(error = %e, "could not record the outcome; the message will come back");
            return shared.retry_later(msg).await;
        }
    };
    metrics::emit_job(state.into(), bytes, duration_ms, &job.run_id, &job.job_id);
    let (class, reason) = (
        error.map(|e| e.class.as_str()),
        error.map(|e| e.reason.as_str()),
    );
    match state {
        JobState::Succeeded | JobState::Skipped => {
            tracing::info!(state = %state, bytes, referrers = finish.referrers, duration_ms, attempt, recorded, "job done")
        }
        JobState::Superseded => tracing::info!(
            reason = finish.error.as_deref(),
            attempt,
            recorded,
            "job superseded: the source tag moved on; not copied"
        ),
        JobState::Conflict => tracing::warn!(
            reason,
            attempt,
            recorded,
            "immutable tag conflict: the destination tag holds another image; not copied, not dead-lettered"
        ),
        JobState::Failed => tracing::warn!(
            error_class = class,
            reason,
            attempt,
            "job failed; it will be retried"
        ),
        _ => tracing::error!(
            error_class = class,
            reason,
            attempt,
            "job dead; dead-lettering it"
        ),
    }
    match (state, error) {
        (JobState::Failed, _) => shared.retry_later(msg).await,
        (JobState::Dead, Some(e)) if recorded => {
            shared
                .dead_letter(msg, &job.to_json(), e.class, &e.reason)
                .await
        }
        _ => shared.delete(msg),
    }
}

/// Resolves at `at`; never when `None`.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

async fn with_deadline(
    run: impl std::future::Future<Output = JobOutcome>,
    d: Duration,
) -> JobOutcome {
    match tokio::time::timeout(d, run).await {
        Ok(o) => o,
        Err(_) => JobOutcome::Failed(JobError::new(
            ErrorClass::Timeout,
            format!("the job ran longer than its deadline of {} s", d.as_secs()),
        )),
    }
}

impl Worker {
    /// Marks the job `running` once it has run for a heartbeat interval (a short job then
    /// costs one ledger write, its finish), then waits forever.
    async fn mark_running_later(&self, job: &JobMessage, attempt: u64) -> std::convert::Infallible {
        tokio::time::sleep(self.heartbeat_every()).await;
        match self
            .ledger
            .mark_running(job, &self.opts.worker_id, attempt)
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::info!("the job ended meanwhile (another delivery finished it)"),
            Err(e) => tracing::warn!(error = %e, "could not mark the job running"),
        }
        std::future::pending().await
    }

    /// Acknowledges the message: the fleet worker deletes it with its next batch (see
    /// [`super::held`]); under Lambda the event source mapping deletes it.
    fn delete(&self, msg: &Received) -> Ack {
        if let Some(deletes) = &self.deletes {
            deletes.push(&msg.receipt);
        }
        Ack::Done
    }

    /// Lets this very message come back after a delay that grows with `receive_count`. Each
    /// time counts against the queue's `maxReceiveCount`: for what should end in the
    /// dead-letter queue if it never works (a message for a newer worker, a failed
    /// dead-letter send), and for a second delivery of a job this process is running.
    async fn hand_back(&self, msg: &Received, receive_count: u32) -> Ack {
        let delay = self.opts.requeue_delay(receive_count);
        if let Err(e) = self
            .queue
            .set_visibility(&msg.receipt, delay.as_secs() as i32)
            .await
        {
            tracing::error!(error = %e, "could not set the retry delay; the message comes back after its visibility timeout");
        }
        Ack::Back
    }

    /// Sends a fresh copy of the message, delivered after a delay that doubles per retry (at
    /// most 15 minutes), and deletes this one. The copy starts at receive count 1, so waiting
    /// out an outage or throttling does not use up the queue's `maxReceiveCount` (which then
    /// only catches messages that crash workers); the retry count and when retrying began
    /// travel as message attributes, and a job gives up after [`WorkerOptions::give_up_after`].
    /// If the copy cannot be sent, this message is handed back instead.
    async fn retry_later(&self, msg: &Received) -> Ack {
        let retry = retries(msg) + 1;
        let delay = self.opts.requeue_delay(retry);
        let since = retrying_since(msg).unwrap_or_else(unix_now).to_string();
        let attrs = [
            (ATTR_RETRIES, retry.to_string()),
            (ATTR_RETRYING_SINCE, since),
        ];
        let attrs: Vec<(&str, &str)> = attrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        match self
            .queue
            .send_delayed(&msg.body, &attrs, delay.as_secs() as u32)
            .await
        {
            Ok(_) => self.delete(msg),
            Err(e) => {
                tracing::warn!(error = %e, "could not send the retry; handing the message back instead");
                self.hand_back(msg, msg.receive_count).await
            }
        }
    }

    /// Whether a failing job has had its last try: the queue would move it to the dead-letter
    /// queue at its next receive, or it has been retrying for longer than the give-up window.
    fn last_try(&self, msg: &Received) -> bool {
        let exhausted = self
            .max_receive_count
            .is_some_and(|max| msg.receive_count >= max);
        let too_long = retrying_since(msg).is_some_and(|since| {
            unix_now().saturating_sub(since) >= self.opts.give_up_after.as_secs()
        });
        exhausted || too_long
    }

    /// Makes the message visible at once (a draining worker gives it back).
    async fn release(&self, msg: &Received) -> Ack {
        if let Err(e) = self.queue.set_visibility(&msg.receipt, 0).await {
            tracing::error!(error = %e, "could not release the message; it comes back after its visibility timeout");
        }
        Ack::Back
    }

    /// Puts `body` (the job message — for a push event the job it became — or the raw body of
    /// a malformed message) on the dead-letter queue with its reason, then deletes `msg`.
    async fn dead_letter(
        &self,
        msg: &Received,
        body: &str,
        class: ErrorClass,
        reason: &str,
    ) -> Ack {
        let Some(dlq) = &self.dlq else {
            tracing::error!(
                "no dead-letter queue known; the message stays and SQS redrive decides"
            );
            return self.hand_back(msg, msg.receive_count).await;
        };
        match dlq
            .send(
                body,
                &[(ATTR_ERROR_CLASS, class.as_str()), (ATTR_ERROR, reason)],
            )
            .await
        {
            Ok(_) => self.delete(msg),
            Err(e) => {
                tracing::error!(error = %e, "could not dead-letter the message; it will come back");
                self.hand_back(msg, msg.receive_count).await
            }
        }
    }

    /// Puts the jobs one push event asks for on the jobs queue as job messages, then
    /// acknowledges the event. A failed send leaves the event to come back (the jobs' ids are
    /// the event's, so the ones already sent are not copied twice).
    async fn fan_out(&self, msg: &Received, jobs: &[JobMessage]) -> Ack {
        let bodies: Vec<String> = jobs.iter().map(JobMessage::to_json).collect();
        for chunk in bodies.chunks(SQS_BATCH) {
            if let Err(e) = self.queue.send_batch(chunk).await {
                tracing::error!(error = %e, "could not queue the push event's jobs; the event will come back");
                return self.retry_later(msg).await;
            }
        }
        tracing::info!(
            jobs = jobs.len(),
            "push event covered by several config entries; their jobs are queued"
        );
        self.delete(msg)
    }

    /// Records a rejected job `dead` when the ledger planned it (a config change since): its
    /// run then tells the truth. A forged job has no record and gets none.
    async fn reject(&self, job: &JobMessage) {
        let planned = match self.ledger.planned(job).await {
            Ok(planned) => planned,
            Err(e) => {
                tracing::warn!(error = %e, "could not read whether the ledger planned the rejected job");
                false
            }
        };
        if !planned {
            return;
        }
        let finish = Finish {
            state: JobState::Dead,
            error_class: Some(ErrorClass::RejectedJob),
            error: Some("the config no longer asks for this job".to_string()),
            ..Default::default()
        };
        if let Err(e) = self
            .ledger
            .finish_job(job, &self.opts.worker_id, &finish)
            .await
        {
            tracing::warn!(error = %e, "could not record the rejected job");
        }
    }
}

/// Retries a message has had (its attribute; 0 for a first delivery).
fn retries(msg: &Received) -> u32 {
    msg.attributes
        .get(ATTR_RETRIES)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// When retrying the message began (Unix seconds), if it is a retry.
fn retrying_since(msg: &Received) -> Option<u64> {
    msg.attributes
        .get(ATTR_RETRYING_SINCE)
        .and_then(|t| t.parse().ok())
}

fn unix_now() -> u64 {
    crate::time::unix_seconds(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::Running;

    #[test]
    fn a_job_that_panics_leaves_the_running_set_so_its_next_delivery_runs() {
        let set = std::sync::Mutex::new(std::collections::HashSet::new());
        let first = Running::claim(&set, "job-1").expect("not running yet");
        assert!(
            Running::claim(&set, "job-1").is_none(),
            "a second delivery waits"
        );
        drop(first);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _running = Running::claim(&set, "job-1").expect("free again");
            panic!("a bug in a job");
        }));
        assert!(panicked.is_err());
        assert!(
            Running::claim(&set, "job-1").is_some(),
            "the panicked job's id was released"
        );
    }
}
