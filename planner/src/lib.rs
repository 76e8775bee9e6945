//! `ecr-sync`: the command line. Glue only: parse arguments, load the config, call the library,
//! print, choose the exit code (see [`ecr_sync::console::exit`]).
//!
//! # Layout
//! - [`cli`] — arguments.
//! - [`commands`] — one file per command: `sync`, `validate`, `plan`, `bootstrap`, `status`,
//!   `dlq`, `job`.
//! - `progress` — the progress bar on a terminal (indicatif).
#![deny(missing_docs)]

pub mod cli;
pub mod commands;
mod progress;

pub use commands::sync::wants_progress;
