//! The unit of work: one tag of one source repository, copied to one destination repository;
//! what planning knows about it when it is handed to a runner; how running it ended; and what
//! planning did with a whole repository.

use crate::digest::Digest;
use crate::manifest::Manifest;
use crate::vocab::{ErrorClass, RepoEvent};

/// One (source repo, tag, source digest) → (destination repo, tag) copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyJob {
    /// Source registry host.
    pub source_registry: String,
    /// Source repository path.
    pub source_repo: String,
    /// The tag, the same at both ends.
    pub tag: String,
    /// The digest the source tag pointed at when planned (`None` if it could not be resolved).
    pub source_digest: Option<Digest>,
    /// Destination registry host.
    pub destination_registry: String,
    /// Destination repository path.
    pub destination_repo: String,
}

impl CopyJob {
    /// A stable id from destination repo, tag and source digest: planning twice yields the same
    /// ids, and a retag at the source yields a new one.
    pub fn id(&self) -> String {
        let key = format!(
            "{}/{}:{}@{}",
            self.destination_registry,
            self.destination_repo,
            self.tag,
            self.source_digest
                .as_ref()
                .map(Digest::as_str)
                .unwrap_or("")
        );
        Digest::of(key.as_bytes()).hex()[..32].to_string()
    }

    /// The id of the job one push event asks for (EventBridge's event id): each event is its
    /// own job, so a tag pushed A → B → A in one day is copied every time, while a redelivered
    /// event stays the one job.
    pub fn event_job_id(&self, event_id: &str) -> String {
        let key = format!("{}#event:{event_id}", self.id());
        Digest::of(key.as_bytes()).hex()[..32].to_string()
    }

    /// `host/repo:tag` at the source.
    pub fn source_ref(&self) -> String {
        format!("{}/{}:{}", self.source_registry, self.source_repo, self.tag)
    }

    /// `host/repo:tag` at the destination.
    pub fn destination_ref(&self) -> String {
        format!(
            "{}/{}:{}",
            self.destination_registry, self.destination_repo, self.tag
        )
    }
}

/// What the destination tag held when the job was planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Not known (a job from the queue may be old): the runner asks the destination.
    Unchecked,
    /// The tag did not exist.
    Absent,
    /// The tag pointed at this digest.
    Holds(Digest),
}

/// A job ready to run: the copy, and what planning learned that the runner can use.
#[derive(Debug, Clone)]
pub struct PlannedJob {
    /// The copy; its source digest is set.
    pub job: CopyJob,
    /// Whether the destination repository's tags are immutable.
    pub immutable_tags: bool,
    /// Whether the destination repository may already hold some of the content (it had tags
    /// when planned, or this is a redelivery): blobs and child manifests are checked before
    /// they are sent.
    pub dst_may_hold_blobs: bool,
    /// What the destination tag held when planned.
    pub destination: Destination,
    /// The source manifest, when planning already read it (one-machine runs GET instead of
    /// HEAD, so a copy does not read it twice).
    pub manifest: Option<Manifest>,
    /// Right before moving the destination tag, check that the source tag still points at the
    /// job's digest, and end [`JobOutcome::Superseded`] when it does not. The fleet's jobs may
    /// be old (queues do not keep order, retries wait, events arrive late); a one-machine run
    /// resolved the tag a moment ago.
    pub confirm_source_tag: bool,
    /// When planning found the source repository without a referrers API: the tag-schema
    /// tags (`sha256-<hex>`) its listing showed, so a subject without one is known to have no
    /// referrers without asking (`None`: ask).
    pub source_schema_tags: Option<std::sync::Arc<std::collections::HashSet<String>>>,
}

/// Why a job failed: its class and a reason a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    /// The class (transient ones are retried).
    pub class: ErrorClass,
    /// What went wrong, naming the image, blob or setting.
    pub reason: String,
}

impl JobError {
    /// An error of `class` with `reason`.
    pub fn new(class: ErrorClass, reason: impl Into<String>) -> JobError {
        JobError {
            class,
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.class, self.reason)
    }
}

