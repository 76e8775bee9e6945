//! The one-machine ledger: every run and every job outcome in a local SQLite file, so a rerun (or
//! a person) can see what happened. WAL with `synchronous=NORMAL`; job rows are written in
//! batches — one transaction per [`FLUSH_ROWS`] rows or [`FLUSH_EVERY`], whichever comes first,
//! and at the end of the run — because a transaction per row was a tenth of a warm run's CPU. A
//! process killed outright loses at most those unwritten rows (the images themselves are at the
//! destination, and the next run finds them up to date); a stopped run flushes everything.
//!
//! It also remembers, per destination tag, the digest a run last saw it hold (copied there, or
//! found by asking the destination) and when ([`Ledger::verified_tags`]): a warm run trusts that
//! for a while instead of asking the destination again for every tag.

use crate::digest::Digest;
use crate::job::CopyJob;
use crate::time::unix_seconds;
use crate::vocab::{ErrorClass, JobState, RunState};
use rusqlite::{params, Connection};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Job rows written per transaction at most.
pub const FLUSH_ROWS: usize = 128;
/// Longest a recorded job row waits before it is written (checked when the next one arrives).
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// A job row waiting to be written: its run, when, the row, and the destination tag's digest
/// when the job saw it there.
struct Pending {
    run_id: String,
    at: String,
    record: JobRecord,
    verified: Option<VerifiedTag>,
}

/// A destination tag seen holding a digest, at a Unix time in seconds.
struct VerifiedTag {
    registry: String,
    repository: String,
    tag: String,
    digest: String,
    at: i64,
}

/// A ledger that could not be opened or written.
#[derive(Debug, thiserror::Error)]
#[error("ledger {path}: {source}")]
pub struct LedgerError {
    /// The database file.
    pub path: String,
    /// What failed: SQLite, or creating the file's directory.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// One job's outcome as stored and read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    /// The job id.
    pub job_id: String,
    /// `host/repo:tag` at the source.
    pub source: String,
    /// `host/repo:tag` at the destination.
    pub destination: String,
    /// The source digest, when known.
    pub digest: Option<String>,
    /// `succeeded`, `skipped` or `failed`.
    pub state: JobState,
    /// Bytes streamed.
    pub bytes: u64,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Error class when failed.
    pub error_class: Option<ErrorClass>,
    /// Reason for a skip, or the error.
    pub reason: Option<String>,
}

/// One job's outcome to record.
#[derive(Debug, Clone)]
pub struct JobRow<'a> {
    /// How it ended.
    pub state: JobState,
    /// Bytes streamed.
    pub bytes: u64,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Error class when failed.
    pub error_class: Option<ErrorClass>,
    /// Reason for a skip, or the error.
    pub reason: Option<&'a str>,
    /// When (RFC 3339).
    pub at: &'a str,
    /// The job saw the destination tag hold the source digest: it copied it there, or asked
    /// the destination. Remembered for [`Ledger::verified_tags`].
    pub verified: bool,
}

/// How a run ended, for [`Ledger::finish_run`].
#[derive(Debug, Clone, Copy)]
pub struct RunTotals {
    /// `finished` or `interrupted`.
    pub state: RunState,
    /// Jobs copied.
    pub copied: u64,
    /// Jobs already up to date.
    pub skipped: u64,
    /// Jobs (and repositories) failed.
    pub failed: u64,
    /// Bytes streamed.
    pub bytes: u64,
}

