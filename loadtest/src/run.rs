//! One measured run: `sync` (one process) or the fleet (plan, then W worker processes), with
//! chaos — a worker SIGKILLed every k seconds and restarted, 5xx answers from the source
//! registry — sampled while it goes and checked at the end ([`crate::verify`]).

use crate::generate::Generated;
use crate::report::{AwsPerJob, Compare, Percentiles, RunResult, Sample};
use crate::stack::{cpu_seconds, json_of, peak_rss_mib, Stack};
use crate::verify::{verify, DeadLetter};
use anyhow::{bail, Context};
use ecr_sync_testkit::awsproxy::{Chaos, SQS_OPS};
use ecr_sync_testkit::proxy::Faults;
use ecr_sync_testkit::registry::{RegistryOpts, RegistryProcess};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime};

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

/// A kind of fault injected into the source registry's answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RegistryFault {
    /// The connection closed without an answer.
    Reset,
    /// 500.
    #[value(name = "5xx")]
    ServerError,
    /// 429 without `Retry-After`, as ECR throttles.
    #[value(name = "429")]
    Throttle,
    /// Answered [`SLOW_REGISTRY_ANSWER`] late.
    Slow,
}

impl RegistryFault {
    /// Every kind.
    pub const ALL: [RegistryFault; 4] = [
        RegistryFault::Reset,
        RegistryFault::ServerError,
        RegistryFault::Throttle,
        RegistryFault::Slow,
    ];

    fn describe(self) -> String {
        match self {
            RegistryFault::Reset => "resets".into(),
            RegistryFault::ServerError => "5xx".into(),
            RegistryFault::Throttle => "429 without Retry-After".into(),
            RegistryFault::Slow => format!("{} s slow", SLOW_REGISTRY_ANSWER.as_secs()),
        }
    }
}

