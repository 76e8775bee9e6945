//! `status`: a run's summary by state, its slowest and failed jobs.

use super::table::table;
use super::Fleet;
use crate::cli::FleetArgs;
use ecr_sync::aws::Aws;
use ecr_sync::console::exit;
use ecr_sync::fleet::ops;
use ecr_sync::sync::human_bytes;

/// Runs `status`.
pub async fn run(
    run: Option<String>,
    args: FleetArgs,
    json: bool,
    stalled_after: std::time::Duration,
    aws: &Aws,
) -> anyhow::Result<u8> {
    let fleet = Fleet::open(&args, aws).await;
    let s = ops::status(fleet.ledger()?, run.as_deref(), stalled_after).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(exit::OK);
    }
    let r = &s.run;
    println!("run        {} ({})", r.run_id, r.state);
    if s.stalled {
        println!(
            "           stalled: no planning progress since {} — the planner most likely died; \
             the jobs it sent are copied as usual, the next plan covers the rest",
            r.updated_at.as_deref().unwrap_or(&r.started_at)
        );
    }
    println!("started    {}", r.started_at);
    println!("config     {} @ {}", r.config_source, r.config_version);
    println!(
        "planned    {} jobs, {} tags already up to date, {} repositories failed",
        r.planned, r.up_to_date, r.failed_repos
    );
    let states: Vec<String> = s.states.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("jobs       {}", states.join(", "));
    println!(
        "copied     {}, {} referrers",
        human_bytes(s.bytes),
        s.referrers
    );
    if !s.slowest.is_empty() {
        println!("\nslowest jobs");
        table(
            &["JOB", "DESTINATION", "SECONDS", "BYTES"],
            s.slowest
                .iter()
                .map(|j| {
                    vec![
                        j.job_id.clone(),
                        j.destination.clone(),
                        format!("{:.1}", j.duration_ms as f64 / 1000.0),
                        human_bytes(j.bytes),
                    ]
                })
                .collect(),
        );
    }
    if !s.failed.is_empty() {
        println!("\nfailed jobs");
        table(
            &["JOB", "STATE", "ATTEMPTS", "CLASS", "DESTINATION", "REASON"],
            s.failed
                .iter()
                .map(|j| {
                    vec![
                        j.job_id.clone(),
                        j.state.to_string(),
                        j.attempts.to_string(),
                        j.error_class.map(|c| c.to_string()).unwrap_or_default(),
                        j.destination.clone(),
                        j.error.clone().unwrap_or_default(),
                    ]
                })
                .collect(),
        );
    }
    if !s.repositories.is_empty() {
        println!("\nrepositories not planned");
        table(
            &["EVENT", "SOURCE", "REASON"],
            s.repositories
                .iter()
                .map(|r| {
                    vec![
                        r.event.map(|e| e.to_string()).unwrap_or_default(),
                        r.source.clone(),
                        r.reason.clone().unwrap_or_default(),
                    ]
                })
                .collect(),
        );
    }
    Ok(exit::OK)
}
