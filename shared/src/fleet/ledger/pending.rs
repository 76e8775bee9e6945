//! The jobs a plan left pending per destination repository, so that the next plan does not
//! send a job again while an earlier run's copy of it is still queued, running, retrying or
//! dead-lettered (re-planning would double a backlog, or dead-letter the same failure every
//! run).
//!
//! One item per destination repository (`PENDING#<repo>` / `#PENDING`), replaced by each plan
//! that has jobs for that repository: the run each job was sent in and when. It costs one write
//! per repository and plan, not one per job. The next plan reads it for the repositories it has
//! jobs for, and for each job found there reads that run's job item:
//! - no item yet: the message waits on the queue — pending, for at most [`QUEUED_AT_MOST`];
//! - `queued`, `running` or `failed`: its message is in flight or coming back — pending while
//!   the item changed within [`QUEUED_AT_MOST`];
//! - `dead`: in the dead-letter queue, for an operator — pending for [`DEAD_AT_MOST`] (the
//!   dead-letter queue's longest retention);
//! - `conflict` (an immutable destination tag held another image): pending while it still
//!   would be — the destination repository is immutable and the tag holds an image — so a
//!   conflict is recorded once, not again every run, and is sent again once resolved;
//! - `succeeded`, `skipped` or `superseded`: done, and the destination has changed since — sent
//!   again.
//!
//! The time bounds make the check fail open: a message that did vanish (a purged queue, a
//! retention that ran out) is sent again by a later plan, never left pending forever.

use super::items::{expires_at, get_s, job_item, job_key, now, s, Item};
use super::{FleetLedger, TableError};
use crate::vocab::JobState;
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

/// Longest a job counts as pending while it waits on the jobs queue or is retried.
pub const QUEUED_AT_MOST: Duration = Duration::from_secs(86_400);
/// Longest a dead job counts as pending (SQS keeps a message at most 14 days).
pub const DEAD_AT_MOST: Duration = Duration::from_secs(14 * 86_400);
/// Most jobs one repository's record holds (it must stay below DynamoDB's 400 KB item limit);
/// jobs past it are not remembered, so a later plan may send them again (a duplicate the
/// ledger acknowledges, never a loss).
pub const PENDING_LIMIT: usize = 10_000;

/// A job the next plan wants to send, and what it knows of the destination.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The job id.
    pub job_id: String,
    /// Where an earlier plan left it.
    pub sent: SentIn,
    /// The destination repository's tags are immutable and the tag holds an image (so an
    /// earlier immutable-tag conflict still stands).
    pub conflict_stands: bool,
}

/// Where a job was left pending: its run and when it was sent (RFC 3339; the record keeps one
/// time per run, the earliest, so a bound runs out no later than it would per job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentIn {
    /// The run that sent it.
    pub run_id: String,
    /// When that run recorded it.
    pub at: String,
}

/// The pending jobs of one destination repository, by job id.
#[derive(Debug, Clone, Default)]
pub struct PendingJobs(pub HashMap<String, SentIn>);

impl PendingJobs {
    fn from_item(item: &Item) -> PendingJobs {
        let mut jobs = HashMap::new();
        let Some(AttributeValue::M(runs)) = item.get("runs") else {
            return PendingJobs(jobs);
        };
        for (run_id, run) in runs {
            let Ok(run) = run.as_m() else { continue };
            let at = get_s(run, "at").unwrap_or_default();
            if let Some(AttributeValue::Ss(ids)) = run.get("jobs") {
                for id in ids {
                    let sent = SentIn {
                        run_id: run_id.clone(),
                        at: at.clone(),
                    };
                    jobs.insert(id.clone(), sent);
                }
            }
        }
        PendingJobs(jobs)
    }

