//! A plan that stops (as it does at scale when moto's SQS falls behind) is reported with what
//! the run measured, not turned into a run without a report.

use ecr_sync_loadtest::generate::FleetSpec;
use ecr_sync_loadtest::report;
use ecr_sync_loadtest::run::{run, Mode, RunOpts};
use ecr_sync_loadtest::stack::{bin_dir, Stack};
use ecr_sync_testkit::awsproxy::OpFault;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_that_cannot_send_is_a_failed_run_with_a_report() {
    let mut stack = Stack::start_local(bin_dir(None).unwrap()).await.unwrap();
    let spec = FleetSpec {
        repos: 1,
        tags_per_repo: 3,
        seed: 5,
        ..FleetSpec::default()
    };
    let generated = stack.generate(&spec).await.unwrap();
    stack
        .bootstrap(ecr_sync::fleet::queue::DEFAULT_MAX_RECEIVE_COUNT)
        .unwrap();
    // Every SendMessageBatch fails, the SDK's retries included.
    stack.local().unwrap().aws.set_fault(
        "SendMessageBatch",
        OpFault {
            fail: (1..=1000).collect(),
            error: Some((500, "InternalError".into())),
            ..Default::default()
        },
    );
    let opts = RunOpts {
        scenario: "plan-stops".into(),
        mode: Mode::Fleet,
        workers: 1,
        concurrency: 4,
        kill_every: None,
        registry_fault_every: 0,
        registry_fault_kinds: Vec::new(),
        aws_fault_every: 0,
        timeout: Duration::from_secs(120),
        sample_every: Duration::from_millis(500),
    };
    let r = run(&mut stack, &generated, &opts).await.unwrap();
    assert!(!r.verdict.ok(), "{:#?}", r.verdict);
    assert_eq!(r.jobs_emitted, 0);
    assert_eq!(r.verdict.stuck.len(), 1, "{:?}", r.verdict.stuck);
    assert!(
        r.verdict.stuck[0].starts_with("the plan stopped after"),
        "{:?}",
        r.verdict.stuck
    );
    assert!(
        r.verdict.stuck[0].contains("SendMessageBatch"),
        "{:?}",
        r.verdict.stuck
    );
    assert_eq!(r.verdict.lost.len(), 3, "nothing was copied");
    assert!(r.moto_cpu_share.is_some());
    let md = report::markdown(std::slice::from_ref(&r));
    assert!(md.contains("the plan stopped"), "{md}");
}

/// Live processes of this test process started from `program` (their `argv[0]`; the other
/// test here starts workers from another path).
fn children_started_from(program: &std::path::Path) -> Vec<u32> {
    let me = std::process::id().to_string();
    let program = program.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let (head, rest) = stat.rsplit_once(") ")?;
            let pid = head.split_once(" (")?.0.parse().ok()?;
            let mut fields = rest.split_whitespace();
            let state = fields.next()?;
            let ppid = fields.next()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let argv0 = cmdline.split(|b| *b == 0).next()?;
            (ppid == me && state != "Z" && argv0 == program.as_bytes()).then_some(pid)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_fails_half_way_leaves_no_worker_behind() {
    let mut stack = Stack::start_local(bin_dir(None).unwrap()).await.unwrap();
    let spec = FleetSpec {
        repos: 1,
        tags_per_repo: 2,
        seed: 6,
        ..FleetSpec::default()
    };
    let generated = stack.generate(&spec).await.unwrap();
    stack
        .bootstrap(ecr_sync::fleet::queue::DEFAULT_MAX_RECEIVE_COUNT)
        .unwrap();
    // The workers start; the planner cannot (it is not there), so the run fails after them.
    let only_worker = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        stack.bins.join("ecr-sync-worker"),
        only_worker.path().join("ecr-sync-worker"),
    )
    .unwrap();
    stack.bins = only_worker.path().to_path_buf();
    let worker = stack.bins.join("ecr-sync-worker");
    let opts = RunOpts {
        scenario: "fails".into(),
        mode: Mode::Fleet,
        workers: 2,
        concurrency: 2,
        kill_every: None,
        registry_fault_every: 0,
        registry_fault_kinds: Vec::new(),
        aws_fault_every: 0,
        timeout: Duration::from_secs(60),
        sample_every: Duration::from_millis(500),
    };
    let err = run(&mut stack, &generated, &opts).await.unwrap_err();
    assert!(format!("{err:#}").contains("ecr-sync plan"), "{err:#}");
    assert_eq!(children_started_from(&worker), Vec::<u32>::new());
}
