//! The DynamoDB ledger's state machine on moto: conditional starts and finishes, duplicates,
//! releases and replays, as racing workers and operators would drive it.

use ecr_sync::digest::Digest;
use ecr_sync::fleet::ledger::{
    bootstrap_table, Finish, FleetLedger, HistoryEntry, RunRecord, Start,
};
use ecr_sync::fleet::message::JobMessage;
use ecr_sync::job::{CopyJob, Destination, PlannedJob};
use ecr_sync::vocab::{ErrorClass, JobEvent, JobState};
use ecr_sync_testkit::moto::MotoProcess;

async fn ledger(moto: &MotoProcess) -> FleetLedger {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(moto.endpoint())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await;
    let client = aws_sdk_dynamodb::Client::new(&conf);
    bootstrap_table(&client, "ledger").await.unwrap();
    let ledger = FleetLedger::new(client, "ledger");
    // The jobs below belong to this run (`job show` finds a job through the latest runs).
    ledger
        .start_run(&RunRecord {
            run_id: "run-1".into(),
            started_at: "2026-12-02T00:00:00.000Z".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    ledger
}

fn job(tag: &str) -> JobMessage {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let job = CopyJob {
        source_registry: "src.example".into(),
        source_repo: "team/app".into(),
        tag: tag.into(),
        source_digest: Some(Digest::parse(&digest).unwrap()),
        destination_registry: "dst.example".into(),
        destination_repo: "team/app".into(),
    };
    let planned = PlannedJob {
        job,
        immutable_tags: true,
        dst_may_hold_blobs: false,
        destination: Destination::Absent,
        manifest: None,
        confirm_source_tag: true,
        source_schema_tags: None,
    };
    JobMessage::new("run-1", &planned)
}

fn finish(state: &str, attempt: u64) -> Finish {
    Finish {
        state: state.parse().unwrap(),
        attempt,
        bytes: 10,
        duration_ms: 5,
        ..Default::default()
    }
}

fn events(history: &[HistoryEntry]) -> Vec<String> {
    history
        .iter()
        .map(|e| e.event.map(|e| e.to_string()).unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_deliveries_racing_end_with_one_success_and_a_duplicate_event() {
    let moto = MotoProcess::start().await;
    let l = ledger(&moto).await;
    let m = job("v1");
    // Both deliveries start before either finishes; both run long enough to be marked.
    assert!(matches!(l.start_job(&m).await.unwrap(), Start::Go(1)));
    assert!(l.mark_running(&m, "w1", 1).await.unwrap());
    assert!(matches!(l.start_job(&m).await.unwrap(), Start::Go(2)));
    assert!(l.mark_running(&m, "w2", 2).await.unwrap());
    assert!(l
        .finish_job(&m, "w2", &finish("succeeded", 2))
        .await
        .unwrap());
    // The loser's finish is refused, whatever it says, and leaves a trace.
    assert!(!l
        .finish_job(&m, "w1", &finish("succeeded", 1))
        .await
        .unwrap());
    let item = l.job("run-1", &m.job_id).await.unwrap().unwrap();
    assert_eq!(
        (item.state.as_str(), item.worker.as_deref()),
        ("succeeded", Some("w2"))
    );
    assert_eq!(item.attempts, 2);
    let mut seen = events(&l.job_history(&m.job_id).await.unwrap());
    seen.sort();
    assert_eq!(seen, ["duplicate", "succeeded"]);
    // A third delivery after the end does not start, nor can it be marked running.
    assert!(!l.mark_running(&m, "w3", 3).await.unwrap());
    match l.start_job(&m).await.unwrap() {
        Start::AlreadyDone(ended) => assert_eq!(ended.state, JobState::Succeeded),
        Start::Go(n) => panic!("a finished job started again (attempt {n})"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_then_a_success_clears_the_reason_and_a_dead_job_can_be_replayed() {
    let moto = MotoProcess::start().await;
    let l = ledger(&moto).await;
    let m = job("v2");
    assert!(matches!(l.start_job(&m).await.unwrap(), Start::Go(1)));
    let failed = Finish {
        error_class: Some(ErrorClass::Transient),
        error: Some("HTTP 500".into()),
        ..finish("failed", 1)
    };
    assert!(l.finish_job(&m, "w1", &failed).await.unwrap());
    // A short attempt writes only its outcome; the next one is numbered from it.
    assert!(matches!(l.start_job(&m).await.unwrap(), Start::Go(2)));
    let dead = Finish {
        error_class: Some(ErrorClass::Auth),
        error: Some("not authorized".into()),
        ..finish("dead", 2)
    };
    assert!(l.finish_job(&m, "w1", &dead).await.unwrap());
    let item = l.job("run-1", &m.job_id).await.unwrap().unwrap();
    assert_eq!(item.state, JobState::Dead);
    assert_eq!(item.error_class, Some(ErrorClass::Auth));
    // An operator replays it: queued again, counted, and it can run and succeed.
    l.requeue_job(&m, JobEvent::Replayed, "operator")
        .await
        .unwrap();
    let item = l.job("run-1", &m.job_id).await.unwrap().unwrap();
    assert_eq!((item.state.as_str(), item.replays), ("queued", 1));
    assert!(matches!(l.start_job(&m).await.unwrap(), Start::Go(3)));
    assert!(l
        .finish_job(&m, "w2", &finish("succeeded", 3))
        .await
        .unwrap());
    let item = l.job("run-1", &m.job_id).await.unwrap().unwrap();
    assert_eq!(item.state, JobState::Succeeded);
    assert_eq!(item.error_class, None, "a success clears the old reason");
    let history = events(&l.job_history(&m.job_id).await.unwrap());
    assert_eq!(history, ["failed", "dead", "replayed", "succeeded"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_only_puts_back_a_job_that_is_still_running() {
    let moto = MotoProcess::start().await;
    let l = ledger(&moto).await;
    let m = job("v3");
    l.mark_running(&m, "w1", 1).await.unwrap();
    l.requeue_job(&m, JobEvent::Released, "w1").await.unwrap();
    assert_eq!(
        l.job("run-1", &m.job_id).await.unwrap().unwrap().state,
        JobState::Queued
    );
    l.mark_running(&m, "w2", 2).await.unwrap();
    l.finish_job(&m, "w2", &finish("succeeded", 2))
        .await
        .unwrap();
    // A late release from the first worker must not undo the success.
    l.requeue_job(&m, JobEvent::Released, "w1").await.unwrap();
    assert_eq!(
        l.job("run-1", &m.job_id).await.unwrap().unwrap().state,
        JobState::Succeeded
    );
    let history = events(&l.job_history(&m.job_id).await.unwrap());
    assert_eq!(history, ["released", "succeeded"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_plan_left_pending_is_remembered_per_repository_and_checked_against_the_jobs() {
    use ecr_sync::fleet::ledger::pending::{Candidate, PendingJobs, SentIn};
    let moto = MotoProcess::start().await;
    let l = ledger(&moto).await;
    let sent_now = ecr_sync::fleet::ledger::pending::sent_now("run-1");
    let long_ago = SentIn {
        run_id: "run-0".into(),
        at: "2020-01-01T00:00:00.000Z".into(),
    };
    let tags = [
        "waiting",
        "lost",
        "running",
        "failing",
        "dead",
        "done",
        "conflict-stands",
        "conflict-resolved",
    ];
    let jobs: Vec<JobMessage> = tags.iter().map(|t| job(t)).collect();
    let mut left = PendingJobs::default();
    for (tag, m) in tags.iter().zip(&jobs) {
        let sent = if *tag == "lost" { &long_ago } else { &sent_now };
        left.0.insert(m.job_id.clone(), sent.clone());
    }
    let repos = std::collections::HashMap::from([("team/app".to_string(), left.clone())]);
    l.record_pending(&repos).await.unwrap();
    let read = l.pending_jobs("team/app").await.unwrap();
    assert_eq!(read.0, left.0, "the record reads back as written");
    assert!(l.pending_jobs("team/other").await.unwrap().0.is_empty());
    // Drive each job to its state ("waiting" and "lost" never started).
    let by_tag = |t: &str| &jobs[tags.iter().position(|x| *x == t).unwrap()];
    for t in [
        "running",
        "failing",
        "dead",
        "done",
        "conflict-stands",
        "conflict-resolved",
    ] {
        l.mark_running(by_tag(t), "w1", 1).await.unwrap();
    }
    for t in ["conflict-stands", "conflict-resolved"] {
        l.finish_job(by_tag(t), "w1", &finish("conflict", 1))
            .await
            .unwrap();
    }
    l.finish_job(by_tag("failing"), "w1", &finish("failed", 1))
        .await
        .unwrap();
    l.finish_job(by_tag("dead"), "w1", &finish("dead", 1))
        .await
        .unwrap();
    l.finish_job(by_tag("done"), "w1", &finish("succeeded", 1))
        .await
        .unwrap();
    let asked: Vec<Candidate> = read
        .0
        .into_iter()
        .map(|(job_id, sent)| Candidate {
            // The destination tag still holds another image in an immutable repository for
            // one conflict; the other was resolved (the tag deleted, or the repository made
            // mutable).
            conflict_stands: job_id == by_tag("conflict-stands").job_id,
            job_id,
            sent,
        })
        .collect();
    let still = l.still_pending(&asked).await.unwrap();
    let mut pending: Vec<&str> = tags
        .iter()
        .copied()
        .filter(|t| still.contains(&by_tag(t).job_id))
        .collect();
    pending.sort();
    // Not started but recent, running, coming back, dead-lettered, a conflict that stands:
    // pending. Not started for days (its message is gone), done, a resolved conflict: sent
    // again.
    assert_eq!(
        pending,
        ["conflict-stands", "dead", "failing", "running", "waiting"]
    );
    // A rejected job that a plan sent but no worker started is known as planned.
    assert!(l.planned(by_tag("waiting")).await.unwrap());
    assert!(!l.planned(by_tag("done")).await.unwrap());
    let mut forged = job("forged");
    forged.job_id = "f".repeat(32);
    assert!(!l.planned(&forged).await.unwrap());
}

/// Waits up to 30 s for `f` to hold.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Asks for slots of `budget` a hundred times a second (a worker writing manifests) until
/// `stop` turns true.
fn keep_asking(
    budget: std::sync::Arc<ecr_sync::registry::Budget>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !*stop.borrow() {
            budget.ask();
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(10)) => {}
                _ = stop.changed() => {}
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_split_a_manifest_put_budget_through_their_leases_and_withdraw_them() {
    use ecr_sync::fleet::budget::share;
    use ecr_sync::registries::Budgets;
    use tokio::sync::watch;
    const HOST: &str = "111122223333.dkr.ecr.us-east-1.amazonaws.com";
    let moto = MotoProcess::start().await;
    let ledger = ledger(&moto).await;
    let (a, b) = (Budgets::shared(), Budgets::shared());
    let (budget_a, budget_b) = (a.for_host(HOST, 10.0), b.for_host(HOST, 10.0));
    // A shared budget starts low, until the ledger says what this worker's share is.
    assert!(budget_a.ceiling() <= 1.0, "{}", budget_a.ceiling());
    let (stop_a, sharing_a) = watch::channel(false);
    let (stop_b, sharing_b) = watch::channel(false);
    let sharer_a = tokio::spawn(share(ledger.clone(), a.clone(), "a".into(), sharing_a));
    let sharer_b = tokio::spawn(share(ledger.clone(), b.clone(), "b".into(), sharing_b));
    let (stop_asking_a, asking_a) = watch::channel(false);
    let (stop_asking_b, asking_b) = watch::channel(false);
    let asker_a = keep_asking(budget_a.clone(), asking_a);
    // Alone, A gets the whole budget (B, asking nothing, holds no lease).
    eventually("A's share to be the whole budget", || {
        budget_a.ceiling() == 10.0
    })
    .await;
    // B starts writing: each gets half.
    let asker_b = keep_asking(budget_b.clone(), asking_b);
    eventually("an even split", || {
        budget_a.ceiling() == 5.0 && budget_b.ceiling() == 5.0
    })
    .await;
    let leases = ledger.budget_leases(HOST, "manifest-put").await.unwrap();
    let mut workers: Vec<&str> = leases.iter().map(|l| l.worker.as_str()).collect();
    workers.sort();
    assert_eq!(workers, ["a", "b"], "{leases:?}");
    // B goes idle: it withdraws its lease and A gets everything again.
    stop_asking_b.send(true).unwrap();
    asker_b.await.unwrap();
    eventually("B's lease to be withdrawn", || budget_a.ceiling() == 10.0).await;
    // A stops (a worker shutting down): its lease goes too.
    stop_a.send(true).unwrap();
    sharer_a.await.unwrap();
    stop_asking_a.send(true).unwrap();
    asker_a.await.unwrap();
    stop_b.send(true).unwrap();
    sharer_b.await.unwrap();
    let leases = ledger.budget_leases(HOST, "manifest-put").await.unwrap();
    assert!(leases.is_empty(), "{leases:?}");
}
