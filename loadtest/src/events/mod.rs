//! `events`: how long a pushed image takes to reach the destination — from its push event being
//! sent to the tag holding the pushed digest there — by the two ways the fleet takes push events,
//! on the local stack (registries and moto reached directly, not through the stack's counting
//! proxies):
//!
//! - `lambda`: the worker binary as a Lambda function behind testkit's Runtime API, fed by
//!   testkit's event source mapping from its own events queue, as the Terraform module sets
//!   them up (batches of ten, no batching window, a 900 s timeout).
//! - `warm worker`: a fleet worker (`ecr-sync-worker` as ECS runs it) already running and idle,
//!   long-polling the jobs queue.
//!
//! Each path gets N small distinct images, one tag each, pushed one at a time; each push's event
//! is sent right after the push, and the destination is polled until the tag holds the digest.
//! The next push waits until the previous job is recorded (for Lambda: its batch deleted), so no
//! latency holds time spent queueing behind the previous one.
//!
//! Lambda's first event is its cold start: the function's process starts only once the mapping
//! has invoked it (as Lambda starts an environment for an invocation that finds none), so that
//! latency holds the pickup, the function's init and the first copy. Between invocations the
//! function keeps running (Lambda freezes it; thawing is not modelled).
//!
//! # Layout
//! - `lambda` — the function, the event source mapping, and the relay that sees the init end.
//! - `worker` — the warm fleet worker.
//! - `probe` — what both share: push and send, poll the destination, the consumer process and
//!   its log.

mod lambda;
mod probe;
mod worker;

use crate::report::Percentiles;
use crate::stack::Stack;
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use ecr_sync_testkit::events::ECR_SOURCE;

/// Receives before a message is dead-lettered (`bootstrap`'s and the events queue's).
const MAX_RECEIVE_COUNT: u32 = 5;

/// Longest one event may take to be copied (or a consumer to start) before the run fails: far
/// above any latency of a small image, so only a lost or stuck event reaches it.
const LIMIT: Duration = Duration::from_secs(60);

/// What to measure.
#[derive(Debug, Clone)]
pub struct EventsOpts {
    /// Events (pushed images) per path.
    pub events: usize,
    /// How often the destination is polled for the tag: a latency is late by up to this.
    pub poll: Duration,
}

/// The two ways a push event reaches a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventPath {
    /// The worker binary as a Lambda function fed by an event source mapping.
    Lambda,
    /// A fleet worker already running, long-polling the jobs queue.
    WarmWorker,
}

impl EventPath {
    /// Its name in the summary.
    pub fn as_str(self) -> &'static str {
        match self {
            EventPath::Lambda => "lambda",
            EventPath::WarmWorker => "warm worker",
        }
    }

    /// The source (and destination) repository of its images.
    pub fn repo(self) -> &'static str {
        match self {
            EventPath::Lambda => "events/lambda",
            EventPath::WarmWorker => "events/worker",
        }
    }
}

/// What `events` measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventsResult {
    /// Events per path.
    pub events: usize,
    /// How often the destination was polled, ms.
    pub poll_ms: u64,
    /// One entry per path, Lambda first.
    pub paths: Vec<PathResult>,
}

/// One path's latencies, ms. The first event stands apart — Lambda's cold start, the warm
/// worker's first job — and the percentiles are over the others.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PathResult {
    /// Which path.
    pub path: EventPath,
    /// The first event's latency.
    pub first_ms: f64,
    /// Median latency of the other events.
    pub p50_ms: f64,
    /// 95th percentile (nearest rank) of the other events.
    pub p95_ms: f64,
    /// Slowest of the other events.
    pub max_ms: f64,
    /// Lambda: from starting the function's process to its first poll of the Runtime API (the
    /// end of its init).
    pub init_ms: Option<f64>,
    /// Lambda, median of the other events: sent → batch received by the event source mapping.
    pub pickup_ms: Option<f64>,
    /// Median of the other events: sent → `push event accepted` in the consumer's log.
    pub accepted_ms: Option<f64>,
    /// Median of the other events: accepted → seen copied (ledger claim, source reads, upload,
    /// manifest PUT, and the poll's lateness).
    pub copy_ms: Option<f64>,
    /// Every event, in order.
    pub each: Vec<EventLatency>,
}

/// One event's timings, ms from sending it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventLatency {
    /// The pushed tag.
    pub tag: String,
    /// The pushed digest, found at the destination.
    pub digest: String,
    /// Until a poll found the destination's tag holding the digest.
    pub latency_ms: f64,
    /// When the last poll that did not find it began: the copy ended between this and
    /// `latency_ms`.
    pub missing_ms: f64,
    /// Lambda: until the event source mapping received the batch.
    pub pickup_ms: Option<f64>,
    /// Until the consumer logged `push event accepted` (`None`: no such line found).
    pub accepted_ms: Option<f64>,
    /// Polls of the destination that failed, taken as "not yet": docker-registry's filesystem
    /// storage writes a tag's link file in place, so a read racing the write can find it empty
    /// and answer 500 (`invalid checksum digest format`).
    #[serde(default)]
    pub refused_reads: u64,
}

