//! `plan`: the config into jobs on the queue, recorded as a run.

use super::{retry_policy, Fleet, Usage};
use crate::cli::PlanArgs;
use anyhow::{bail, Context as _};
use ecr_sync::aws::Aws;
use ecr_sync::config_source;
use ecr_sync::console::exit;
use ecr_sync::fleet::plan::{plan, PlanError, PlanOptions};
use ecr_sync::vocab::RepoEvent;

/// Runs `plan`.
pub async fn run(args: PlanArgs, aws: &Aws) -> anyhow::Result<u8> {
    let fleet = Fleet::open(&args.fleet, aws).await;
    let (queue, ledger) = (fleet.queue()?, fleet.ledger()?);
    let (cfg, version) = match config_source::load_versioned(&args.config, aws).await {
        Ok(c) => c,
        Err(e) => bail!(Usage(e.to_string())),
    };
    let opts = PlanOptions {
        config_source: args.config.clone(),
        config_version: version,
        retry: retry_policy(),
    };
    let report = match plan(&cfg, aws, &opts, queue, ledger).await {
        Ok(r) => r,
        Err(PlanError::Setup(e)) => bail!(Usage(e.to_string())),
        Err(e) => return Err(e).context("planning stopped"),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for r in report.repositories.iter().filter(|r| r.reason.is_some()) {
            println!(
                "{:<8} {} -> {}: {}",
                r.event.unwrap_or(RepoEvent::Planned),
                r.source,
                r.destination,
                r.reason.as_deref().unwrap_or("")
            );
        }
        println!(
            "run {}: {} jobs queued, {} tags up to date, {} pending or dead-lettered from earlier runs, {} repositories failed, {} skipped ({:.1} s)",
            report.run_id,
            report.planned,
            report.up_to_date,
            report.pending_elsewhere,
            report.failed_repos,
            report.skipped_repos,
            report.duration_ms as f64 / 1000.0
        );
    }
    Ok(if report.failed_repos > 0 {
        exit::JOBS_FAILED
    } else {
        exit::OK
    })
}
