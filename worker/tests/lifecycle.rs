//! A worker's life beyond the happy path: permanent failures, a config that changes under it,
//! a stop that lands in the middle of a long poll, a repository bigger than one send chunk, and a
//! start without its table or queue.

mod common;
use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_is_dead_lettered_on_its_first_attempt() {
    let stack = Stack::start(5).await;
    stack.small_image("bad/app", "v1", 7).await;
    let proxy = proxy::Proxy::start(&stack.src.url(), proxy::Faults::default()).await;
    stack.config_for(&proxy.host(), &[("bad/app", &["**"])]);
    let run = stack.plan()["run_id"].as_str().unwrap().to_string();
    // The source now serves blobs whose bytes do not match their digest: retrying cannot help.
    proxy.set_faults(proxy::Faults {
        corrupt_blobs: true,
        ..Default::default()
    });
    let mut w = stack.worker(&["--exit-when-idle", "3"]);
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.stderr());
    let dead = stack.dlq();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["state"], "dead", "{dead:?}");
    assert_eq!(dead[0]["error_class"], "digest_mismatch", "{dead:?}");
    // One attempt of the queue's five: the remaining receives were not burned.
    assert_eq!(dead[0]["attempts"], 1, "{dead:?}");
    assert_eq!(stack.depth(&stack.queue_url).await, 0);
    assert_eq!(stack.dst_digest("bad/app", "v1").await, None);
    let status = stack.status(&run);
    assert_eq!(status["states"]["dead"], 1, "{status}");
    assert_eq!(status["failed"][0]["error_class"], "digest_mismatch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_worker_picks_up_a_changed_config() {
    let stack = Stack::start(5).await;
    let other = stack.small_image("team/other", "v1", 8).await;
    stack.ecr_source_config(&[("team/app", &["**"])]);
    let mut w = stack.worker(&["--config-refresh-seconds", "1"]);
    let worker = &w;
    stack
        .send_raw(&push_event("team/other", "v1", &other.digest))
        .await;
    eventually(
        Duration::from_secs(30),
        "the event to be acknowledged",
        || worker.stderr().contains("not covered by the config"),
    )
    .await;
    assert_eq!(stack.dst_digest("team/other", "v1").await, None);

    stack.ecr_source_config(&[("team/app", &["**"]), ("team/other", &["v*"])]);
    eventually(Duration::from_secs(30), "the config reload", || {
        worker.stderr().contains("config changed")
    })
    .await;
    stack
        .send_raw(&push_event("team/other", "v1", &other.digest))
        .await;
    eventually(Duration::from_secs(30), "the copy", || {
        worker.stderr().contains("job done")
    })
    .await;
    assert_eq!(
        stack.dst_digest("team/other", "v1").await,
        Some(other.digest)
    );
    w.signal("TERM");
    assert_eq!(w.wait(Duration::from_secs(30)), 0, "{}", w.stderr());
    assert_eq!(stack.depth(&stack.queue_url).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_a_long_poll_hands_back_what_the_poll_brings() {
    let stack = Stack::start(5).await;
    let image = stack.small_image("poll/app", "v1", 9).await;
    stack.config_for(&stack.src.host(), &[("poll/app", &["**"])]);
    stack.plan();
    let body = stack.take_message().await;
    // The queue is empty, so the worker sits in a 20 s poll when it is told to stop; the job
    // arrives after that, while the poll is still open.
    let mut w = stack.worker(&["--wait-seconds", "20", "--visibility-seconds", "600"]);
    let worker = &w;
    eventually(Duration::from_secs(30), "the worker to start", || {
        worker.stderr().contains("worker started")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    w.signal("TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.send_raw(&body).await;
    assert_eq!(w.wait(Duration::from_secs(40)), 0, "{}", w.stderr());
    assert!(
        w.stderr()
            .contains("released messages received while stopping"),
        "{}",
        w.stderr()
    );
    // Visible again at once, not after the 600 s visibility the worker asked for.
    assert_eq!(stack.counts(&stack.queue_url).await, (1, 0));
    let mut next = stack.worker(&["--exit-when-idle", "3"]);
    assert_eq!(next.wait(Duration::from_secs(60)), 0, "{}", next.stderr());
    assert_eq!(stack.dst_digest("poll/app", "v1").await, Some(image.digest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_larger_than_a_send_chunk_is_planned_in_full() {
    let stack = Stack::start(5).await;
    for i in 0..130u64 {
        stack
            .small_image("many/app", &format!("t{i:03}"), 1000 + i)
            .await;
    }
    stack.config_for(&stack.src.host(), &[("many/app", &["t0*", "t10*", "t11*"])]);
    // 120 tags match; copy them with the one-machine sync, then open up the rest.
    let ledger = stack.dir.path().join("sync.db");
    let synced = stack.planner(&[
        "sync",
        "--ledger",
        ledger.to_str().unwrap(),
        "--no-progress",
    ]);
    assert_eq!(synced.code, 0, "{}", synced.stderr);
    stack.config_for(&stack.src.host(), &[("many/app", &["**"])]);
    let plan = stack.plan();
    // Three chunks of 50 mixing up-to-date tags and jobs: every count survives the chunking.
    assert_eq!(plan["planned"], 10, "{plan}");
    assert_eq!(plan["up_to_date"], 120, "{plan}");
    assert_eq!(stack.depth(&stack.queue_url).await, 10);
    let run = plan["run_id"].as_str().unwrap();
    assert_eq!(stack.status(run)["states"]["queued"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_refuses_to_start_without_its_table_or_queue_and_says_which() {
    let stack = Stack::start(5).await;
    stack.config_for(&stack.src.host(), &[("any/app", &["**"])]);
    let mut w = stack.worker(&["--ledger-table", "no-such-table"]);
    assert_eq!(w.wait(Duration::from_secs(30)), 2, "{}", w.stderr());
    let err = w.stderr();
    assert!(
        err.contains("DynamoDB DescribeTable on no-such-table: ResourceNotFoundException"),
        "{err}"
    );
    let missing = format!("{}-missing", stack.queue_url);
    let mut w = stack.worker(&["--queue-url", &missing]);
    assert_eq!(w.wait(Duration::from_secs(30)), 2, "{}", w.stderr());
    let err = w.stderr();
    assert!(
        err.contains(&missing) && err.contains("NonExistentQueue"),
        "{err}"
    );
    // One readable line, not the SDK's dump of the raw HTTP response.
    assert!(!err.contains("raw: Response"), "{err}");
}
