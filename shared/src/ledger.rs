//! The one-machine ledger: every run and every job outcome in a local SQLite file, so a rerun (or
//! a person) can see what happened. Writes are tiny and synchronous (WAL, `synchronous=NORMAL`).

use crate::job::CopyJob;
use crate::vocab::{ErrorClass, JobState, RunState};
use rusqlite::{params, Connection};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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

    /// Records a job's outcome (inserting or replacing its row for this run).
    pub fn record_job(&self, run_id: &str, job: &CopyJob, row: &JobRow) -> Result<(), LedgerError> {
        self.conn
            .lock()
            .unwrap()
            .execute(
                "INSERT OR REPLACE INTO jobs
                 (run_id, job_id, source, destination, digest, state, bytes, duration_ms, error_class, reason, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    run_id,
                    job.id(),
                    job.source_ref(),
                    job.destination_ref(),
                    job.source_digest.as_ref().map(|d| d.to_string()),
                    row.state.as_str(),
                    row.bytes as i64,
                    row.duration_ms as i64,
                    row.error_class.map(ErrorClass::as_str),
                    row.reason,
                    row.at
                ],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Records the end of a run: its state (`finished` or `interrupted`) and totals.
    pub fn finish_run(
        &self,
        run_id: &str,
        finished_at: &str,
        report: &RunTotals,
    ) -> Result<(), LedgerError> {
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

    /// The jobs of a run, ordered by destination.
    pub fn jobs(&self, run_id: &str) -> Result<Vec<JobRecord>, LedgerError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

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
}
