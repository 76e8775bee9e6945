//! `sync` as a process: stopping on a signal, and memory bounded by the in-process queue rather
//! than by the plan. Real registries behind the fault proxy (which can hold blob GETs so copies
//! are surely in flight), the real binary.

mod common;
use common::*;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Pair {
    _src: RegistryProcess,
    dst: RegistryProcess,
    src_proxy: proxy::Proxy,
    dst_proxy: proxy::Proxy,
}

async fn pair(images: u64) -> Pair {
    let src = RegistryProcess::start(RegistryOpts::default()).await;
    let dst = RegistryProcess::start(RegistryOpts::default()).await;
    let s = seed::Seeder::new(reqwest::Client::new(), &src.url(), None);
    for i in 0..images {
        s.image(
            "slow/app",
            Some(&format!("v{i:03}")),
            vec![seed::noise(i, 1024)],
            &[],
            ("linux", "amd64"),
        )
        .await
        .unwrap();
    }
    let src_proxy = proxy::Proxy::start(&src.url(), proxy::Faults::default()).await;
    let dst_proxy = proxy::Proxy::start(&dst.url(), proxy::Faults::default()).await;
    Pair {
        _src: src,
        dst,
        src_proxy,
        dst_proxy,
    }
}

impl Pair {
    fn config(&self) -> Value {
        json!({
            "repos": [{ "source": format!("{}/slow/app", self.src_proxy.host()) }],
            "destination_registry": self.dst_proxy.host(),
            "registries": {
                self.src_proxy.host(): { "plain_http": true },
                self.dst_proxy.host(): { "plain_http": true }
            }
        })
    }

    fn blob_delay(&self, d: Duration) {
        self.src_proxy.set_faults(proxy::Faults {
            blob_delay: d,
            ..Default::default()
        });
    }
}

/// Starts `ecr-sync sync` in the background with a report and a ledger in `w`.
fn spawn_sync(w: &Workdir, cfg: &Value, extra: &[&str]) -> Child {
    let config = w.write_config(cfg);
    Command::new(env!("CARGO_BIN_EXE_ecr-sync"))
        .args(["sync", "--config"])
        .arg(&config)
        .arg("--report")
        .arg(w.path("report.json"))
        .arg("--ledger")
        .arg(w.path("ledger.db"))
        .args(extra)
        .env("ECR_SYNC_FAST_RETRY", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ecr-sync")
}

async fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn blob_gets(p: &proxy::Proxy) -> usize {
    p.requests()
        .iter()
        .filter(|(m, p)| m == "GET" && p.contains("/blobs/sha256:"))
        .count()
}

fn interrupt(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn finish(child: Child, w: &Workdir) -> (i32, String, String, Value) {
    let out = child.wait_with_output().unwrap();
    let report = std::fs::read(w.path("report.json"))
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap_or(Value::Null);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
        report,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_lets_running_copies_finish_records_the_run_interrupted_and_exits_130() {
    let p = pair(8).await;
    p.blob_delay(Duration::from_millis(1500));
    let w = Workdir::new();
    let child = spawn_sync(&w, &p.config(), &["--concurrency", "2"]);
    wait_for("a copy in flight", Duration::from_secs(30), || {
        blob_gets(&p.src_proxy) > 0
    })
    .await;
    interrupt(&child);
    let (code, stdout, stderr, report) = finish(child, &w);
    assert_eq!(code, 130, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("interrupted"), "{stdout}");
    assert_eq!(report["state"], "interrupted", "{report}");
    let copied = report["copied"].as_u64().unwrap();
    // The copies running at the signal finished; nothing new started.
    assert!((1..=2).contains(&copied), "copied {copied}: {report}");
    assert_eq!(report["cancelled"], 0);
    assert_eq!(report["failed"], 0);
    assert_eq!(tags(&p.dst, "slow/app").await.len() as u64, copied);
    let ledger = ecr_sync::ledger::Ledger::open(&w.path("ledger.db")).unwrap();
    let run_id = report["run_id"].as_str().unwrap();
    assert_eq!(
        ledger.run_state(run_id).unwrap(),
        Some(ecr_sync::vocab::RunState::Interrupted)
    );
    let jobs = ledger.jobs(run_id).unwrap();
    assert_eq!(jobs.len() as u64, copied, "{jobs:?}");
    assert!(jobs
        .iter()
        .all(|j| j.state == ecr_sync::vocab::JobState::Succeeded));

    // A rerun finishes the rest and records a finished run.
    p.blob_delay(Duration::ZERO);
    let rest = w.sync(&p.config(), &[], &[]);
    rest.assert_code(0);
    assert_eq!(rest.count("copied"), 8 - copied);
    assert_eq!(rest.report()["state"], "finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_that_outlast_the_stop_timeout_are_cut_off_and_counted() {
    let p = pair(4).await;
    p.blob_delay(Duration::from_secs(20));
    let w = Workdir::new();
    let child = spawn_sync(
        &w,
        &p.config(),
        &["--concurrency", "2", "--stop-timeout-seconds", "1"],
    );
    wait_for("a copy in flight", Duration::from_secs(30), || {
        blob_gets(&p.src_proxy) > 0
    })
    .await;
    let signalled = Instant::now();
    interrupt(&child);
    let (code, stdout, stderr, report) = finish(child, &w);
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "the stop timeout bounds the wait"
    );
    assert_eq!(code, 130, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(report["copied"], 0, "{report}");
    assert_eq!(report["cancelled"], 2, "{report}");
    assert!(stdout.contains("2 copies cut off"), "{stdout}");
    assert!(tags(&p.dst, "slow/app").await.is_empty());
}

/// A repository with many tags is planned only as fast as the runners take its jobs: tags
/// resolved at the source but not yet pushed to the destination stay within the queue's bound
/// (2 per runner) plus what is being resolved and run — far fewer than the plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planning_waits_for_the_runners_so_memory_is_bounded_by_the_queue() {
    const TAGS: usize = 60;
    let p = pair(TAGS as u64).await;
    p.blob_delay(Duration::from_millis(40));
    let w = Workdir::new();
    let child = spawn_sync(&w, &p.config(), &["--concurrency", "1"]);
    let manifests = |pr: &proxy::Proxy, method: &str| {
        pr.requests()
            .iter()
            .filter(|(m, path)| m == method && path.contains("/manifests/v"))
            .count()
    };
    let mut most_ahead = 0;
    let started = Instant::now();
    loop {
        let resolved = manifests(&p.src_proxy, "GET");
        let pushed = manifests(&p.dst_proxy, "PUT");
        most_ahead = most_ahead.max(resolved.saturating_sub(pushed));
        if pushed >= TAGS {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "sync too slow"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (code, stdout, stderr, report) = finish(child, &w);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(report["copied"], TAGS as u64);
    // Queue (2 per runner) + one job waiting to enter it + 16 being resolved + 1 running.
    let bound = 2 + 1 + 16 + 1;
    assert!(
        most_ahead <= bound,
        "{most_ahead} tags were resolved ahead of the runner (bound {bound}, plan {TAGS})"
    );
}
