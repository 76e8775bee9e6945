//! `bootstrap`: the jobs queue, its dead-letter queue and the ledger table, for use without the
//! Terraform module.

use super::Usage;
use crate::cli::BootstrapArgs;
use anyhow::bail;
use ecr_sync::aws::Aws;
use ecr_sync::console::exit;
use ecr_sync::fleet::ledger::bootstrap_table;
use ecr_sync::fleet::queue::bootstrap_queues;

/// Runs `bootstrap`.
pub async fn run(args: BootstrapArgs, aws: &Aws) -> anyhow::Result<u8> {
    let name = &args.name;
    if name.is_empty()
        || name.len() > 70
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!(Usage(format!(
            "--name {name:?}: use 1 to 70 letters, digits, '-' or '_' (it prefixes queue and table names)"
        )));
    }
    let (queue_url, dlq_url) = bootstrap_queues(
        &aws.sqs().await,
        name,
        args.max_receive_count,
        args.visibility_seconds,
    )
    .await?;
    let table = format!("{name}-ledger");
    bootstrap_table(&aws.dynamodb().await, &table).await?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"queue_url": queue_url, "dlq_url": dlq_url, "ledger_table": table})
        );
    } else {
        println!("ECR_SYNC_QUEUE_URL={queue_url}");
        println!("ECR_SYNC_DLQ_URL={dlq_url}");
        println!("ECR_SYNC_LEDGER_TABLE={table}");
    }
    Ok(exit::OK)
}
