//! Command-line arguments.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// ecr-sync: keep container images in sync from a source registry into your own (ECR).
#[derive(Debug, Parser)]
#[command(name = "ecr-sync-planner", version, about)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, env = "ECR_SYNC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for CloudWatch and log pipelines).
    Json,
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
    /// Never draw the progress line, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
}
