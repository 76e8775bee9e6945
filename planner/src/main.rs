use clap::Parser;
use ecr_sync::console::{init_logging, init_logging_to};
use ecr_sync_planner::cli::{Cli, Command};
use ecr_sync_planner::commands::sync::SyncBar;
use ecr_sync_planner::commands::{self, FleetCommand};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Validate { config } => {
            init_logging(cli.log_format, true);
            commands::run_validate(&config).await
        }
        Command::Sync(args) => {
            // While the bar is drawn only warnings and errors are logged, printed above it.
            let bar = ecr_sync_planner::wants_progress(&args).then(SyncBar::new);
            match &bar {
                Some(bar) => init_logging_to(cli.log_format, true, bar.log_writer()),
                None => init_logging(cli.log_format, false),
            }
            match commands::run_sync(args, bar).await {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ecr_sync::console::exit::USAGE
                }
            }
        }
        command => {
            init_logging(cli.log_format, false);
            let command = match command {
                Command::Plan(a) => FleetCommand::Plan(a),
                Command::Bootstrap(a) => FleetCommand::Bootstrap(a),
                Command::Status {
                    run,
                    fleet,
                    json,
                    stalled_after_seconds,
                } => FleetCommand::Status(
                    run,
                    fleet,
                    json,
                    std::time::Duration::from_secs(stalled_after_seconds),
                ),
                Command::Dlq { command } => FleetCommand::Dlq(command),
                Command::Job { command } => FleetCommand::Job(command),
                Command::Sync(_) | Command::Validate { .. } => unreachable!("handled above"),
            };
            commands::run(command).await
        }
    };
    ExitCode::from(code)
}
