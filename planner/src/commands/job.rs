//! `job show`: one job across runs, and its history.

use super::table::table;
use super::Fleet;
use crate::cli::FleetArgs;
use anyhow::bail;
use ecr_sync::aws::Aws;
use ecr_sync::console::exit;
use ecr_sync::fleet::ops;

/// Runs `job show`.
pub async fn show(id: String, args: FleetArgs, json: bool, aws: &Aws) -> anyhow::Result<u8> {
    let fleet = Fleet::open(&args, aws).await;
    let (runs, history) = ops::job_show(fleet.ledger()?, &id).await?;
    if runs.is_empty() && history.is_empty() {
        bail!("no job {id} in the ledger");
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"runs": runs, "history": history}))?
        );
        return Ok(exit::OK);
    }
    if let Some(j) = runs.first() {
        println!("job     {}", j.job_id);
        println!("source  {} ({})", j.source, j.digest);
        println!("dest    {}", j.destination);
    }
    table(
        &[
            "RUN", "STATE", "ATTEMPTS", "REPLAYS", "WORKER", "UPDATED", "REASON",
        ],
        runs.iter()
            .map(|j| {
                vec![
                    j.run_id.clone(),
                    j.state.to_string(),
                    j.attempts.to_string(),
                    j.replays.to_string(),
                    j.worker.clone().unwrap_or_default(),
                    j.updated_at.clone(),
                    j.error.clone().unwrap_or_default(),
                ]
            })
            .collect(),
    );
    println!("\nhistory");
    table(
        &[
            "AT", "RUN", "EVENT", "ATTEMPT", "WORKER", "BYTES", "CLASS", "REASON",
        ],
        history
            .iter()
            .map(|e| {
                vec![
                    e.at.clone(),
                    e.run_id.clone(),
                    e.event.map(|e| e.to_string()).unwrap_or_default(),
                    e.attempt.to_string(),
                    e.worker.clone().unwrap_or_default(),
                    e.bytes.to_string(),
                    e.error_class.map(|c| c.to_string()).unwrap_or_default(),
                    e.error.clone().unwrap_or_default(),
                ]
            })
            .collect(),
    );
    Ok(exit::OK)
}