    fn to_item(&self, destination: &str) -> Item {
        let mut runs: HashMap<&str, (&str, Vec<String>)> = HashMap::new();
        for (id, sent) in self.0.iter().take(PENDING_LIMIT) {
            let run = runs.entry(&sent.run_id).or_insert((&sent.at, Vec::new()));
            run.0 = run.0.min(&sent.at);
            run.1.push(id.clone());
        }
        let runs = runs
            .into_iter()
            .map(|(run_id, (at, ids))| {
                let run = HashMap::from([
                    ("at".to_string(), s(at)),
                    ("jobs".to_string(), AttributeValue::Ss(ids)),
                ]);
                (run_id.to_string(), AttributeValue::M(run))
            })
            .collect();
        HashMap::from([
            ("pk".to_string(), s(pending_pk(destination))),
            ("sk".to_string(), s("#PENDING")),
            ("kind".to_string(), s("pending")),
            ("destination".to_string(), s(destination)),
            ("runs".to_string(), AttributeValue::M(runs)),
            ("expires_at".to_string(), expires_at()),
        ])
    }
}

fn pending_pk(destination: &str) -> String {
    format!("PENDING#{destination}")
}

/// A timestamp `ago` before now, as the ledger writes them (fixed-width RFC 3339 UTC: they
/// compare as text).
fn ago(d: Duration) -> String {
    SystemTime::now()
        .checked_sub(d)
        .map(crate::time::rfc3339_ms)
        .unwrap_or_default()
}

impl FleetLedger {
    /// The jobs an earlier plan left pending for destination repository `destination`.
    pub async fn pending_jobs(&self, destination: &str) -> Result<PendingJobs, TableError> {
        let key = HashMap::from([
            ("pk".to_string(), s(pending_pk(destination))),
            ("sk".to_string(), s("#PENDING")),
        ]);
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.error("GetItem", e))?;
        Ok(out.item().map(PendingJobs::from_item).unwrap_or_default())
    }

    /// Which of `jobs` are still pending, by the rules in the module docs: one `BatchGetItem`
    /// per 100 jobs.
    pub async fn still_pending(&self, jobs: &[Candidate]) -> Result<HashSet<String>, TableError> {
        let queued_since = ago(QUEUED_AT_MOST);
        let dead_since = ago(DEAD_AT_MOST);
        let mut pending = HashSet::new();
        for chunk in jobs.chunks(100) {
            let keys = chunk
                .iter()
                .map(|c| job_key(&c.sent.run_id, &c.job_id))
                .collect();
            let found: HashMap<(String, String), _> = self
                .get_all(keys)
                .await?
                .iter()
                .map(job_item)
                .map(|j| ((j.run_id.clone(), j.job_id.clone()), j))
                .collect();
            for Candidate {
                job_id: id,
                sent,
                conflict_stands,
            } in chunk
            {
                let still = match found.get(&(sent.run_id.clone(), id.clone())) {
                    None => sent.at > queued_since,
                    Some(j) => match j.state {
                        JobState::Queued | JobState::Running | JobState::Failed => {
                            j.updated_at > queued_since
                        }
                        JobState::Dead => j.updated_at > dead_since,
                        JobState::Conflict => *conflict_stands,
                        JobState::Succeeded | JobState::Skipped | JobState::Superseded => false,
                    },
                };
                if still {
                    pending.insert(id.clone());
                }
            }
        }
        Ok(pending)
    }

    /// Whether a plan sent `job` and has not seen it end: its run's record of the destination
    /// repository lists it, or its item exists and has not ended.
    pub async fn planned(
        &self,
        job: &crate::fleet::message::JobMessage,
    ) -> Result<bool, TableError> {
        if let Some(item) = self.job(&job.run_id, &job.job_id).await? {
            return Ok(!item.state.is_final());
        }
        let pending = self.pending_jobs(&job.destination.repository).await?;
        Ok(pending
            .0
            .get(&job.job_id)
            .is_some_and(|sent| sent.run_id == job.run_id))
    }

    /// Replaces the pending-jobs record of each destination repository given.
    pub async fn record_pending(
        &self,
        repos: &HashMap<String, PendingJobs>,
    ) -> Result<(), TableError> {
        let items = repos
            .iter()
            .map(|(destination, jobs)| jobs.to_item(destination))
            .collect();
        self.write_all(items).await
    }
}

/// When a job is recorded as sent now.
pub fn sent_now(run_id: &str) -> SentIn {
    SentIn {
        run_id: run_id.to_string(),
        at: now(),
    }
}
