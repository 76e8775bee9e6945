//! Command-line arguments.

use clap::{Parser, Subcommand};
use ecr_sync::console::LogFormat;
use std::path::PathBuf;

/// ecr-sync: keep container images in sync from a source registry into your own (ECR).
#[derive(Debug, Parser)]
#[command(name = "ecr-sync", version, about)]
pub struct Cli {
    /// Log format on stderr: text or json.
    #[arg(
        long,
        global = true,
        env = "ECR_SYNC_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Plan and copy everything the config selects, in this process (one machine).
    Sync(SyncArgs),
    /// Check a config and print every problem in it.
    Validate {
        /// Config file or s3://bucket/key.
        #[arg(long, env = "ECR_SYNC_CONFIG")]
        config: String,
    },
    /// Fleet: turn the config into per-tag jobs on the SQS queue, recorded as a run.
    Plan(PlanArgs),
    /// Fleet: create the jobs queue, its dead-letter queue and the ledger table (idempotent).
    Bootstrap(BootstrapArgs),
    /// Fleet: a run's summary by state, its slowest and failed jobs [default: the latest run].
    Status {
        /// Run id.
        run: Option<String>,
        /// Where the fleet's resources are.
        #[command(flatten)]
        fleet: FleetArgs,
        /// JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
        /// Call a run still `planning` stalled after this many seconds without progress.
        #[arg(long, default_value_t = ecr_sync::fleet::ops::DEFAULT_STALLED_AFTER.as_secs())]
        stalled_after_seconds: u64,
    },
    /// Fleet: the dead-letter queue.
    Dlq {
        /// What to do.
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Fleet: jobs.
    Job {
        /// What to do.
        #[command(subcommand)]
        command: JobCommand,
    },
}

/// Where the fleet's resources are (the Terraform module's outputs, or `bootstrap`'s).
#[derive(Debug, Clone, clap::Args)]
pub struct FleetArgs {
    /// URL of the jobs queue.
    #[arg(long, env = "ECR_SYNC_QUEUE_URL")]
    pub queue_url: Option<String>,
    /// URL of the dead-letter queue [default: from the jobs queue's redrive policy].
    #[arg(long, env = "ECR_SYNC_DLQ_URL")]
    pub dlq_url: Option<String>,
    /// Name of the DynamoDB ledger table.
    #[arg(long, env = "ECR_SYNC_LEDGER_TABLE")]
    pub ledger_table: Option<String>,
}

/// `plan` arguments.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Config file or s3://bucket/key.
    #[arg(long, env = "ECR_SYNC_CONFIG")]
    pub config: String,
    /// Where the fleet's resources are.
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Print the plan's report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `bootstrap` arguments.
#[derive(Debug, clap::Args)]
pub struct BootstrapArgs {
    /// Name prefix: creates PREFIX-jobs, PREFIX-dlq and the table PREFIX-ledger.
    #[arg(long)]
    pub name: String,
    /// Receives before SQS moves a job to the dead-letter queue.
    #[arg(long, default_value_t = ecr_sync::fleet::queue::DEFAULT_MAX_RECEIVE_COUNT, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_receive_count: u32,
    /// The jobs queue's visibility timeout in seconds (workers extend it while a job runs).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=43200))]
    pub visibility_seconds: u32,
    /// JSON instead of environment lines.
    #[arg(long)]
    pub json: bool,
}

/// `dlq` commands.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Every dead-lettered message with its ledger reason; the messages stay in the queue.
    List {
        /// Where the fleet's resources are.
        #[command(flatten)]
        fleet: FleetArgs,
        /// JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Move dead-lettered jobs back to the jobs queue (after fixing the cause).
    Replay {
        /// Where the fleet's resources are.
        #[command(flatten)]
        fleet: FleetArgs,
        /// Replay every job message.
        #[arg(long, conflicts_with_all = ["job", "error_class"])]
        all: bool,
        /// Replay this job id (repeatable).
        #[arg(long, conflicts_with = "error_class")]
        job: Vec<String>,
        /// Replay jobs that failed with this error class (`auth`, `transient`, `not_found`, …).
        #[arg(long)]
        error_class: Option<String>,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

/// `job` commands.
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// One job's records across runs and its history.
    Show {
        /// Job id (32 hex characters).
        id: String,
        /// Where the fleet's resources are.
        #[command(flatten)]
        fleet: FleetArgs,
        /// JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `sync` arguments.
#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// Config file or s3://bucket/key.
    #[arg(long, env = "ECR_SYNC_CONFIG")]
    pub config: String,
    /// Print what would be copied, skipped and why; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write a JSON report of the run to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// SQLite ledger file [default: $XDG_STATE_HOME/ecr-sync/ledger.db or ~/.local/state/ecr-sync/ledger.db].
    #[arg(long, env = "ECR_SYNC_LEDGER")]
    pub ledger: Option<PathBuf>,
    /// Copy jobs in flight at once (overrides the config's concurrency.jobs).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: Option<u16>,
    /// Never draw the progress bar, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// After SIGINT/SIGTERM, seconds running copies get to finish before they are cut off.
    #[arg(long, default_value_t = ecr_sync::sync::DEFAULT_STOP_TIMEOUT.as_secs())]
    pub stop_timeout_seconds: u64,
    /// Seconds a destination tag the ledger saw holding the source digest is trusted without
    /// asking the destination again (registries that list tag names only; ECR lists digests).
    /// 0 asks for every tag.
    #[arg(long, default_value_t = ecr_sync::sync::DEFAULT_RECHECK_AFTER.as_secs())]
    pub recheck_after_seconds: u64,
}
