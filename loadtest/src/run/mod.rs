//! One measured run: `sync` (one process) or the fleet (plan, then W worker processes), with
//! chaos — a worker SIGKILLed every k seconds and restarted, 5xx answers from the source
//! registry — sampled while it goes and checked at the end ([`crate::verify`]).
//!
//! - `faults` — the kinds of source registry faults and the proxy settings for them.
//! - `sync` — `ecr-sync sync` as one run.
//! - `fleet` — `ecr-sync plan` and worker processes, killed on their own clock.
//! - `compare` — the same fleet through `skopeo sync`.

mod compare;
mod faults;
mod fleet;
mod sync;

pub use compare::compare_skopeo;
pub use faults::RegistryFault;
pub use sync::sync_timeline;

use crate::generate::Generated;
use crate::report::RunResult;
use crate::stack::Stack;
use crate::verify::{verify, DeadLetter};
use anyhow::bail;
use ecr_sync_testkit::awsproxy::Chaos;
use ecr_sync_testkit::proxy::Faults;
use std::collections::BTreeMap;
use std::time::Duration;

/// `sync` or the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// `ecr-sync sync`: one process plans and copies.
    Sync,
    /// `ecr-sync plan` and `ecr-sync-worker` processes on SQS and DynamoDB (moto).
    Fleet,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Sync => "sync",
            Mode::Fleet => "fleet",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOpts {
    /// The run's name in the report.
    pub scenario: String,
    /// `sync` or fleet.
    pub mode: Mode,
    /// Worker processes (fleet).
    pub workers: usize,
    /// Jobs in flight per process.
    pub concurrency: usize,
    /// SIGKILL a random worker this often, then start a new one (fleet).
    pub kill_every: Option<Duration>,
    /// One source registry request in this many answers 500 (0: none).
    pub registry_fault_every: u64,
    /// The kinds of source faults, sharing that rate evenly (empty: every kind).
    pub registry_fault_kinds: Vec<RegistryFault>,
    /// One AWS call in this many fails: half answered 500, half with the answer lost after
    /// the call took effect (0: none).
    pub aws_fault_every: u64,
    /// Give up (and report what is stuck) after this long.
    pub timeout: Duration,
    /// How often progress is sampled.
    pub sample_every: Duration,
}

impl RunOpts {
    /// The flag of a chosen option that only the local stack can carry out (its proxies
    /// inject the faults), if any.
    pub fn local_only(&self) -> Option<&'static str> {
        if self.registry_fault_every > 0 {
            Some("--registry-fault-percent")
        } else if self.aws_fault_every > 0 {
            Some("--aws-fault-percent")
        } else {
            None
        }
    }
}

/// How long a slow source registry answer is held.
pub const SLOW_REGISTRY_ANSWER: Duration = Duration::from_secs(1);
/// How long a stalled AWS call is held: past the SDK's attempt timeout, so the call is timed
/// out and tried again (and may still reach the service late).
pub const STALLED_AWS_CALL: Duration =
    Duration::from_secs(ecr_sync::aws::ATTEMPT_TIMEOUT.as_secs() + 2);

/// Runs `generated`'s fleet through `opts.mode` on `stack` and measures it.
pub async fn run(
    stack: &mut Stack,
    generated: &Generated,
    opts: &RunOpts,
) -> anyhow::Result<RunResult> {
    stack.write_config(&generated.repos(), opts.concurrency)?;
    let (mut injected_before, mut aws_before) = (0, 0);
    match stack.local() {
        Some(local) => {
            // Each fault rate is shared evenly by its kinds.
            local.src_proxy.set_faults(faults::registry_faults(
                opts.registry_fault_every,
                &opts.registry_fault_kinds,
            ));
            local.src_proxy.reset_counts();
            local.dst_proxy.reset_counts();
            injected_before = local.src_proxy.injected();
            let quarter = opts.aws_fault_every * 4;
            local.aws.set_chaos(Chaos {
                error_every: quarter,
                throttle_every: quarter,
                stall_every: quarter,
                stall: STALLED_AWS_CALL,
                lose_every: quarter,
            });
            aws_before = local.aws.chaos_injected();
        }
        None => {
            if let Some(flag) = opts.local_only() {
                bail!("{flag} needs the local stack (its proxies inject the faults); on given resources, kill workers instead");
            }
        }
    }
    let mut result = match opts.mode {
        Mode::Sync => sync::run_sync(stack, opts).await?,
        Mode::Fleet => fleet::run_fleet(stack, opts).await?,
    };
    if let Some(local) = stack.local() {
        local.src_proxy.set_faults(Faults::default());
        local.aws.set_chaos(Chaos::default());
        let aws_injected = local.aws.chaos_injected() - aws_before;
        if aws_injected > 0 {
            result.faults.insert("aws_faults".into(), aws_injected);
        }
        let injected = local.src_proxy.injected() - injected_before;
        if injected > 0 {
            result.faults.insert("registry_faults".into(), injected);
        }
        result.blob_requests = Some(local.src_proxy.blob_requests() as u64);
        result.requests_per_tag =
            Some(local.src_proxy.requests().len() as f64 / generated.images.len().max(1) as f64);
        result.verdict.duplicated = Some(duplicated_copies(&local.dst_proxy.requests()));
    }
    result.resources = match stack.local() {
        Some(_) => "local stack".into(),
        None => format!("given: {} → {}", stack.source.host, stack.destination.host),
    };
    result.scenario = opts.scenario.clone();
    result.mode = opts.mode.as_str().to_string();
    result.concurrency = opts.concurrency;
    result.tags = generated.images.len();
    if opts.registry_fault_every > 0 || opts.aws_fault_every > 0 {
        let every = |n: u64| {
            if n == 0 {
                "none".to_string()
            } else {
                format!("1 in {n}")
            }
        };
        let source_kinds: Vec<String> = faults::chosen(&opts.registry_fault_kinds)
            .iter()
            .map(|k| k.describe())
            .collect();
        let what = format!(
            "source faults {} ({}), AWS faults {} (500, ThrottlingException, {} s stall, lost answer)",
            every(opts.registry_fault_every),
            source_kinds.join(", "),
            every(opts.aws_fault_every),
            STALLED_AWS_CALL.as_secs(),
        );
        result.fault_windows.push((0.0, result.wall_s, what));
    }
    if result.wall_s > 0.0 {
        result.jobs_per_s = result.jobs_emitted as f64 / result.wall_s;
    }
    if generated.unique_blob_bytes > 0 && result.jobs_emitted > 0 {
        let streamed = result.mb_per_s * result.wall_s * 1e6;
        result.amplification = Some(streamed / generated.unique_blob_bytes as f64);
    }
    // The check reads the registries; what the run itself saw (stuck jobs, duplicated copies)
    // stays.
    let mut verdict = verify(
        &stack.destination,
        generated,
        &dead_letters(stack, opts.mode)?,
    )
    .await;
    verdict
        .stuck
        .splice(0..0, std::mem::take(&mut result.verdict.stuck));
    verdict.duplicated = result.verdict.duplicated;
    result.verdict = verdict;
    result.verdict.ledger_agrees = ledger_agrees(&result, generated);
    Ok(result)
}

