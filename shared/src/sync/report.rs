//! What a run did, for people (the summary) and for scripts (the JSON report).

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// How one job ended.
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
    /// Failure class (`transient`, `auth`, `not_found`, `digest_mismatch`, `immutable_tag`, …).
    pub error_class: Option<String>,
    /// Bytes streamed for this job (shared blobs count once, for the job that moved them).
    pub bytes: u64,
    /// Wall time.
    pub duration_ms: u64,
}

/// A repository-level event: created, skipped (refresh mode), or failed before any tag.
#[derive(Debug, Clone, Serialize)]
pub struct RepoReport {
    /// `host/repo` at the source.
    pub source: String,
    /// `host/repo` at the destination.
    pub destination: String,
    /// `created`, `would_create`, `skipped` or `failed`.
    pub event: String,
    /// The reason, for skips and failures.
    pub reason: Option<String>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    /// Run id (also in the ledger).
    pub run_id: String,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// RFC 3339 start time.
    pub started_at: String,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Jobs copied.
    pub copied: u64,
    /// Jobs already up to date.
    pub skipped: u64,
    /// Jobs (and repositories) failed.
    pub failed: u64,
    /// Dry run: jobs that would be copied.
    pub would_copy: u64,
    /// Bytes streamed.
    pub bytes: u64,
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
            .filter(|r| r.event == "skipped")
            .count();
        if skipped_repos > 0 {
            format!("{first}; {skipped_repos} repositories skipped")
        } else {
            first
        }
    }
}

/// Live counters for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    /// Tags selected so far.
    pub planned: AtomicU64,
    /// Jobs finished, any outcome.
    pub done: AtomicU64,
    /// Jobs failed.
    pub failed: AtomicU64,
    /// Bytes streamed.
    pub bytes: Arc<AtomicU64>,
}

impl Progress {
    /// A one-line rendering: `jobs 120/500 (2 failed) | 1.2 GiB`.
    pub fn line(&self) -> String {
        let failed = self.failed.load(Ordering::Relaxed);
        let failed = if failed > 0 {
            format!(" ({failed} failed)")
        } else {
            String::new()
        };
        format!(
            "jobs {}/{}{failed} | {}",
            self.done.load(Ordering::Relaxed),
            self.planned.load(Ordering::Relaxed),
            human_bytes(self.bytes.load(Ordering::Relaxed))
        )
    }
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

/// RFC 3339 UTC time with seconds, without a date-time dependency.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant), valid for all dates after 1970.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// RFC 3339 UTC time with milliseconds (`2026-11-22T10:00:00.123Z`): fixed width, so it sorts
/// as text — the ledger's sort keys rely on that.
pub fn rfc3339_ms(t: SystemTime) -> String {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_millis())
        .unwrap_or(0);
    let secs = rfc3339(t);
    format!("{}.{ms:03}Z", &secs[..secs.len() - 1])
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
    use std::time::Duration;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_000_000)),
            "2026-11-18T11:06:40Z"
        );
    }

    #[test]
    fn bytes_are_humanised() {
        assert_eq!(human_bytes(800), "800 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(512 * 1024 * 1024), "512.0 MiB");
    }
}