/// How running a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// The image was copied; bytes streamed (shared blobs count once, for the job that moved them).
    Copied {
        /// Bytes streamed, the referrers' included.
        bytes: u64,
        /// Referrers copied with it (signatures, attestations, SBOMs).
        referrers: u32,
    },
    /// The destination already held the source digest; referrers it lacked were copied.
    UpToDate {
        /// Bytes streamed for referrers.
        bytes: u64,
        /// Referrers copied.
        referrers: u32,
    },
    /// Dry run: it would be copied.
    WouldCopy,
    /// It failed.
    Failed(JobError),
    /// Not copied: the source tag no longer points at the job's digest (why, for the ledger).
    Superseded(String),
}

impl JobOutcome {
    /// Bytes streamed.
    pub fn bytes(&self) -> u64 {
        match self {
            JobOutcome::Copied { bytes, .. } | JobOutcome::UpToDate { bytes, .. } => *bytes,
            _ => 0,
        }
    }

    /// Referrers copied.
    pub fn referrers(&self) -> u32 {
        match self {
            JobOutcome::Copied { referrers, .. } | JobOutcome::UpToDate { referrers, .. } => {
                *referrers
            }
            _ => 0,
        }
    }

    /// Up to date, nothing copied: planning's verdict without running the job.
    pub const UP_TO_DATE: JobOutcome = JobOutcome::UpToDate {
        bytes: 0,
        referrers: 0,
    };

    /// The failure, if it failed.
    pub fn error(&self) -> Option<&JobError> {
        match self {
            JobOutcome::Failed(e) => Some(e),
            _ => None,
        }
    }
}

/// What planning did with one configured repository pair.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RepoPlan {
    /// `host/repo` at the source.
    pub source: String,
    /// Destination repository.
    pub destination: String,
    /// Tags handed on as jobs.
    pub planned: u64,
    /// Tags already equal at the destination.
    pub up_to_date: u64,
    /// Tags that could not be resolved.
    #[serde(default)]
    pub failed: u64,
    /// Fleet: tags whose job (same digest) an earlier run still has pending or dead-lettered,
    /// so it was not queued again (counted in `planned` by the planning stream, taken out by
    /// the fleet's sink).
    #[serde(default)]
    pub pending_elsewhere: u64,
    /// What happened to the repository.
    pub event: Option<RepoEvent>,
    /// Why it was skipped or failed.
    pub reason: Option<String>,
}

impl RepoPlan {
    /// Whether the repository itself failed before any tag was planned (tag failures are
    /// counted in `failed` and, in one-machine runs, reported as failed jobs).
    pub fn failed_whole(&self) -> bool {
        self.event == Some(RepoEvent::Failed) && self.planned + self.up_to_date + self.failed == 0
    }
}

/// Why an up-to-date job did nothing, as ledgers record it.
pub const UP_TO_DATE: &str = "up to date";
/// Reason recorded for a tag found up to date by the ledger's recent sighting of it.
pub const UP_TO_DATE_RECENTLY: &str =
    "up to date (seen recently; the destination still lists the tag)";

#[cfg(test)]
mod tests {
    use super::*;

    fn job(tag: &str, digest: &[u8]) -> CopyJob {
        CopyJob {
            source_registry: "src.example".into(),
            source_repo: "a/b".into(),
            tag: tag.into(),
            source_digest: Some(Digest::of(digest)),
            destination_registry: "dst.example".into(),
            destination_repo: "b".into(),
        }
    }

    #[test]
    fn ids_are_stable_and_change_with_tag_or_digest() {
        assert_eq!(job("v1", b"x").id(), job("v1", b"x").id());
        assert_ne!(job("v1", b"x").id(), job("v2", b"x").id());
        assert_ne!(job("v1", b"x").id(), job("v1", b"y").id());
        assert_eq!(job("v1", b"x").id().len(), 32);
    }
}