/// Tags copied more than once: manifest PUTs by tag (not by digest: an index's children are
/// PUT by digest) beyond the first for each destination tag.
pub fn duplicated_copies(requests: &[(String, String)]) -> u64 {
    let mut puts: BTreeMap<&str, u64> = BTreeMap::new();
    for (method, path) in requests {
        let Some((_, reference)) = path.split_once("/manifests/") else {
            continue;
        };
        if method == "PUT" && !reference.starts_with("sha256:") {
            *puts.entry(path.as_str()).or_default() += 1;
        }
    }
    puts.values().map(|n| n.saturating_sub(1)).sum()
}

/// The dead-lettered jobs (fleet), as the DLQ holds them.
fn dead_letters(stack: &Stack, mode: Mode) -> anyhow::Result<Vec<DeadLetter>> {
    if mode == Mode::Sync {
        return Ok(Vec::new());
    }
    let list = stack.planner_json(&["dlq", "list", "--json"])?;
    Ok(list
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|d| DeadLetter {
            source: d["source"].as_str().unwrap_or_default().to_string(),
            class: d["error_class"].as_str().unwrap_or("unknown").to_string(),
            reason: d["reason"]
                .as_str()
                .or(d["parse_error"].as_str())
                .unwrap_or_default()
                .to_string(),
            state: d["state"].as_str().map(str::to_string),
            attempts: d["attempts"].as_u64().unwrap_or(0),
        })
        .collect())
}

/// Whether the ledger's (or the report's) count of jobs that left the right image equals
/// what the destination shows: every job ended, and as many succeeded as tags the
/// destination holds with the source digest (a warm rerun emits no job).
fn ledger_agrees(result: &RunResult, generated: &Generated) -> bool {
    let jobs = &result.jobs;
    let present = result.verdict.present.min(generated.images.len() as u64);
    let good: u64 = ["succeeded", "skipped", "copied", "superseded"]
        .iter()
        .map(|s| jobs.get(*s).copied().unwrap_or(0))
        .sum();
    let dead = jobs.get("dead").copied().unwrap_or(0);
    let emitted_ok = result.jobs_emitted == 0 || good + dead == result.jobs_emitted;
    // A cold run copies everything; a warm one finds it present and emits nothing.
    emitted_ok && (result.jobs_emitted == 0 || good == present.min(result.jobs_emitted))
}

#[cfg(test)]
mod tests {
    use super::duplicated_copies;

    #[test]
    fn duplicated_copies_count_repeated_tag_puts_only() {
        let r = |m: &str, p: &str| (m.to_string(), p.to_string());
        let requests = [
            r("PUT", "/v2/load/app0/manifests/v1"),
            r("PUT", "/v2/load/app0/manifests/v1"),
            r("PUT", "/v2/load/app0/manifests/v1"),
            r("PUT", "/v2/load/app0/manifests/v2"),
            // An index's children go by digest, and reads are not copies.
            r("PUT", "/v2/load/app0/manifests/sha256:aa"),
            r("PUT", "/v2/load/app0/manifests/sha256:aa"),
            r("GET", "/v2/load/app0/manifests/v2"),
            r("HEAD", "/v2/load/app0/manifests/v2"),
            r("PUT", "/v2/load/app1/manifests/v1"),
        ];
        assert_eq!(duplicated_copies(&requests), 2);
        assert_eq!(duplicated_copies(&[]), 0);
    }
}