/// The source proxy's faults: one request in `every` fails, the rate shared evenly by `kinds`.
fn registry_faults(every: u64, kinds: &[RegistryFault]) -> Faults {
    let each = every * kinds.len() as u64;
    let of = |k: RegistryFault| if kinds.contains(&k) { each } else { 0 };
    Faults {
        reset_every: of(RegistryFault::Reset),
        error_every: of(RegistryFault::ServerError),
        throttle_bare_every: of(RegistryFault::Throttle),
        slow_every: of(RegistryFault::Slow),
        slow_by: SLOW_REGISTRY_ANSWER,
        ..Default::default()
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

/// How long a slow source registry answer is held.
pub const SLOW_REGISTRY_ANSWER: Duration = Duration::from_secs(1);
/// How long a stalled AWS call is held: past the SDK's attempt timeout, so the call is timed
/// out and tried again (and may still reach the service late).
pub const STALLED_AWS_CALL: Duration =
    Duration::from_secs(ecr_sync::aws::ATTEMPT_TIMEOUT.as_secs() + 2);

/// Job states that are final in the fleet's ledger.
const FINAL: [&str; 5] = ["succeeded", "skipped", "superseded", "conflict", "dead"];

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
            local.src_proxy.set_faults(registry_faults(
                opts.registry_fault_every,
                kinds(&opts.registry_fault_kinds),
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
        // Faults are injected by the local stack's proxies.
        None if opts.registry_fault_every > 0 || opts.aws_fault_every > 0 => {
            bail!("registry and AWS faults need the local stack (its proxies inject them); on given resources, kill workers instead")
        }
        None => {}
    }
    let mut result = match opts.mode {
        Mode::Sync => run_sync(stack, opts).await?,
        Mode::Fleet => run_fleet(stack, opts).await?,
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
        let source_kinds: Vec<String> = kinds(&opts.registry_fault_kinds)
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
    let stuck = std::mem::take(&mut result.verdict.stuck);
    let duplicated = result.verdict.duplicated;
    result.verdict = verify(
        &stack.destination,
        generated,
        &dead_letters(stack, opts.mode)?,
    )
    .await;
    result.verdict.stuck.splice(0..0, stuck);
    result.verdict.duplicated = duplicated;
    result.verdict.ledger_agrees = ledger_agrees(&result, generated);
    Ok(result)
}

/// The chosen fault kinds, or all of them when none was chosen.
fn kinds(chosen: &[RegistryFault]) -> &[RegistryFault] {
    if chosen.is_empty() {
        &RegistryFault::ALL
    } else {
        chosen
    }
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

async fn run_sync(stack: &Stack, opts: &RunOpts) -> anyhow::Result<RunResult> {
    let report = stack.dir.path().join("sync-report.json");
    let ledger = stack.dir.path().join("sync-ledger.db");
    let log = std::fs::File::create(stack.dir.path().join("sync.log"))?;
    let started = Instant::now();
    let mut child = stack
        .command("ecr-sync")
        .args(["sync", "--no-progress", "--config"])
        .arg(stack.config_path())
        .arg("--report")
        .arg(&report)
        .arg("--ledger")
        .arg(&ledger)
        .args(["--concurrency", &opts.concurrency.to_string()])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("cannot start ecr-sync sync")?;
    let mut rss = 0f64;
    let mut timeline = vec![Sample::default()];
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if let Some(r) = peak_rss_mib(child.id()) {
            rss = rss.max(r);
        }
        if started.elapsed() > opts.timeout {
            child.kill()?;
            child.wait()?;
            bail!("sync did not finish in {:?}", opts.timeout);
        }
        tokio::time::sleep(opts.sample_every).await;
    };
    let wall_s = started.elapsed().as_secs_f64();
    let r: Value = serde_json::from_slice(&std::fs::read(&report).with_context(|| {
        format!(
            "sync ({status}) wrote no report; see its log in {}",
            stack.dir.path().display()
        )
    })?)?;
    let count = |k: &str| r[k].as_u64().unwrap_or(0);
    let jobs_list = r["jobs"].as_array().cloned().unwrap_or_default();
    let mut latencies: Vec<f64> = jobs_list
        .iter()
        .filter_map(|j| j["duration_ms"].as_f64())
        .collect();
    let mut jobs = BTreeMap::new();
    for state in ["copied", "skipped", "failed"] {
        jobs.insert(state.to_string(), count(state));
    }
    let finished: Vec<f64> = jobs_list
        .iter()
        .filter_map(|j| j["finished_ms"].as_f64())
        .map(|ms| ms / 1000.0)
        .collect();
    timeline.extend(sync_timeline(
        &finished,
        opts.sample_every.as_secs_f64(),
        wall_s,
    ));
    if let Some(b) = r["peak_rss_bytes"].as_u64() {
        rss = rss.max(b as f64 / (1024.0 * 1024.0));
    }
    // The local stack counts the source's requests at its proxy; elsewhere `sync`'s own count
    // is what there is.
    let source = &stack.source.host;
    let (requests_per_tag, blob_requests) = match stack.local() {
        Some(_) => (None, None),
        None => (
            r["requests"][source]
                .as_u64()
                .map(|n| n as f64 / jobs_list.len().max(1) as f64),
            r["blob_requests"][source].as_u64(),
        ),
    };
    Ok(RunResult {
        requests_per_tag,
        blob_requests,
        workers: 1,
        wall_s,
        jobs,
        // Up-to-date tags are reported as skipped jobs; they cost no copy.
        jobs_emitted: count("copied") + count("failed"),
        mb_per_s: count("bytes") as f64 / 1e6 / wall_s.max(1e-9),
        latency_ms: Percentiles::of(&mut latencies),
        peak_rss_mib: BTreeMap::from([("sync".to_string(), rss)]),
        timeline,
        ..Default::default()
    })
}

/// A `sync` run's progress over time from when each job ended (seconds from the start): one
/// sample every `every` seconds until `wall_s`, then one at `wall_s`. The backlog is what had
/// not ended yet (`sync` plans while it copies, so it is counted against the final total).
pub fn sync_timeline(finished_s: &[f64], every: f64, wall_s: f64) -> Vec<Sample> {
    let mut ends = finished_s.to_vec();
    ends.sort_by(f64::total_cmp);
    let total = ends.len() as u64;
    let at = |t: f64| {
        let done = ends.partition_point(|e| *e <= t) as u64;
        Sample {
            t_s: t,
            done,
            backlog: total - done,
        }
    };
    let steps = if every > 0.0 {
        (wall_s / every).floor() as usize
    } else {
        0
    };
    let mut samples: Vec<Sample> = (1..=steps).map(|i| at(i as f64 * every)).collect();
    if samples.last().is_none_or(|s| s.t_s < wall_s) {
        samples.push(Sample {
            done: total,
            backlog: 0,
            ..at(wall_s)
        });
    }
    samples
}

/// The kill schedule: a random worker SIGKILLed (and a new one started) every `every`, on
/// its own clock, whatever the run is waiting for.
struct Killer {
    started: Instant,
    every: Option<Duration>,
    /// When the next kill is due, from `started`.
    next: Option<Duration>,
    rng: fastrand::Rng,
    /// When each kill happened, seconds from `started`.
    at_s: Vec<f64>,
}

impl Killer {
    /// Awaits `work`, killing (and replacing) workers as they fall due meanwhile.
    async fn during<T>(
        &mut self,
        work: impl std::future::Future<Output = T>,
        workers: &mut Workers,
        stack: &Stack,
        concurrency: usize,
    ) -> anyhow::Result<T> {
        tokio::pin!(work);
        loop {
            let due = self
                .next
                .map(|k| tokio::time::Instant::from_std(self.started + k));
            tokio::select! {
                out = &mut work => return Ok(out),
                _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)),
                    if due.is_some() =>
                {
                    let now = self.started.elapsed();
                    workers.kill_one(&mut self.rng)?;
                    self.at_s.push(now.as_secs_f64());
                    workers.spawn(stack, concurrency)?;
                    self.next = self.every.map(|every| now + every);
                }
            }
        }
    }
}

/// The fleet's worker processes, restarted when killed; any still running are SIGKILLed when
/// this is dropped, so a run that fails half-way leaves no worker behind.
struct Workers {
    children: Vec<Child>,
    started: usize,
    peak_rss: f64,
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Workers {
    fn spawn(&mut self, stack: &Stack, concurrency: usize) -> anyhow::Result<()> {
        let n = self.started;
        self.started += 1;
        let err = std::fs::File::create(stack.dir.path().join(format!("worker{n}.err")))?;
        let child = stack
            .command("ecr-sync-worker")
            .args(["--worker-id", &format!("w{n}")])
            .args(["--concurrency", &concurrency.to_string()])
            // Short timeouts, so a killed worker's jobs come back within seconds; retries a
            // second apart (transient faults heal at once here); long polls of 5 s (not 1 s:
            // idle receives would dominate the SQS requests per job; not 20 s: a stopping
            // worker lets its poll end).
            .args(["--visibility-seconds", "6", "--wait-seconds", "5"])
            .args(["--retry-delay-seconds", "1"])
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .context("cannot start ecr-sync-worker")?;
        self.children.push(child);
        Ok(())
    }

    fn sample_rss(&mut self) {
        for c in &self.children {
            if let Some(r) = peak_rss_mib(c.id()) {
                self.peak_rss = self.peak_rss.max(r);
            }
        }
    }

    /// SIGKILLs one worker at random.
    fn kill_one(&mut self, rng: &mut fastrand::Rng) -> anyhow::Result<()> {
        if self.children.is_empty() {
            return Ok(());
        }
        let mut victim = self.children.remove(rng.usize(..self.children.len()));
        let killed = victim.kill();
        victim.wait()?;
        Ok(killed?)
    }

    /// SIGTERM to every worker; SIGKILL to those still up after `grace`.
    async fn stop(&mut self, grace: Duration) {
        for c in &self.children {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + grace;
        for c in &mut self.children {
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if c.try_wait().ok().flatten().is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        self.children.clear();
    }
}

async fn run_fleet(stack: &mut Stack, opts: &RunOpts) -> anyhow::Result<RunResult> {
    if stack.queue_url.is_empty() {
        if stack.local().is_none() {
            bail!("the fleet on given resources needs --queue-url, --dlq-url and --ledger-table");
        }
        stack.bootstrap(ecr_sync::fleet::queue::DEFAULT_MAX_RECEIVE_COUNT)?;
    }
    if opts.workers == 0 && opts.kill_every.is_some() {
        bail!("--kill-every-seconds needs workers to kill: give --workers above 0");
    }
    let mut workers = Workers {
        children: Vec::new(),
        started: 0,
        peak_rss: 0.0,
    };
    for _ in 0..opts.workers {
        workers.spawn(stack, opts.concurrency)?;
    }
    // Workers first, idle on the queue, so the clock measures the path and not process start.
    tokio::time::sleep(Duration::from_secs(1)).await;
    if let Some(local) = stack.local() {
        local.aws.reset_counts();
    }
    let moto_pid = stack.local().map(|l| l.moto.pid());
    let moto_cpu_before = moto_pid.and_then(cpu_seconds);
    let started = Instant::now();
    let started_at = SystemTime::now();
    let mut killer = Killer {
        started,
        every: opts.kill_every,
        next: opts.kill_every,
        rng: fastrand::Rng::with_seed(7),
        at_s: Vec::new(),
    };
    // Workers copy while the plan still sends, so kills start with the plan.
    let plan = tokio::process::Command::from(stack.command("ecr-sync"))
        .args(["plan", "--json"])
        .output();
    let plan = killer
        .during(plan, &mut workers, stack, opts.concurrency)
        .await?
        .context("cannot run ecr-sync plan")?;
    std::fs::write(stack.dir.path().join("plan.log"), &plan.stderr)?;
    let plan_s = started.elapsed().as_secs_f64();
    // A plan that stops (at scale, moto's SQS slows as the queue deepens) is an outcome to
    // report with what was measured until then, not a run without a report.
    let (run_id, planned, plan_error) = match json_of(&plan, "plan") {
        Ok(plan) => (
            plan["run_id"]
                .as_str()
                .context("plan printed no run_id")?
                .to_string(),
            plan["planned"].as_u64().unwrap_or(0),
            None,
        ),
        Err(e) => (String::new(), 0, Some(format!("{e:#}"))),
    };
    let mut timeline = Vec::new();
    let mut states = BTreeMap::new();
    let finished = plan_error.is_none()
        && loop {
            let t = started.elapsed();
            // The observer goes through the faulty AWS proxy too: a failed look is skipped. A look
            // can take seconds under load; the kill schedule keeps going meanwhile.
            let look = tokio::process::Command::from(stack.command("ecr-sync"))
                .args(["status", &run_id, "--json"])
                .output();
            let out = killer
                .during(look, &mut workers, stack, opts.concurrency)
                .await?
                .context("cannot run ecr-sync status")?;
            let status = match json_of(&out, "status") {
                Ok(s) => s,
                Err(e) if t < opts.timeout => {
                    eprintln!("status failed (looking again): {e:#}");
                    tokio::time::sleep(opts.sample_every).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            states = status["states"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                        .collect()
                })
                .unwrap_or_default();
            let done: u64 = FINAL
                .iter()
                .map(|s| states.get(*s).copied().unwrap_or(0))
                .sum();
            timeline.push(Sample {
                t_s: t.as_secs_f64(),
                done,
                backlog: planned.saturating_sub(done),
            });
            workers.sample_rss();
            if done >= planned {
                break true;
            }
            if t > opts.timeout {
                break false;
            }
            tokio::time::sleep(opts.sample_every).await;
        };
    let wall_s = started.elapsed().as_secs_f64();
    workers.stop(Duration::from_secs(30)).await;
    let moto_cpu = match (moto_cpu_before, moto_pid.and_then(cpu_seconds)) {
        (Some(a), Some(b)) => Some((b - a) / wall_s.max(1e-9)),
        _ => None,
    };
    // Counted by the local stack's AWS proxy; not measured on given resources.
    let aws_per_job = stack.local().filter(|_| planned > 0).map(|local| {
        let counts = local.aws.counts();
        let sqs: u64 = SQS_OPS
            .iter()
            .filter(|op| **op != "GetQueueAttributes" && **op != "GetQueueUrl")
            .map(|op| counts.calls(op))
            .sum();
        let writes = counts.dynamodb_item_writes() + counts.dynamodb_index_writes();
        AwsPerJob {
            sqs_requests: sqs as f64 / planned as f64,
            dynamodb_writes: writes as f64 / planned as f64,
        }
    });
    let (latency_ms, bytes) = if plan_error.is_none() {
        ledger_details(stack, &run_id, started_at).await?
    } else {
        Default::default()
    };
    let mut result = RunResult {
        workers: opts.workers,
        wall_s,
        plan_s,
        jobs: states,
        jobs_emitted: planned,
        mb_per_s: bytes as f64 / 1e6 / wall_s.max(1e-9),
        latency_ms,
        aws_per_job,
        peak_rss_mib: BTreeMap::from([("worker".to_string(), workers.peak_rss)]),
        kills_at_s: killer.at_s,
        timeline,
        moto_cpu_share: moto_cpu,
        ..Default::default()
    };
    if !result.kills_at_s.is_empty() {
        result
            .faults
            .insert("worker_kills".into(), result.kills_at_s.len() as u64);
    }
    if let Some(e) = plan_error {
        result.verdict.stuck = vec![format!("the plan stopped after {plan_s:.1} s: {e}")];
    } else if !finished {
        result.verdict.stuck = vec![format!(
            "{} of {planned} jobs not final after {:?}; {}",
            planned - result.timeline.last().map_or(0, |s| s.done),
            opts.timeout,
            queue_depths(stack).await
        )];
        result
            .verdict
            .stuck
            .extend(unfinished_jobs(stack, &run_id).await);
    }
    Ok(result)
}

/// What the jobs queue and its dead-letter queue hold (visible, in flight): where the
/// messages of jobs that did not end are, if anywhere.
async fn queue_depths(stack: &Stack) -> String {
    let sqs = stack.aws().sqs().await;
    let mut parts = Vec::new();
    for (name, url) in [("queue", &stack.queue_url), ("DLQ", &stack.dlq_url)] {
        let queue = ecr_sync::fleet::queue::Queue::new(sqs.clone(), url);
        parts.push(match queue.depth().await {
            Ok((visible, in_flight)) => {
                format!("{name}: {visible} visible, {in_flight} in flight")
            }
            Err(e) => format!("{name}: cannot read its depth ({e})"),
        });
    }
    parts.join(", ")
}

/// The run's jobs the ledger holds in a state that is not final, one line each with what
/// ties it to the logs (worker, attempts, last change).
async fn unfinished_jobs(stack: &Stack, run_id: &str) -> Vec<String> {
    let ledger =
        ecr_sync::fleet::ledger::FleetLedger::new(stack.aws().dynamodb().await, &stack.table);
    match ledger.run_contents(run_id).await {
        Ok((_, jobs)) => jobs
            .iter()
            .filter(|j| !j.state.is_final())
            .map(|j| {
                format!(
                    "{} ({}): {} on {}, attempt {}, last change {}",
                    j.source,
                    j.job_id,
                    j.state,
                    j.worker.as_deref().unwrap_or("no worker"),
                    j.attempts,
                    j.updated_at
                )
            })
            .collect(),
        Err(e) => vec![format!("cannot read the ledger's jobs: {e}")],
    }
}

/// Job latency (plan start → the job's final write) and bytes streamed, from the ledger.
async fn ledger_details(
    stack: &Stack,
    run_id: &str,
    started_at: SystemTime,
) -> anyhow::Result<(Percentiles, u64)> {
    let ledger =
        ecr_sync::fleet::ledger::FleetLedger::new(stack.aws().dynamodb().await, &stack.table);
    let (_, jobs) = ledger.run_contents(run_id).await?;
    let start = time::OffsetDateTime::from(started_at);
    let mut latencies: Vec<f64> = jobs
        .iter()
        .filter_map(|j| {
            let at = time::OffsetDateTime::parse(
                &j.updated_at,
                &time::format_description::well_known::Rfc3339,
            )
            .ok()?;
            Some(((at - start).as_seconds_f64() * 1000.0).max(0.0))
        })
        .collect();
    let bytes = jobs.iter().map(|j| j.bytes).sum();
    Ok((Percentiles::of(&mut latencies), bytes))
}

/// The same fleet through `skopeo sync` (one process, every tag, every platform) into a fresh
/// destination registry, timed: what `--compare skopeo` reports next to `ours`.
pub async fn compare_skopeo(
    stack: &Stack,
    generated: &Generated,
    ours: &RunResult,
) -> anyhow::Result<Compare> {
    let Some(local) = stack.local() else {
        bail!("--compare needs the local stack (skopeo reads its source registry without credentials)");
    };
    let dst = RegistryProcess::start(RegistryOpts::default()).await;
    // skopeo's YAML source: every tag of every repository, plain HTTP.
    let mut yaml = format!("{}:\n  tls-verify: false\n  images:\n", local.src.host());
    for repo in generated.repos() {
        yaml.push_str(&format!("    {repo}:\n"));
        for image in generated.images.iter().filter(|i| i.repo == repo) {
            yaml.push_str(&format!("      - \"{}\"\n", image.tag));
        }
    }
    let file = stack.dir.path().join("skopeo-sync.yaml");
    std::fs::write(&file, yaml)?;
    let started = Instant::now();
    let out = std::process::Command::new("skopeo")
        .args(["sync", "--all", "--src", "yaml", "--dest", "docker"])
        .args(["--dest-tls-verify=false"])
        .arg(&file)
        .arg(dst.host())
        .output()
        .context("cannot run skopeo (is it installed?)")?;
    let wall_s = started.elapsed().as_secs_f64();
    if !out.status.success() {
        eprintln!(
            "skopeo sync failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(Compare {
        tool: "skopeo".into(),
        wall_s,
        exit_code: out.status.code().unwrap_or(-1),
        ratio: ours.wall_s / wall_s.max(1e-9),
    })
}

#[cfg(test)]
mod tests {
    use super::{duplicated_copies, kinds, registry_faults, sync_timeline, RegistryFault};

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

    #[test]
    fn a_fault_rate_is_shared_by_the_chosen_kinds() {
        let all = registry_faults(20, kinds(&[]));
        assert_eq!(
            (
                all.reset_every,
                all.error_every,
                all.throttle_bare_every,
                all.slow_every
            ),
            (80, 80, 80, 80)
        );
        let some = registry_faults(20, &[RegistryFault::Throttle, RegistryFault::Slow]);
        assert_eq!(
            (
                some.reset_every,
                some.error_every,
                some.throttle_bare_every,
                some.slow_every
            ),
            (0, 0, 40, 40)
        );
        assert_eq!(registry_faults(0, kinds(&[])).throttle_bare_every, 0);
    }

    #[test]
    fn a_sync_timeline_counts_jobs_ended_by_each_sample() {
        // Jobs ended at 0.2, 0.4, 1.1 and 2.3 s of a 2.4 s run, sampled every second.
        let t = sync_timeline(&[1.1, 0.2, 2.3, 0.4], 1.0, 2.4);
        let points: Vec<(f64, u64, u64)> = t.iter().map(|s| (s.t_s, s.done, s.backlog)).collect();
        assert_eq!(points, [(1.0, 2, 2), (2.0, 3, 1), (2.4, 4, 0)]);
        // A warm run that ended no job has one sample, at the end.
        let warm = sync_timeline(&[], 0.5, 0.3);
        assert_eq!(warm.len(), 1);
        assert_eq!((warm[0].done, warm[0].backlog), (0, 0));
    }
}
