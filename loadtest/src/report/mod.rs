//! The result of a load-test run and its renderings: JSON (the types here, serde), a Markdown
//! summary ([`markdown`]) and an SVG chart ([`svg`]).

mod markdown;
mod svg;

pub use markdown::markdown;
pub use svg::svg;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Everything one run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunResult {
    /// A short name (`a-clean`, `b-chaos`, `c-warm`).
    pub scenario: String,
    /// `sync` or `fleet`.
    pub mode: String,
    /// Where it ran: `local stack`, or the given registries (`given: SOURCE → DESTINATION`).
    #[serde(default)]
    pub resources: String,
    /// Worker processes (1 for `sync`).
    pub workers: usize,
    /// Jobs in flight per process.
    pub concurrency: usize,
    /// Tags the config selects.
    pub tags: usize,
    /// Seconds from the start of planning until every job was terminal.
    pub wall_s: f64,
    /// Seconds planning took (fleet: `ecr-sync plan`; `sync`: not measured separately, 0).
    pub plan_s: f64,
    /// Jobs by final state (`succeeded`, `skipped`, `conflict`, `dead`, …).
    pub jobs: BTreeMap<String, u64>,
    /// Jobs emitted (planned); 0 on a warm rerun.
    pub jobs_emitted: u64,
    /// Jobs per second over the wall time.
    pub jobs_per_s: f64,
    /// Megabytes (10^6 bytes) streamed per second over the wall time.
    pub mb_per_s: f64,
    /// Job latency (enqueue or start of run → terminal), milliseconds.
    pub latency_ms: Percentiles,
    /// Source registry requests per tag (what a warm rerun costs the source); `None` when not
    /// measured (the fleet on given resources has no counting proxy).
    #[serde(default)]
    pub requests_per_tag: Option<f64>,
    /// Source blob requests (GET, HEAD, upload, mount) over the run; `None` when not measured.
    #[serde(default)]
    pub blob_requests: Option<u64>,
    /// AWS calls per job (fleet only).
    pub aws_per_job: Option<AwsPerJob>,
    /// Bytes pulled from the source ÷ unique bytes the destination needed (1.0 is ideal).
    pub amplification: Option<f64>,
    /// Peak resident memory per process kind (`sync`, `worker`, `planner`), MiB.
    pub peak_rss_mib: BTreeMap<String, f64>,
    /// Faults injected, by kind (`registry_faults`, `aws_faults`, `worker_kills`).
    pub faults: BTreeMap<String, u64>,
    /// Worker kills: seconds since the start.
    pub kills_at_s: Vec<f64>,
    /// Windows with faults injected: (from s, to s, what).
    pub fault_windows: Vec<(f64, f64, String)>,
    /// What the end-of-run check found.
    pub verdict: Verdict,
    /// Progress over time, one sample per interval.
    pub timeline: Vec<Sample>,
    /// The same fleet through another tool, when asked (`--compare skopeo`).
    pub compare: Option<Compare>,
    /// moto's CPU share of the wall time (fleet): near 1.0 it is the bottleneck.
    pub moto_cpu_share: Option<f64>,
}

/// p50, p95 and p99.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

impl Percentiles {
    /// The percentiles of `values` (nearest rank); zeros when empty.
    pub fn of(values: &mut [f64]) -> Percentiles {
        if values.is_empty() {
            return Percentiles::default();
        }
        values.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let i = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len());
            values[i - 1]
        };
        Percentiles {
            p50: rank(0.50),
            p95: rank(0.95),
            p99: rank(0.99),
        }
    }
}

/// SQS requests and DynamoDB writes per job.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct AwsPerJob {
    pub sqs_requests: f64,
    pub dynamodb_writes: f64,
}

/// The end-of-run check, made from the registries and the queues, independent of the ledger.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Verdict {
    /// Tags checked at the destination.
    pub checked: u64,
    /// Tags the destination holds with the source digest.
    #[serde(default)]
    pub present: u64,
    /// Planned tags missing at the destination, not accounted for by a dead-lettered job.
    pub lost: Vec<String>,
    /// Tags whose destination digest differs from the source's.
    pub corrupt: Vec<String>,
    /// Jobs copied more than once (duplicated work, not an error while below a few); `None`
    /// when the run could not tell.
    pub duplicated: Option<u64>,
    /// Jobs not terminal at the end.
    pub stuck: Vec<String>,
    /// Dead-lettered jobs, each with its class and reason.
    pub dead_lettered: Vec<String>,
    /// Whether the ledger's counts equal what the registries show.
    pub ledger_agrees: bool,
}

impl Verdict {
    /// Nothing lost, corrupt or stuck, and the ledger agrees.
    pub fn ok(&self) -> bool {
        self.lost.is_empty()
            && self.corrupt.is_empty()
            && self.stuck.is_empty()
            && self.ledger_agrees
    }
}

/// One point of the timeline.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the start.
    pub t_s: f64,
    /// Jobs terminal so far.
    pub done: u64,
    /// Jobs waiting (queue depth, visible + in flight; `sync`: planned − done).
    pub backlog: u64,
}

/// The same fleet through another tool.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Compare {
    /// The tool (`skopeo`).
    pub tool: String,
    /// Its wall time, seconds.
    pub wall_s: f64,
    /// Its exit code.
    pub exit_code: i32,
    /// Our wall time ÷ its wall time.
    pub ratio: f64,
}

impl RunResult {
    /// `<scenario>: <mode>, <workers> worker(s)`: how the chart's legend and the Markdown's
    /// verdict headings name a run.
    pub fn label(&self) -> String {
        let plural = if self.workers == 1 { "" } else { "s" };
        format!(
            "{}: {}, {} worker{plural}",
            self.scenario, self.mode, self.workers
        )
    }
}