/// The SQLite ledger.
pub struct Ledger {
    path: PathBuf,
    conn: Mutex<Connection>,
    pending: Mutex<(Vec<Pending>, Instant)>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    config      TEXT NOT NULL,
    state       TEXT NOT NULL DEFAULT 'running',
    copied      INTEGER NOT NULL DEFAULT 0,
    skipped     INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    bytes       INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS jobs (
    run_id      TEXT NOT NULL REFERENCES runs(run_id),
    job_id      TEXT NOT NULL,
    source      TEXT NOT NULL,
    destination TEXT NOT NULL,
    digest      TEXT,
    state       TEXT NOT NULL,
    bytes       INTEGER NOT NULL DEFAULT 0,
    duration_ms INTEGER NOT NULL DEFAULT 0,
    error_class TEXT,
    reason      TEXT,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (run_id, job_id)
);
CREATE INDEX IF NOT EXISTS jobs_by_destination ON jobs(destination, updated_at);
CREATE TABLE IF NOT EXISTS verified_tags (
    registry    TEXT NOT NULL,
    repository  TEXT NOT NULL,
    tag         TEXT NOT NULL,
    digest      TEXT NOT NULL,
    verified_at INTEGER NOT NULL,
    PRIMARY KEY (registry, repository, tag)
) WITHOUT ROWID;
";

impl Ledger {
    /// Opens (creating if needed) the ledger at `path`, with its parent directory.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        let err = |source: rusqlite::Error| LedgerError {
            path: path.display().to_string(),
            source: source.into(),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| LedgerError {
                path: path.display().to_string(),
                source: e.into(),
            })?;
        }
        let conn = Connection::open(path).map_err(err)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;",
        )
        .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        // Ledgers written before runs had a state: add the column (their runs read `running`
        // when unfinished, which is what they were).
        let has_state: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('runs') WHERE name = 'state'")
            .and_then(|mut s| s.exists([]))
            .map_err(err)?;
        if !has_state {
            conn.execute_batch("ALTER TABLE runs ADD COLUMN state TEXT NOT NULL DEFAULT 'running'")
                .map_err(err)?;
        }
        Ok(Ledger {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            pending: Mutex::new((Vec::new(), Instant::now())),
        })
    }

    /// The default location: `$XDG_STATE_HOME/ecr-sync/ledger.db`, else
    /// `~/.local/state/ecr-sync/ledger.db`, else `./ecr-sync-ledger.db`.
    pub fn default_path() -> PathBuf {
        let base = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")));
        match base {
            Some(b) => b.join("ecr-sync").join("ledger.db"),
            None => PathBuf::from("ecr-sync-ledger.db"),
        }
    }

    fn err(&self, source: rusqlite::Error) -> LedgerError {
        LedgerError {
            path: self.path.display().to_string(),
            source: source.into(),
        }
    }

    /// Records the start of a run.
    pub fn start_run(
        &self,
        run_id: &str,
        started_at: &str,
        config: &str,
    ) -> Result<(), LedgerError> {
        self.conn
            .lock()
            .unwrap()
            .execute(
                "INSERT INTO runs (run_id, started_at, config) VALUES (?1, ?2, ?3)",
                params![run_id, started_at, config],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Records a job's outcome (inserting or replacing its row for this run). Rows are written
    /// in batches (see the module docs); [`Ledger::flush`] and [`Ledger::finish_run`] write the
    /// rest.
    pub fn record_job(&self, run_id: &str, job: &CopyJob, row: &JobRow) -> Result<(), LedgerError> {
        let due = {
            let mut pending = self.pending.lock().unwrap();
            pending.0.push(Pending {
                run_id: run_id.to_string(),
                at: row.at.to_string(),
                record: JobRecord {
                    job_id: job.id(),
                    source: job.source_ref(),
                    destination: job.destination_ref(),
                    digest: job.source_digest.as_ref().map(|d| d.to_string()),
                    state: row.state,
                    bytes: row.bytes,
                    duration_ms: row.duration_ms,
                    error_class: row.error_class,
                    reason: row.reason.map(str::to_string),
                },
                verified: match (&job.source_digest, row.verified) {
                    (Some(d), true) => Some(VerifiedTag {
                        registry: job.destination_registry.clone(),
                        repository: job.destination_repo.clone(),
                        tag: job.tag.clone(),
                        digest: d.to_string(),
                        at: unix_seconds(SystemTime::now()) as i64,
                    }),
                    _ => None,
                },
            });
            pending.0.len() >= FLUSH_ROWS || pending.1.elapsed() >= FLUSH_EVERY
        };
        if due {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the job rows recorded so far, in one transaction.
    pub fn flush(&self) -> Result<(), LedgerError> {
        let rows = {
            let mut pending = self.pending.lock().unwrap();
            pending.1 = Instant::now();
            std::mem::take(&mut pending.0)
        };
        if rows.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.lock().unwrap();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO jobs
                     (run_id, job_id, source, destination, digest, state, bytes, duration_ms, error_class, reason, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )
                .map_err(|e| self.err(e))?;
            let mut verified = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO verified_tags (registry, repository, tag, digest, verified_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(|e| self.err(e))?;
            for Pending {
                run_id,
                at,
                record: r,
                verified: v,
            } in &rows
            {
                if let Some(v) = v {
                    verified
                        .execute(params![v.registry, v.repository, v.tag, v.digest, v.at])
                        .map_err(|e| self.err(e))?;
                }
                insert
                    .execute(params![
                        run_id,
                        r.job_id,
                        r.source,
                        r.destination,
                        r.digest,
                        r.state.as_str(),
                        r.bytes as i64,
                        r.duration_ms as i64,
                        r.error_class.map(ErrorClass::as_str),
                        r.reason,
                        at
                    ])
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Records the end of a run: its state (`finished` or `interrupted`) and totals.
    pub fn finish_run(
        &self,
        run_id: &str,
        finished_at: &str,
        report: &RunTotals,
    ) -> Result<(), LedgerError> {
        self.flush()?;
        self.conn
            .lock()
            .unwrap()
            .execute(
                "UPDATE runs SET finished_at = ?2, state = ?3, copied = ?4, skipped = ?5, failed = ?6, bytes = ?7 WHERE run_id = ?1",
                params![
                    run_id,
                    finished_at,
                    report.state.as_str(),
                    report.copied as i64,
                    report.skipped as i64,
                    report.failed as i64,
                    report.bytes as i64
                ],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// A run's state.
    pub fn run_state(&self, run_id: &str) -> Result<Option<RunState>, LedgerError> {
        let conn = self.conn.lock().unwrap();
        let state: Option<String> = conn
            .query_row("SELECT state FROM runs WHERE run_id = ?1", [run_id], |r| {
                r.get(0)
            })
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })
            .map_err(|e| self.err(e))?;
        state
            .map(|s| {
                s.parse()
                    .map_err(|e: crate::vocab::UnknownWord| LedgerError {
                        path: self.path.display().to_string(),
                        source: e.into(),
                    })
            })
            .transpose()
    }

    /// The jobs of a run, ordered by destination (rows still waiting are written first).
    pub fn jobs(&self, run_id: &str) -> Result<Vec<JobRecord>, LedgerError> {
        self.flush()?;
        let conn = self.conn.lock().unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT job_id, source, destination, digest, state, bytes, duration_ms, error_class, reason
                 FROM jobs WHERE run_id = ?1 ORDER BY destination",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([run_id], |r| {
                let word = |i: usize, text: String| {
                    rusqlite::Error::FromSqlConversionFailure(
                        i,
                        rusqlite::types::Type::Text,
                        format!("{text:?} is not a known word").into(),
                    )
                };
                let state: String = r.get(4)?;
                let class: Option<String> = r.get(7)?;
                Ok(JobRecord {
                    job_id: r.get(0)?,
                    source: r.get(1)?,
                    destination: r.get(2)?,
                    digest: r.get(3)?,
                    state: state.parse().map_err(|_| word(4, state))?,
                    bytes: r.get::<_, i64>(5)? as u64,
                    duration_ms: r.get::<_, i64>(6)? as u64,
                    error_class: class
                        .map(|c| c.parse().map_err(|_| word(7, c)))
                        .transpose()?,
                    reason: r.get(8)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// The tags of one destination repository that a run saw holding a digest at `since` or
    /// later, with that digest (rows still waiting are written first).
    pub fn verified_tags(
        &self,
        registry: &str,
        repository: &str,
        since: SystemTime,
    ) -> Result<HashMap<String, Digest>, LedgerError> {
        self.flush()?;
        let conn = self.conn.lock().unwrap();
        let mut stmt = conn
            .prepare_cached(
                "SELECT tag, digest FROM verified_tags
                 WHERE registry = ?1 AND repository = ?2 AND verified_at >= ?3",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(
                params![registry, repository, unix_seconds(since) as i64],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
            )
            .map_err(|e| self.err(e))?;
        let mut out = HashMap::new();
        for row in rows {
            let (tag, digest) = row.map_err(|e| self.err(e))?;
            // A row this version cannot read is only a lost shortcut: the tag is asked for.
            if let Ok(d) = Digest::parse(&digest) {
                out.insert(tag, d);
            }
        }
        Ok(out)
    }

    /// Run ids, newest first.
    pub fn runs(&self) -> Result<Vec<String>, LedgerError> {
        let conn = self.conn.lock().unwrap();
        let mut stmt = conn
            .prepare("SELECT run_id FROM runs ORDER BY started_at DESC, rowid DESC")
            .map_err(|e| self.err(e))?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }
}

impl Drop for Ledger {
    /// Writes what is still waiting, so no exit path (an error, an early return) loses rows.
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::error!(error = %e, "could not write the last job rows to the ledger");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_jobs_round_trip_and_a_job_row_is_replaced_not_duplicated() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&dir.path().join("sub/ledger.db")).unwrap();
        ledger
            .start_run("r1", "2026-01-01T00:00:00Z", "cfg.json")
            .unwrap();
        let job = CopyJob {
            source_registry: "s".into(),
            source_repo: "a".into(),
            tag: "v1".into(),
            source_digest: Some(Digest::of(b"x")),
            destination_registry: "d".into(),
            destination_repo: "a".into(),
        };
        let row = |state, class, reason| JobRow {
            state,
            bytes: 5,
            duration_ms: 7,
            error_class: class,
            reason,
            at: "t",
            verified: false,
        };
        ledger
            .record_job("r1", &job, &row(JobState::Skipped, None, None))
            .unwrap();
        ledger
            .record_job(
                "r1",
                &job,
                &row(JobState::Failed, Some(ErrorClass::Auth), Some("denied")),
            )
            .unwrap();
        assert_eq!(ledger.run_state("r1").unwrap(), Some(RunState::Running));
        let jobs = ledger.jobs("r1").unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].state, JobState::Failed);
        assert_eq!(jobs[0].error_class, Some(ErrorClass::Auth));
        assert_eq!(jobs[0].destination, "d/a:v1");
        assert_eq!(ledger.runs().unwrap(), vec!["r1".to_string()]);
    }

    #[test]
    fn job_rows_are_written_in_batches_and_none_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let ledger = Ledger::open(&path).unwrap();
        ledger.start_run("r", "t", "cfg").unwrap();
        let job = |i: usize| CopyJob {
            source_registry: "s".into(),
            source_repo: "a".into(),
            tag: format!("v{i}"),
            source_digest: Some(Digest::of(i.to_string().as_bytes())),
            destination_registry: "d".into(),
            destination_repo: "a".into(),
        };
        let row = JobRow {
            state: JobState::Skipped,
            bytes: 0,
            duration_ms: 0,
            error_class: None,
            reason: None,
            at: "t",
            verified: false,
        };
        let written = || {
            Connection::open(&path)
                .unwrap()
                .query_row("SELECT count(*) FROM jobs", [], |r| r.get::<_, i64>(0))
                .unwrap()
        };
        for i in 0..FLUSH_ROWS - 1 {
            ledger.record_job("r", &job(i), &row).unwrap();
        }
        assert_eq!(written(), 0, "rows wait for a full batch");
        ledger.record_job("r", &job(FLUSH_ROWS), &row).unwrap();
        assert_eq!(
            written(),
            FLUSH_ROWS as i64,
            "a full batch is one transaction"
        );
        for i in 0..10 {
            ledger.record_job("r", &job(1000 + i), &row).unwrap();
        }
        drop(ledger);
        assert_eq!(
            written(),
            FLUSH_ROWS as i64 + 10,
            "dropping the ledger writes the rest"
        );
    }

    #[test]
    fn a_destination_tag_is_remembered_only_when_seen_and_only_since_the_given_time() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&dir.path().join("ledger.db")).unwrap();
        ledger.start_run("r", "t", "cfg").unwrap();
        let job = |tag: &str, digest: &[u8]| CopyJob {
            source_registry: "s".into(),
            source_repo: "a".into(),
            tag: tag.into(),
            source_digest: Some(Digest::of(digest)),
            destination_registry: "d".into(),
            destination_repo: "a".into(),
        };
        let row = |state, verified| JobRow {
            state,
            bytes: 0,
            duration_ms: 0,
            error_class: None,
            reason: None,
            at: "t",
            verified,
        };
        let before = SystemTime::now() - Duration::from_secs(5);
        ledger
            .record_job("r", &job("copied", b"1"), &row(JobState::Succeeded, true))
            .unwrap();
        ledger
            .record_job("r", &job("failed", b"2"), &row(JobState::Failed, false))
            .unwrap();
        ledger
            .record_job("r", &job("moved", b"3"), &row(JobState::Skipped, true))
            .unwrap();
        ledger
            .record_job("r", &job("moved", b"4"), &row(JobState::Succeeded, true))
            .unwrap();
        let seen = ledger.verified_tags("d", "a", before).unwrap();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen["copied"], Digest::of(b"1"));
        assert_eq!(
            seen["moved"],
            Digest::of(b"4"),
            "the latest digest replaces the older"
        );
        assert!(ledger
            .verified_tags("d", "other", before)
            .unwrap()
            .is_empty());
        let later = SystemTime::now() + Duration::from_secs(5);
        assert!(
            ledger.verified_tags("d", "a", later).unwrap().is_empty(),
            "older sightings are not returned"
        );
    }
}
