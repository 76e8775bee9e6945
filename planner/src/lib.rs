//! `ecr-sync-planner`: the command line. Glue only: parse arguments, load the config, call the
//! library, print, choose the exit code (0 ok, 1 some jobs failed, 2 usage or config error).
//!
//! # Layout
//! - [`cli`] — arguments.
//! - `sync_cmd` — the `sync` and `validate` commands.
//! - [`fleet_cmd`] — the fleet commands: `plan`, `bootstrap`, `status`, `dlq`, `job`.
//! - `progress` — the live progress line on a terminal.
#![deny(missing_docs)]

pub mod cli;
pub mod fleet_cmd;
mod progress;
mod sync_cmd;

pub use sync_cmd::{run_sync, run_validate, wants_progress};

/// Process exit codes.
pub mod exit {
    /// Everything succeeded.
    pub const OK: u8 = 0;
    /// The run finished but some jobs failed.
    pub const JOBS_FAILED: u8 = 1;
    /// Bad arguments, a bad config, or a run that could not start.
    pub const USAGE: u8 = 2;
}

/// Sets up tracing on stderr: JSON when asked (production), text otherwise. `RUST_LOG` overrides
/// the default level (`info`, or `warn` while a progress line is drawn).
pub fn init_logging(format: cli::LogFormat, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if quiet { "warn" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        cli::LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        cli::LogFormat::Text => builder.with_target(false).init(),
    }
}
