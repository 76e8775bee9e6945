//! ecr-sync-loadtest: proves on one machine (or against real AWS) that the fleet is fast and
//! loses nothing.
//!
//! - [`events`] — push-to-copied latency of push events, by Lambda and by a warm fleet worker.
//! - [`generate`] — a synthetic fleet pushed into a source registry, reproducible from a seed.
//! - [`report`] — the result of a run ([`report::RunResult`]) as JSON, a Markdown summary and
//!   an SVG chart.
//! - [`stack`] — the local stack a run uses: moto, registries, fault-injecting proxies.
//! - [`run`] — `sync` and fleet runs, with chaos, measured while they go.
//! - [`verify`] — what the destination holds, read from the registries, against what the
//!   source holds.

pub mod events;
pub mod generate;
pub mod report;
pub mod run;
pub mod stack;
pub mod verify;
