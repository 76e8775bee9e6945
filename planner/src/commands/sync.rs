//! `sync` (one machine: plan and copy in this process) and `validate`.

use super::retry_policy;
use crate::cli::SyncArgs;
use anyhow::Context;
use ecr_sync::aws::Aws;
use ecr_sync::config_source;
use ecr_sync::console::{exit, shutdown_signal};
use ecr_sync::ledger::Ledger;
use ecr_sync::sync::{self, Outcome, Progress, SyncOptions, SyncReport};
use ecr_sync::vocab::{RepoEvent, RunState};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

pub use crate::progress::SyncBar;

/// `validate`: load the config, print every problem. Exit 0 or 2.
pub async fn run_validate(location: &str) -> u8 {
    match config_source::load(location, &Aws::new()).await {
        Ok(c) => {
            println!(
                "{location}: valid ({} repositories, mode {:?})",
                c.repos.len(),
                c.mode
            );
            exit::OK
        }
        Err(e) => {
            eprintln!("{e}");
            exit::USAGE
        }
    }
}

/// `sync`: load, run until done or a signal (drawing `bar` meanwhile, when given), print the
/// summary, write the report. Returns the exit code.
pub async fn run_sync(args: SyncArgs, bar: Option<SyncBar>) -> anyhow::Result<u8> {
    let aws = Aws::new();
    let cfg = match config_source::load(&args.config, &aws).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(exit::USAGE);
        }
    };
    let ledger = if args.dry_run {
        None
    } else {
        let path = args.ledger.clone().unwrap_or_else(Ledger::default_path);
        Some(
            Ledger::open(&path)
                .with_context(|| format!("opening the ledger at {}", path.display()))?,
        )
    };
    let opts = SyncOptions {
        dry_run: args.dry_run,
        jobs: args.concurrency.map(usize::from),
        config_source: args.config.clone(),
        retry: retry_policy(),
        stop_timeout: Duration::from_secs(args.stop_timeout_seconds),
        recheck_after: Duration::from_secs(args.recheck_after_seconds),
    };
    let progress = Arc::new(Progress::default());
    let drawing = bar.map(|b| b.start(progress.clone()));
    let result = sync::run(
        cfg,
        aws,
        &opts,
        ledger.as_ref(),
        &progress,
        shutdown_signal(),
    )
    .await;
    if let Some(d) = drawing {
        d.finish().await;
    }
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::USAGE);
        }
    };
    if args.dry_run {
        print_plan(&report);
    } else {
        print_failures(&report);
    }
    if let Some(path) = &args.report {
        let json = serde_json::to_vec_pretty(&report)?;
        std::fs::write(path, json)
            .with_context(|| format!("writing the report to {}", path.display()))?;
    }
    println!("{}", report.summary());
    Ok(if report.state == RunState::Interrupted {
        exit::INTERRUPTED
    } else if report.has_failures() {
        exit::JOBS_FAILED
    } else {
        exit::OK
    })
}

fn print_plan(report: &SyncReport) {
    for r in &report.repositories {
        println!(
            "repository {} -> {}: {}{}",
            r.source,
            r.destination,
            r.event,
            reason(&r.reason)
        );
    }
    for j in &report.jobs {
        let what = match j.outcome {
            Outcome::WouldCopy => "copy",
            Outcome::Skipped => "skip",
            Outcome::Failed => "FAIL",
            Outcome::Copied => "copied",
        };
        println!(
            "{what:6} {} -> {}{}",
            j.source,
            j.destination,
            reason(&j.reason)
        );
    }
}

fn print_failures(report: &SyncReport) {
    for r in report
        .repositories
        .iter()
        .filter(|r| matches!(r.event, RepoEvent::Failed | RepoEvent::Skipped))
    {
        eprintln!("repository {} {}{}", r.source, r.event, reason(&r.reason));
    }
    for j in report.jobs.iter().filter(|j| j.outcome == Outcome::Failed) {
        eprintln!(
            "failed {} -> {} [{}]{}",
            j.source,
            j.destination,
            j.error_class.map(|c| c.as_str()).unwrap_or("error"),
            reason(&j.reason)
        );
    }
}

fn reason(r: &Option<String>) -> String {
    r.as_ref().map(|r| format!(" ({r})")).unwrap_or_default()
}

/// Whether to draw the progress bar: stderr is a terminal and it is not disabled.
pub fn wants_progress(args: &SyncArgs) -> bool {
    !args.no_progress && std::io::stderr().is_terminal()
}
