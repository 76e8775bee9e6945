//! The unit of work: one tag of one source repository, copied to one destination repository.

use crate::digest::Digest;

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

/// Where a job ended (or stands).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Being worked on.
    Running,
    /// Copied.
    Succeeded,
    /// Nothing to do (already up to date) — or, in a dry run, what would be copied.
    Skipped,
    /// Failed with a recorded reason.
    Failed,
}

impl JobState {
    /// The name stored in ledgers and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Skipped => "skipped",
            JobState::Failed => "failed",
        }
    }
}

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
