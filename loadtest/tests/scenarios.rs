//! The load test's small-scale scenarios, run by the test command: the fleet on 300 tiny
//! images with 4 workers, (a) clean and then (c) warm, and (b) with a worker SIGKILLed every
//! few seconds, 5 % of source registry requests failing (resets, 5xx, 429 without Retry-After,
//! slow answers) and 5 % of AWS calls (500s, throttling, stalls past the attempt timeout, lost
//! answers). Nothing may be lost, corrupt or
//! stuck, and the outputs (JSON, Markdown, SVG) are written.

use ecr_sync_loadtest::generate::FleetSpec;
use ecr_sync_loadtest::report::{self, RunResult};
use ecr_sync_loadtest::run::{run, Mode, RunOpts};
use ecr_sync_loadtest::stack::{bin_dir, Stack};
use std::time::Duration;

/// The scenarios take turns: each runs a whole stack (moto, registries, four workers), and two
/// at once on a small machine slowed moto enough that a heartbeat came late and a clean run saw
/// a message delivered twice.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn spec() -> FleetSpec {
    FleetSpec {
        repos: 10,
        tags_per_repo: 30,
        seed: 42,
        ..FleetSpec::default()
    }
}

fn fleet(scenario: &str) -> RunOpts {
    RunOpts {
        scenario: scenario.into(),
        mode: Mode::Fleet,
        workers: 4,
        concurrency: 8,
        kill_every: None,
        registry_fault_every: 0,
        registry_fault_kinds: Vec::new(),
        aws_fault_every: 0,
        timeout: Duration::from_secs(300),
        sample_every: Duration::from_millis(500),
    }
}

/// Asserts the run lost, corrupted and left stuck nothing, and shows what it found if not:
/// the report, and every log line of the stack's processes about a lost tag (the machine's
/// files are gone when CI reports).
fn assert_clean(r: &RunResult, stack: &Stack) {
    if !r.verdict.ok() {
        for lost in &r.verdict.lost {
            println!("--- logs about {lost}:\n{}", stack.log_lines_about(lost));
        }
    }
    assert!(
        r.verdict.ok(),
        "{}\n{:#?}",
        report::markdown(std::slice::from_ref(r)),
        r.verdict
    );
    // Every dead letter is explained: a job dead with its class and reason (its tag is then
    // not counted lost), or a message SQS redrove after its job succeeded (harmless). Under
    // transient faults only, dead jobs are a weakness to report, printed here.
    for d in &r.verdict.dead_lettered {
        println!("dead letter: {d}");
        assert!(
            d.ends_with("harmless") || d.contains("ledger state dead"),
            "{d}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_fleet_run_copies_every_tag_and_a_warm_rerun_emits_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut stack = Stack::start_local(bin_dir(None).unwrap()).await.unwrap();
    let generated = stack.generate(&spec()).await.unwrap();
    assert_eq!(generated.images.len(), 300);
    let cold = run(&mut stack, &generated, &fleet("a-clean"))
        .await
        .unwrap();
    assert_clean(&cold, &stack);
    assert_eq!(cold.verdict.checked, 300);
    assert_eq!(cold.jobs_emitted, 300);
    // Every job succeeded — or, delivered again because a heartbeat came late on a loaded
    // machine (6 s visibility here), found its copy done and ended skipped: at-least-once
    // delivery, not an error. Nothing else.
    let (succeeded, skipped) = (
        cold.jobs.get("succeeded").copied().unwrap_or(0),
        cold.jobs.get("skipped").copied().unwrap_or(0),
    );
    assert_eq!(succeeded + skipped, 300, "{:?}", cold.jobs);
    assert!(skipped <= 3, "{:?}", cold.jobs);
    let aws = cold.aws_per_job.expect("a fleet run counts AWS calls");
    let duplicated = cold
        .verdict
        .duplicated
        .expect("duplicated copies are counted");
    println!(
        "a: {:.1} s, {:.1} jobs/s, {:.2} SQS requests and {:.2} DynamoDB writes per job, {duplicated} tags copied twice",
        cold.wall_s, cold.jobs_per_s, aws.sqs_requests, aws.dynamodb_writes
    );
    assert!(aws.dynamodb_writes <= 2.0, "{aws:?}");
    assert!(cold.latency_ms.p50 > 0.0 && cold.latency_ms.p99 >= cold.latency_ms.p50);
    assert!(cold.peak_rss_mib["worker"] > 0.0);
    assert!(cold.timeline.len() >= 2);
    // (c) Warm: every tag is at the destination already.
    let warm = run(&mut stack, &generated, &fleet("c-warm")).await.unwrap();
    assert_clean(&warm, &stack);
    assert_eq!(warm.jobs_emitted, 0, "{:?}", warm.jobs);
    assert_eq!(warm.blob_requests, Some(0), "a warm run touched blobs");
    assert_eq!(warm.verdict.duplicated, Some(0), "a warm run copied");
    // The outputs a person reads.
    let results = [cold, warm];
    let md = report::markdown(&results);
    assert!(md.contains("a-clean") && md.contains("c-warm"), "{md}");
    let svg = report::svg(&results);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_workers_killed_and_registry_and_aws_faults_lose_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut stack = Stack::start_local(bin_dir(None).unwrap()).await.unwrap();
    let generated = stack.generate(&spec()).await.unwrap();
    let opts = RunOpts {
        kill_every: Some(Duration::from_secs(3)),
        registry_fault_every: 20,
        aws_fault_every: 20,
        ..fleet("b-chaos")
    };
    let r = run(&mut stack, &generated, &opts).await.unwrap();
    println!(
        "b: {:.1} s, {} kills, {:?} faults, jobs {:?}, {:?} tags copied twice or more",
        r.wall_s,
        r.kills_at_s.len(),
        r.faults,
        r.jobs,
        r.verdict.duplicated
    );
    assert_clean(&r, &stack);
    assert!(!r.kills_at_s.is_empty(), "no worker was killed");
    assert!(
        r.faults.get("registry_faults").copied().unwrap_or(0) > 0,
        "{:?}",
        r.faults
    );
    assert!(
        r.faults.get("aws_faults").copied().unwrap_or(0) > 0,
        "{:?}",
        r.faults
    );
    // Every job is terminal: a killed job comes back and succeeds; a dead one has its reason
    // in the DLQ (checked above).
    let terminal: u64 = ["succeeded", "skipped", "superseded", "conflict", "dead"]
        .iter()
        .map(|s| r.jobs.get(*s).copied().unwrap_or(0))
        .sum();
    assert_eq!(terminal, 300, "{:?}", r.jobs);
}
