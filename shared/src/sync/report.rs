//! What a run did, for people (the summary) and for scripts (the JSON report).

use crate::vocab::{ErrorClass, RepoEvent, RunState};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// How one job ended, in the report's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Copied.
    Copied,
    /// Already up to date.
    Skipped,
    /// Failed; see `reason`.
    Failed,
    /// Dry run: would be copied.
    WouldCopy,
}

/// One job in the report.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    /// Stable job id.
    pub job_id: String,
    /// `host/repo:tag` at the source.
    pub source: String,
    /// `host/repo:tag` at the destination.
    pub destination: String,
    /// Source digest, when resolved.
    pub digest: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// Why it was skipped or failed.
    pub reason: Option<String>,
    /// Failure class.
    pub error_class: Option<ErrorClass>,
    /// Bytes streamed for this job (shared blobs count once, for the job that moved them).
    pub bytes: u64,
    /// Referrers (signatures, attestations, SBOMs) copied with the image, or to an image that
    /// was up to date.
    pub referrers: u32,
    /// Wall time.
    pub duration_ms: u64,
    /// When it ended: milliseconds from the start of the run (what a timeline of the run is
    /// drawn from).
    pub finished_ms: u64,
}

/// A repository-level event: created, skipped (refresh mode), or failed before any tag.
#[derive(Debug, Clone, Serialize)]
pub struct RepoReport {
    /// `host/repo` at the source.
    pub source: String,
    /// `host/repo` at the destination.
    pub destination: String,
    /// What happened to it.
    pub event: RepoEvent,
    /// The reason, for skips and failures.
    pub reason: Option<String>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    /// Run id (also in the ledger).
    pub run_id: String,
    /// `finished`, or `interrupted` by a signal (then the jobs listed are what finished).
    pub state: RunState,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// RFC 3339 start time.
    pub started_at: String,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Tags the globs selected.
    pub selected: u64,
    /// Jobs copied.
    pub copied: u64,
    /// Jobs already up to date.
    pub skipped: u64,
    /// Jobs (and repositories) failed.
    pub failed: u64,
    /// Dry run: jobs that would be copied.
    pub would_copy: u64,
    /// Copies still running when an interrupted run's stop timeout ended; not recorded.
    pub cancelled: u64,
    /// Bytes streamed.
    pub bytes: u64,
    /// Referrers copied, in all.
    pub referrers: u64,
    /// HTTP requests sent, by registry host.
    pub requests: BTreeMap<String, u64>,
    /// Of those, blob requests (HEAD, GET, upload, mount, PUT), by registry host.
    pub blob_requests: BTreeMap<String, u64>,
    /// Peak resident memory of this process, in bytes (Linux `VmHWM`).
    pub peak_rss_bytes: Option<u64>,
    /// Repository-level events.
    pub repositories: Vec<RepoReport>,
    /// Every job, sorted by destination.
    pub jobs: Vec<JobReport>,
}

impl SyncReport {
    /// Whether anything failed (exit code 1).
    pub fn has_failures(&self) -> bool {
        self.failed > 0
    }

    /// One line for the end of a run.
    pub fn summary(&self) -> String {
        let secs = self.duration_ms as f64 / 1000.0;
        let first = if self.dry_run {
            format!(
                "dry run: {} to copy, {} up to date, {} failed",
                self.would_copy, self.skipped, self.failed
            )
        } else {
            format!(
                "{} copied, {} up to date, {} failed, {} in {secs:.1}s",
                self.copied,
                self.skipped,
                self.failed,
                human_bytes(self.bytes)
            )
        };
        let skipped_repos = self
            .repositories
            .iter()
            .filter(|r| r.event == RepoEvent::Skipped)
            .count();
        let mut line = first;
        if self.referrers > 0 {
            line.push_str(&format!("; {} referrers copied", self.referrers));
        }
        if skipped_repos > 0 {
            line.push_str(&format!("; {skipped_repos} repositories skipped"));
        }
        if self.state == RunState::Interrupted {
            let ended = self.copied + self.skipped + self.would_copy + self.failed;
            line = format!(
                "interrupted: {line}; {ended} of {} selected tags handled, {} copies cut off",
                self.selected, self.cancelled
            );
        }
        line
    }
}

/// Live counters for a progress display (the planner's progress bar reads them a few times a
/// second).
#[derive(Debug, Default)]
pub struct Progress {
    /// Tags selected so far: grows while repositories are listed.
    pub planned: AtomicU64,
    /// Jobs finished, any outcome.
    pub done: AtomicU64,
    /// Jobs failed.
    pub failed: AtomicU64,
    /// Bytes streamed.
    pub bytes: Arc<AtomicU64>,
}

/// `1.5 GiB`, `12.0 MiB`, `800 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// This process's peak resident set size, from `/proc/self/status`.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_humanised() {
        assert_eq!(human_bytes(800), "800 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(512 * 1024 * 1024), "512.0 MiB");
    }
}
