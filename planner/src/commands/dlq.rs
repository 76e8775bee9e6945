//! `dlq list` and `dlq replay`.

use super::table::table;
use super::Fleet;
use crate::cli::FleetArgs;
use ecr_sync::aws::Aws;
use ecr_sync::console::exit;
use ecr_sync::fleet::ops::{self, Selection};

/// Runs `dlq list`.
pub async fn list(args: FleetArgs, json: bool, aws: &Aws) -> anyhow::Result<u8> {
    let fleet = Fleet::open(&args, aws).await;
    let dlq = fleet.dlq().await?;
    let list = ops::dlq_list(&dlq, fleet.ledger()?).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(exit::OK);
    }
    println!("{} messages in {}", list.len(), dlq.url());
    table(
        &["JOB", "STATE", "ATTEMPTS", "CLASS", "SOURCE", "REASON"],
        list.iter()
            .map(|d| {
                vec![
                    d.job_id.clone().unwrap_or_else(|| "-".into()),
                    d.state.map(|s| s.to_string()).unwrap_or_default(),
                    d.attempts.to_string(),
                    d.error_class.map(|c| c.to_string()).unwrap_or_default(),
                    d.source.clone().unwrap_or_default(),
                    d.parse_error
                        .clone()
                        .or(d.reason.clone())
                        .unwrap_or_default(),
                ]
            })
            .collect(),
    );
    Ok(exit::OK)
}

/// Runs `dlq replay`.
pub async fn replay(
    args: FleetArgs,
    selection: Selection,
    json: bool,
    aws: &Aws,
) -> anyhow::Result<u8> {
    let fleet = Fleet::open(&args, aws).await;
    let dlq = fleet.dlq().await?;
    let report = ops::dlq_replay(
        &dlq,
        fleet.queue()?,
        fleet.ledger()?,
        &selection,
        "operator",
    )
    .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for id in &report.replayed {
            println!("replayed {id}");
        }
        println!(
            "{} replayed, {} left in the dead-letter queue, {} not job messages (left)",
            report.replayed.len(),
            report.kept,
            report.not_jobs
        );
    }
    Ok(exit::OK)
}