/// Runs both paths, Lambda first, on the local `stack` (bootstrapping its queue, dead-letter
/// queue and ledger table).
pub async fn run_events(stack: &mut Stack, opts: &EventsOpts) -> anyhow::Result<EventsResult> {
    if opts.events == 0 {
        bail!("--events: give 1 or more");
    }
    if stack.local().is_none() {
        bail!("events runs on the local stack only (its registries and moto)");
    }
    stack.bootstrap(MAX_RECEIVE_COUNT)?;
    write_config(stack)?;
    let lambda = lambda::run(stack, opts).await?;
    let worker = worker::run(stack, opts).await?;
    Ok(EventsResult {
        events: opts.events,
        poll_ms: opts.poll.as_millis() as u64,
        paths: vec![lambda, worker],
    })
}

/// The config: both paths' repositories, every tag, from [`ECR_SOURCE`] (served by the local
/// source registry, without ECR auth) to the local destination registry.
fn write_config(stack: &Stack) -> anyhow::Result<()> {
    let local = stack.local().context("the local stack")?;
    let dst = local.dst.host();
    let repos: Vec<serde_json::Value> = [EventPath::Lambda, EventPath::WarmWorker]
        .iter()
        .map(|p| serde_json::json!({ "source": format!("{ECR_SOURCE}/{}", p.repo()), "tags": ["**"] }))
        .collect();
    let config = serde_json::json!({
        "destination_registry": dst,
        "repos": repos,
        "registries": {
            ECR_SOURCE: { "endpoint": local.src.url(), "plain_http": true, "ecr_auth": false },
            dst: { "plain_http": true },
        },
    });
    std::fs::write(stack.config_path(), serde_json::to_vec_pretty(&config)?)?;
    Ok(())
}

/// A path's result from its events' timings (in order; at least one), the consumer's log and
/// the function's init.
fn summarise(
    path: EventPath,
    mut each: Vec<EventLatency>,
    log: &str,
    sent_at: &[std::time::SystemTime],
    init_ms: Option<f64>,
) -> PathResult {
    for (e, sent) in each.iter_mut().zip(sent_at) {
        e.accepted_ms = probe::accepted_at(log, path.repo(), &e.tag)
            .and_then(|at| at.duration_since(*sent).ok())
            .map(probe::ms);
    }
    let rest = &each[1..];
    let median =
        |mut values: Vec<f64>| (!values.is_empty()).then(|| Percentiles::of(&mut values).p50);
    let mut latencies: Vec<f64> = rest.iter().map(|e| e.latency_ms).collect();
    let max_ms = latencies.iter().copied().fold(0.0, f64::max);
    let p = Percentiles::of(&mut latencies);
    PathResult {
        path,
        first_ms: each[0].latency_ms,
        p50_ms: p.p50,
        p95_ms: p.p95,
        max_ms,
        init_ms,
        pickup_ms: median(rest.iter().filter_map(|e| e.pickup_ms).collect()),
        accepted_ms: median(rest.iter().filter_map(|e| e.accepted_ms).collect()),
        copy_ms: median(
            rest.iter()
                .filter_map(|e| e.accepted_ms.map(|a| e.latency_ms - a))
                .collect(),
        ),
        each,
    }
}

/// A Markdown summary: latencies per path, then where the time went.
pub fn markdown(r: &EventsResult) -> String {
    let num = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.0}"));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Push to copied\n\n{} events per path, one at a time. Latency in ms from sending the \
         push event to a poll (every {} ms) finding the tag at the destination; p50, p95 and \
         max over the events after the first.\n",
        r.events, r.poll_ms
    );
    out.push_str("| path | first event | p50 | p95 | max | function init |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|\n");
    for p in &r.paths {
        let cold = if p.path == EventPath::Lambda {
            " (cold start)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "| {} | {:.0}{cold} | {:.0} | {:.0} | {:.0} | {} |",
            p.path.as_str(),
            p.first_ms,
            p.p50_ms,
            p.p95_ms,
            p.max_ms,
            num(p.init_ms)
        );
    }
    out.push_str(
        "\nWhere the time went (medians of the events after the first, ms from sending):\n\n\
         | path | batch received by the event source mapping | push accepted by the worker | \
         accepted → seen copied |\n|---|---:|---:|---:|\n",
    );
    for p in &r.paths {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            p.path.as_str(),
            num(p.pickup_ms),
            num(p.accepted_ms),
            num(p.copy_ms)
        );
    }
    let refused: u64 = r
        .paths
        .iter()
        .flat_map(|p| &p.each)
        .map(|e| e.refused_reads)
        .sum();
    if refused > 0 {
        let _ = writeln!(
            out,
            "\nPolls of the destination refused while a tag was being written \
             (docker-registry's storage race), taken as not copied yet: {refused}."
        );
    }
    out
}

/// Writes `events.json` and `events.md` into `out`; returns their paths.
pub fn write_outputs(out: &Path, r: &EventsResult) -> anyhow::Result<[PathBuf; 2]> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let (json, md) = (out.join("events.json"), out.join("events.md"));
    std::fs::write(&json, serde_json::to_vec_pretty(r)?)?;
    std::fs::write(&md, markdown(r))?;
    Ok([json, md])
}
