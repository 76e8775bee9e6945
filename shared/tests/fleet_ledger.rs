//! The DynamoDB ledger's state machine on moto: conditional starts and finishes, duplicates,
//! releases and replays, as racing workers and operators would drive it.

use ecr_sync::digest::Digest;
use ecr_sync::fleet::ledger::{bootstrap_table, Finish, FleetLedger, HistoryEntry, Start};
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
    FleetLedger::new(client, "ledger")
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
    l.queue_jobs(std::slice::from_ref(&m)).await.unwrap();
    // Both deliveries start before either finishes: each counts an attempt.
    assert!(matches!(l.start_job(&m, "w1").await.unwrap(), Start::Go(1)));
    assert!(matches!(l.start_job(&m, "w2").await.unwrap(), Start::Go(2)));
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
    // A third delivery after the end does not start.
    match l.start_job(&m, "w3").await.unwrap() {
        Start::AlreadyDone(ended) => assert_eq!(ended.state, JobState::Succeeded),
        Start::Go(n) => panic!("a finished job started again (attempt {n})"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_then_a_success_clears_the_reason_and_a_dead_job_can_be_replayed() {
    let moto = MotoProcess::start().await;
    let l = ledger(&moto).await;
    let m = job("v2");
    l.queue_jobs(std::slice::from_ref(&m)).await.unwrap();
    l.start_job(&m, "w1").await.unwrap();
    let failed = Finish {
        error_class: Some(ErrorClass::Transient),
        error: Some("HTTP 500".into()),
        ..finish("failed", 1)
    };
    assert!(l.finish_job(&m, "w1", &failed).await.unwrap());
    assert!(matches!(l.start_job(&m, "w1").await.unwrap(), Start::Go(2)));
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
    assert!(matches!(l.start_job(&m, "w2").await.unwrap(), Start::Go(3)));
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
    l.queue_jobs(std::slice::from_ref(&m)).await.unwrap();
    l.start_job(&m, "w1").await.unwrap();
    l.requeue_job(&m, JobEvent::Released, "w1").await.unwrap();
    assert_eq!(
        l.job("run-1", &m.job_id).await.unwrap().unwrap().state,
        JobState::Queued
    );
    l.start_job(&m, "w2").await.unwrap();
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
