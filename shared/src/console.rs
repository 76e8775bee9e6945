//! What both binaries share on the terminal: log setup and exit codes.

use std::io::IsTerminal;

/// Process exit codes.
pub mod exit {
    /// Everything succeeded.
    pub const OK: u8 = 0;
    /// The run finished but some jobs failed.
    pub const JOBS_FAILED: u8 = 1;
    /// Bad arguments, a bad config, or a run that could not start.
    pub const USAGE: u8 = 2;
    /// Stopped by SIGINT or SIGTERM before the end (128 + SIGINT, what shells report for
    /// Ctrl-C); what finished is recorded.
    pub const INTERRUPTED: u8 = 130;
}

/// Log formats on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for CloudWatch and log pipelines).
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}: use text or json")),
        }
    }
}

/// Sets up tracing on stderr: JSON when asked (production), text otherwise. `RUST_LOG` overrides
/// the default level (`info`, or `warn` when `quiet`).
pub fn init_logging(format: LogFormat, quiet: bool) {
    init_logging_to(format, quiet, std::io::stderr);
}

/// [`init_logging`] with log lines going to the writers `make_writer` returns instead of straight
/// to stderr: the planner's progress bar passes one that clears the bar, prints the line and draws
/// the bar again, so warnings and errors land above it (the bar is drawn on stderr, so colours
/// still follow whether stderr is a terminal). Each event is formatted whole and written with one
/// `write_all` on a fresh writer.
pub fn init_logging_to<F, W>(format: LogFormat, quiet: bool, make_writer: F)
where
    F: Fn() -> W + Send + Sync + 'static,
    W: std::io::Write,
{
    use tracing_subscriber::EnvFilter;
    let default = if quiet { "warn" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(make_writer)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Text => builder.with_target(false).init(),
    }
}

/// Resolves on the first SIGTERM (ECS stopping the task) or SIGINT (Ctrl-C). A second signal
/// after that ends the process at once with [`exit::INTERRUPTED`], for a person who does not
/// want to wait for running copies.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::warn!("SIGTERM: stopping"),
        _ = int.recv() => tracing::warn!("interrupted: stopping (again to stop at once)"),
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("second signal: stopping at once");
        std::process::exit(exit::INTERRUPTED.into());
    });
}
