//! The fleet as one measured run: `ecr-sync plan` and worker processes on the queue and the
//! ledger, a worker SIGKILLed (and replaced) on its own clock, progress sampled with
//! `ecr-sync status`, AWS calls counted by the local stack's proxy.

use super::RunOpts;
use crate::report::{AwsPerJob, Percentiles, RunResult, Sample};
use crate::stack::{cpu_seconds, json_of, peak_rss_mib, Stack};
use anyhow::{bail, Context};
use ecr_sync::fleet::ledger::{FleetJob, FleetLedger};
use ecr_sync_testkit::awsproxy::SQS_OPS;
use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// Job states that are final in the fleet's ledger.
const FINAL: [&str; 5] = ["succeeded", "skipped", "superseded", "conflict", "dead"];

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

pub(super) async fn run_fleet(stack: &mut Stack, opts: &RunOpts) -> anyhow::Result<RunResult> {
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
    // One read of the run's jobs: their latencies and bytes, and those left unfinished.
    let jobs = if plan_error.is_none() {
        FleetLedger::new(stack.aws().dynamodb().await, &stack.table)
            .run_contents(&run_id)
            .await?
            .1
    } else {
        Vec::new()
    };
    let (latency_ms, bytes) = latency_and_bytes(&jobs, started_at);
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
        result.verdict.stuck.extend(unfinished(&jobs));
    }
    Ok(result)
}

/// The jobs in a state that is not final, one line each with what ties it to the logs
/// (worker, attempts, last change).
fn unfinished(jobs: &[FleetJob]) -> Vec<String> {
    jobs.iter()
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
        .collect()
}

/// Job latency (plan start → the job's final write) and bytes streamed.
fn latency_and_bytes(jobs: &[FleetJob], started_at: SystemTime) -> (Percentiles, u64) {
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
    (Percentiles::of(&mut latencies), bytes)
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
