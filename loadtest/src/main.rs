//! `ecr-sync-loadtest`: generate a synthetic fleet, run it through `sync` or the fleet on the
//! local stack (with chaos), verify, and write a JSON result, a Markdown summary and an SVG
//! chart; or measure how long a push event takes to be copied (`events`).

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ecr_sync_loadtest::events::{self, run_events, EventsOpts};
use ecr_sync_loadtest::generate::{generate, FleetSpec};
use ecr_sync_loadtest::report::{self, RunResult};
use ecr_sync_loadtest::run::{compare_skopeo, run, Mode, RegistryFault, RunOpts};
use ecr_sync_loadtest::stack::{bin_dir, Given, Stack};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "ecr-sync-loadtest", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the local stack, generate a fleet, run it (and optionally a warm rerun), verify,
    /// and write result.json, summary.md and chart.svg.
    Run(Box<RunArgs>),
    /// Push a synthetic fleet into a registry and print what was pushed (JSON).
    Generate {
        /// The registry (`http://127.0.0.1:5000`).
        #[arg(long)]
        registry: String,
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// On the local stack, push small images one at a time and measure from each push event to
    /// the tag at the destination, by Lambda (cold start apart) and by a warm fleet worker;
    /// write events.json and events.md.
    Events(EventsArgs),
    /// Render summary.md and chart.svg from result JSON files.
    Report {
        /// result.json files (each holds a list of runs).
        #[arg(required = true)]
        results: Vec<PathBuf>,
        /// Output directory.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

#[derive(Args)]
struct EventsArgs {
    /// Push events (images) per path.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    events: u64,
    /// Milliseconds between polls of the destination for the tag (a latency is late by up to
    /// this).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
    poll_ms: u64,
    /// Where events.json, events.md and the processes' logs go.
    #[arg(long, default_value = "loadtest-out")]
    out: PathBuf,
    /// Where ecr-sync and ecr-sync-worker are [default: next to this binary].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

async fn events_command(args: EventsArgs) -> anyhow::Result<bool> {
    let mut stack = Stack::start_local(bin_dir(args.bin_dir)?).await?;
    let opts = EventsOpts {
        events: args.events as usize,
        poll: Duration::from_millis(args.poll_ms),
    };
    let measured = run_events(&mut stack, &opts).await;
    let logs = args.out.join("logs");
    stack.save_logs(&logs)?;
    let result = measured.with_context(|| {
        format!(
            "events failed (the processes' logs are in {})",
            logs.display()
        )
    })?;
    let [json, md] = events::write_outputs(&args.out, &result)?;
    print!("{}", events::markdown(&result));
    eprintln!(
        "wrote {}, {} and the processes' logs in {}/logs/",
        json.display(),
        md.display(),
        args.out.display()
    );
    Ok(true)
}

#[derive(Args, Clone)]
struct FleetArgs {
    /// Repositories are named `PREFIX/app0`, `PREFIX/app1`, ….
    #[arg(long, default_value = "load")]
    prefix: String,
    /// Repositories.
    #[arg(long, default_value_t = 10)]
    repos: usize,
    /// Tags per repository.
    #[arg(long, default_value_t = 30)]
    tags: usize,
    /// Seed: the same seed gives the same images and digests.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Share of images with one large layer.
    #[arg(long, default_value_t = 0.0)]
    large_fraction: f64,
    /// Size of a large layer, bytes.
    #[arg(long, default_value_t = 8 << 20)]
    large_bytes: u64,
    /// Share of images on a shared base layer.
    #[arg(long, default_value_t = 0.5)]
    shared_base_fraction: f64,
    /// Share of tags that are multi-arch indexes.
    #[arg(long, default_value_t = 0.1)]
    multi_arch_fraction: f64,
}

impl FleetArgs {
    fn spec(&self) -> FleetSpec {
        FleetSpec {
            prefix: self.prefix.clone(),
            repos: self.repos,
            tags_per_repo: self.tags,
            seed: self.seed,
            large_fraction: self.large_fraction,
            large_bytes: self.large_bytes,
            shared_base_fraction: self.shared_base_fraction,
            multi_arch_fraction: self.multi_arch_fraction,
            ..FleetSpec::default()
        }
    }
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    fleet: FleetArgs,
    /// `sync` (one process) or `fleet` (plan + workers).
    #[arg(long, value_enum, default_value = "fleet")]
    mode: Mode,
    /// Worker processes (fleet); several, comma-separated (`1,2,4`), run the same fleet once
    /// per count, each on a fresh stack, one line each in the chart.
    #[arg(long, value_delimiter = ',', default_value = "4")]
    workers: Vec<usize>,
    /// Jobs in flight per process.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// SIGKILL a random worker this often (seconds) and start a new one; 0: never.
    #[arg(long, default_value_t = 0)]
    kill_every_seconds: u64,
    /// Percent of source registry requests that fail (0–100), shared evenly by the kinds of
    /// --registry-fault-kinds: connection reset, 500, 429 without `Retry-After` (as ECR
    /// throttles), answered 1 s late.
    #[arg(long, default_value_t = 0)]
    registry_fault_percent: u64,
    /// Only these kinds of source faults, sharing the rate evenly (comma-separated: reset,
    /// 5xx, 429, slow) [default: all four].
    #[arg(long, value_enum, value_delimiter = ',')]
    registry_fault_kinds: Vec<RegistryFault>,
    /// Percent of AWS calls (SQS, DynamoDB) that fail (0–100), a quarter each: answered 500,
    /// answered `ThrottlingException`, stalled past the SDK's attempt timeout (12 s), the
    /// answer lost after the call took effect.
    #[arg(long, default_value_t = 0)]
    aws_fault_percent: u64,
    /// After the run, run again (nothing should be copied) and report it too.
    #[arg(long)]
    warm: bool,
    /// Also copy the same fleet with another tool into a fresh registry, and report the
    /// ratio of times (`skopeo`: `skopeo sync --all`).
    #[arg(long, value_parser = ["skopeo"])]
    compare: Option<String>,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_seconds: u64,
    /// The run's name in the report.
    #[arg(long, default_value = "run")]
    scenario: String,
    /// Where result.json, summary.md and chart.svg go.
    #[arg(long, default_value = "loadtest-out")]
    out: PathBuf,
    /// Where ecr-sync and ecr-sync-worker are [default: next to this binary].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    #[command(flatten)]
    given: GivenArgs,
}

/// Resources to run on instead of the local stack (your own AWS account, say). AWS is reached
/// with this process's settings (environment, profile or role), and so are the workers and
/// the planner it starts.
#[derive(Args)]
struct GivenArgs {
    /// The source registry to push the synthetic fleet into, `host[:port]` as a config names
    /// it (an ECR host: its repositories are created, mutable). Given with
    /// --destination-registry, the run uses no local stack.
    #[arg(long, requires = "destination_registry")]
    source_registry: Option<String>,
    /// The destination registry, `host[:port]` (an ECR host: `plan` creates its repositories).
    #[arg(long, requires = "source_registry")]
    destination_registry: Option<String>,
    /// A JSON file holding the config's `registries` object for these hosts (`endpoint`,
    /// `plain_http`, `ca_file`, `username_env`/`password_env`, `ecr_auth`).
    #[arg(long, requires = "source_registry")]
    registries: Option<PathBuf>,
    /// The fleet's jobs queue (fleet mode on given registries).
    #[arg(long, requires = "source_registry")]
    queue_url: Option<String>,
    /// The jobs queue's dead-letter queue.
    #[arg(long, requires = "source_registry")]
    dlq_url: Option<String>,
    /// The fleet's DynamoDB ledger table.
    #[arg(long, requires = "source_registry")]
    ledger_table: Option<String>,
}

impl GivenArgs {
    /// The given resources, or `None` for the local stack.
    fn given(&self) -> anyhow::Result<Option<Given>> {
        let (Some(source), Some(destination)) = (&self.source_registry, &self.destination_registry)
        else {
            return Ok(None);
        };
        let registries = match &self.registries {
            Some(file) => {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("--registries: cannot read {}", file.display()))?;
                let value: serde_json::Value = serde_json::from_str(&text)
                    .with_context(|| format!("--registries: {} is not JSON", file.display()))?;
                if !value.is_object() {
                    anyhow::bail!(
                        "--registries: {} must hold a JSON object keyed by registry host",
                        file.display()
                    );
                }
                Some(value)
            }
            None => None,
        };
        Ok(Some(Given {
            source_registry: source.clone(),
            destination_registry: destination.clone(),
            registries,
            queue_url: self.queue_url.clone(),
            dlq_url: self.dlq_url.clone(),
            ledger_table: self.ledger_table.clone(),
        }))
    }
}

impl RunArgs {
    /// The run these flags ask for, with `workers` worker processes.
    fn opts(&self, workers: usize, scenario: String) -> RunOpts {
        RunOpts {
            scenario,
            mode: self.mode,
            workers,
            concurrency: self.concurrency,
            kill_every: (self.kill_every_seconds > 0)
                .then(|| Duration::from_secs(self.kill_every_seconds)),
            registry_fault_every: every(self.registry_fault_percent),
            registry_fault_kinds: self.registry_fault_kinds.clone(),
            aws_fault_every: every(self.aws_fault_percent),
            timeout: Duration::from_secs(self.timeout_seconds),
            sample_every: Duration::from_millis(500),
        }
    }
}

fn every(percent: u64) -> u64 {
    match percent {
        0 => 0,
        p => (100 / p.min(100)).max(1),
    }
}

/// Writes result.json, summary.md and chart.svg for `results` into `out`.
fn write_outputs(out: &PathBuf, results: &[RunResult]) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    std::fs::write(out.join("result.json"), serde_json::to_vec_pretty(results)?)?;
    std::fs::write(out.join("summary.md"), report::markdown(results))?;
    std::fs::write(out.join("chart.svg"), report::svg(results))?;
    Ok(())
}

async fn run_command(args: RunArgs) -> anyhow::Result<bool> {
    let counts = match args.mode {
        // One process: a worker count means nothing.
        Mode::Sync => vec![1],
        Mode::Fleet => args.workers.clone(),
    };
    let given = args.given.given()?;
    // On given resources a deployed fleet may do the work: 0 starts no worker here.
    let zero_ok = given.is_some() && counts == [0];
    if counts.is_empty() || (counts.contains(&0) && !zero_ok) {
        anyhow::bail!("--workers: give one or more counts above 0, such as 4 or 1,2,4 (0, alone, only on given resources: a deployed fleet does the work)");
    }
    if given.is_some() {
        // Refused before anything is pushed into the given registries.
        let compare = args.compare.is_some().then_some("--compare");
        if let Some(flag) = args.opts(1, String::new()).local_only().or(compare) {
            anyhow::bail!("{flag} needs the local stack (its proxies and registries); leave it out with --source-registry");
        }
        if args.mode == Mode::Fleet && args.given.queue_url.is_none() {
            anyhow::bail!("the fleet on given registries needs --queue-url, --dlq-url and --ledger-table (or --mode sync)");
        }
    }
    let mut results = Vec::new();
    for &workers in &counts {
        let scenario = if counts.len() > 1 {
            format!("{}-w{workers}", args.scenario)
        } else {
            args.scenario.clone()
        };
        let logs = if counts.len() > 1 {
            args.out.join("logs").join(format!("w{workers}"))
        } else {
            args.out.join("logs")
        };
        results.extend(run_one(&args, given.clone(), workers, scenario, &logs).await?);
    }
    write_outputs(&args.out, &results)?;
    print!("{}", report::markdown(&results));
    eprintln!(
        "wrote {}/result.json, summary.md, chart.svg and the processes' logs in logs/",
        args.out.display()
    );
    Ok(results.iter().all(|r| r.verdict.ok()))
}

/// One worker count on a fresh stack: generate, run (compare, warm rerun), keep the logs.
async fn run_one(
    args: &RunArgs,
    given: Option<Given>,
    workers: usize,
    scenario: String,
    logs: &std::path::Path,
) -> anyhow::Result<Vec<RunResult>> {
    let bins = bin_dir(args.bin_dir.clone())?;
    let mut stack = match given {
        Some(given) => Stack::given(bins, given).await?,
        None => Stack::start_local(bins).await?,
    };
    let spec = args.fleet.spec();
    eprintln!(
        "generating {} repositories x {} tags into {}",
        spec.repos, spec.tags_per_repo, stack.source.host
    );
    let generated = stack.generate(&spec).await?;
    eprintln!(
        "generated {} tags, {} blobs, {:.1} MB in {:.1} s",
        generated.images.len(),
        generated.blobs,
        generated.unique_blob_bytes as f64 / 1e6,
        generated.elapsed_s
    );
    let opts = args.opts(workers, scenario.clone());
    let mut first = run(&mut stack, &generated, &opts).await?;
    if args.compare.is_some() {
        first.compare = Some(compare_skopeo(&stack, &generated, &first).await?);
    }
    let mut results = vec![first];
    if args.warm {
        let warm = RunOpts {
            scenario: format!("{scenario}-warm"),
            kill_every: None,
            registry_fault_every: 0,
            aws_fault_every: 0,
            ..opts
        };
        results.push(run(&mut stack, &generated, &warm).await?);
    }
    stack.save_logs(logs)?;
    Ok(results)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Run(args) => run_command(*args).await,
        Command::Events(args) => events_command(args).await,
        Command::Generate { registry, fleet } => {
            generate(&registry, &fleet.spec()).await.and_then(|g| {
                println!("{}", serde_json::to_string_pretty(&g)?);
                Ok(true)
            })
        }
        Command::Report { results, out } => (|| {
            let mut all: Vec<RunResult> = Vec::new();
            for f in &results {
                let bytes =
                    std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
                let runs: Vec<RunResult> = serde_json::from_slice(&bytes)
                    .with_context(|| format!("{} is not a result.json", f.display()))?;
                all.extend(runs);
            }
            write_outputs(&out, &all)?;
            Ok(true)
        })(),
    };
    match outcome {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("verification failed: see the summary");
            std::process::ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
