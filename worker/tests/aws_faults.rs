//! The fleet against AWS misbehaving, through testkit's proxy in front of moto: a stalled
//! endpoint, an outage longer than the receive budget, lost responses at every step, a lease
//! lost mid-copy, a planner killed mid-run — and what one job costs in AWS calls.

mod common;
use common::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_aws_endpoint_fails_the_call_in_bounded_time_instead_of_hanging() {
    // An endpoint that accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "destination_registry": "127.0.0.1:1",
            "repos": [{"source": "127.0.0.1:2/team/app"}],
            "registries": {"127.0.0.1:1": {"plain_http": true}, "127.0.0.1:2": {"plain_http": true}}
        })
        .to_string(),
    )
    .unwrap();
    let started = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ecr-sync-worker"))
        .env_remove("AWS_PROFILE")
        .envs([
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            (
                "ECR_SYNC_QUEUE_URL",
                &format!("{endpoint}/123456789012/jobs"),
            ),
            ("ECR_SYNC_LEDGER_TABLE", "ledger"),
            ("ECR_SYNC_CONFIG", config.to_str().unwrap()),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let limit = Duration::from_secs(75);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("the worker still waits on a stalled AWS endpoint after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(
        err.to_lowercase().contains("timeout") || err.contains("timed out"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_receive_budget_ends_with_every_job_copied() {
    // The queue allows two receives; the outage outlasts several retries.
    let stack = Stack::start(2).await;
    let want = stack.small_images("outage/app", 3, 200).await;
    let proxy = proxy::Proxy::start(&stack.src.url(), proxy::Faults::default()).await;
    stack.config_for(&proxy.host(), &[("outage/app", &["**"])]);
    let run = stack.plan()["run_id"].as_str().unwrap().to_string();
    proxy.set_faults(proxy::Faults {
        error_every: 1,
        ..Default::default()
    });
    // An hour compressed: 1 s first retry delay, a 120 s give-up window, a 12 s outage.
    let w = stack.worker(&["--give-up-after-seconds", "120"]);
    tokio::time::sleep(Duration::from_secs(12)).await;
    proxy.set_faults(proxy::Faults::default());
    stack.until_copied(&want, Duration::from_secs(60)).await;
    let status = stack.status(&run);
    assert_eq!(status["states"]["succeeded"], 3, "{status}\n{}", w.stderr());
    let job = stack.job(status["slowest"][0]["job_id"].as_str().unwrap());
    let failures = job["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "failed")
        .count();
    assert!(
        failures >= 2,
        "the outage did not outlast the receive budget: {job}"
    );
    assert_eq!(stack.depth(&stack.dlq_url).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_aws_responses_at_every_step_lose_no_job_and_record_each_once() {
    let stack = Stack::start(5).await;
    let want = stack.small_images("lossy/app", 4, 300).await;
    stack.config_for(&stack.src.host(), &[("lossy/app", &["**"])]);
    let run = stack.plan()["run_id"].as_str().unwrap().to_string();
    // The calls reach moto and take effect; their answers never come back.
    let aws = awsproxy::AwsProxy::start(&stack.moto.endpoint()).await;
    let lose = |calls: &[u64]| awsproxy::OpFault {
        lose: calls.to_vec(),
        ..Default::default()
    };
    aws.set_fault("ReceiveMessage", lose(&[2]));
    aws.set_fault("UpdateItem", lose(&[1, 4, 6]));
    aws.set_fault("GetItem", lose(&[1]));
    aws.set_fault("DeleteMessageBatch", lose(&[1]));
    aws.set_fault("ChangeMessageVisibilityBatch", lose(&[1]));
    let endpoint = aws.endpoint();
    let mut w = stack.worker_with_env(
        &["--exit-when-idle", "8"],
        &[("AWS_ENDPOINT_URL", endpoint.as_str())],
    );
    assert_eq!(w.wait(Duration::from_secs(120)), 0, "{}", w.stderr());
    stack.until_copied(&want, Duration::from_secs(5)).await;
    let status = stack.status(&run);
    assert_eq!(status["states"]["succeeded"], 4, "{status}\n{}", w.stderr());
    assert_eq!(status["states"].as_object().unwrap().len(), 1, "{status}");
    assert_eq!(stack.depth(&stack.queue_url).await, 0);
    assert_eq!(stack.depth(&stack.dlq_url).await, 0);
    // Receive #2, UpdateItem #1/#4/#6 (job starts and finishes) and the first batch delete
    // happen in any run.
    assert!(
        aws.lost() >= 5,
        "only {} responses lost: {:?}",
        aws.lost(),
        aws.counts()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_failures_in_a_row_of_one_aws_call_do_not_fail_a_plan() {
    // The SDK tries each call five times: a plan whose first message send fails four times
    // (500s) still plans everything (with the SDK's default of three it failed outright).
    let stack = Stack::start(5).await;
    stack.small_images("retry/app", 3, 900).await;
    stack.config_for(&stack.src.host(), &[("retry/app", &["**"])]);
    let aws = awsproxy::AwsProxy::start(&stack.moto.endpoint()).await;
    aws.set_fault(
        "SendMessageBatch",
        awsproxy::OpFault {
            fail: vec![1, 2, 3, 4],
            error: Some((500, "InternalError".into())),
            ..Default::default()
        },
    );
    let endpoint = aws.endpoint();
    let plan = stack
        .planner_with_env(
            &["plan", "--json"],
            &[("AWS_ENDPOINT_URL", endpoint.as_str())],
        )
        .ok()
        .json();
    assert_eq!(plan["planned"], 3, "{plan}");
    assert_eq!(aws.counts().calls("SendMessageBatch"), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_job_costs_at_most_half_an_sqs_request_and_two_dynamodb_writes() {
    let stack = Stack::start(5).await;
    let jobs = 60u64;
    stack.small_images("cost/app", jobs, 400).await;
    stack.config_for(&stack.src.host(), &[("cost/app", &["**"])]);
    let aws = awsproxy::AwsProxy::start(&stack.moto.endpoint()).await;
    let endpoint = aws.endpoint();
    let via = [("AWS_ENDPOINT_URL", endpoint.as_str())];
    let plan = stack
        .planner_with_env(&["plan", "--json"], &via)
        .ok()
        .json();
    assert_eq!(plan["planned"], jobs);
    let planned = aws.counts();
    aws.reset_counts();
    let mut w = stack.worker_with_env(&["--exit-when-idle", "2", "--wait-seconds", "1"], &via);
    assert_eq!(w.wait(Duration::from_secs(120)), 0, "{}", w.stderr());
    let worked = aws.counts();
    let per_job = |n: u64| n as f64 / jobs as f64;
    let sqs_plan = planned.service_calls(&awsproxy::SQS_OPS);
    let sqs_work = worked.service_calls(&awsproxy::SQS_OPS);
    let writes = planned.dynamodb_item_writes() + worked.dynamodb_item_writes();
    let index = planned.dynamodb_index_writes() + worked.dynamodb_index_writes();
    // Printed for the notes (`--nocapture`); the worker's start-up calls and its idle long
    // polls at the end are included.
    println!(
        "per job: SQS {:.2} (plan {:.2}, worker {:.2}: {:?}), DynamoDB writes {:.2} = items {:.2} + index {:.2} (plan {:?} {:?}, worker {:?} {:?})",
        per_job(sqs_plan + sqs_work),
        per_job(sqs_plan),
        per_job(sqs_work),
        worked.calls,
        per_job(writes + index),
        per_job(writes),
        per_job(index),
        planned.item_writes,
        planned.index_writes,
        worked.item_writes,
        worked.index_writes,
    );
    // The targets: at most half an SQS request and two DynamoDB writes (index writes
    // included) per job, the plan's and the worker's start-up and idle calls included.
    assert!(
        per_job(writes + index) <= 2.0,
        "{}",
        per_job(writes + index)
    );
    assert!(
        per_job(sqs_plan + sqs_work) <= 0.5,
        "{}",
        per_job(sqs_plan + sqs_work)
    );
    // Every job was recorded succeeded.
    let status = stack.status(plan["run_id"].as_str().unwrap());
    assert_eq!(status["states"]["succeeded"], jobs, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_that_learns_the_lease_is_lost_stops_the_copy() {
    let stack = Stack::start(5).await;
    let p = stack.small_image("lease/app", "v1", 1).await;
    // Blob GETs take 2 s each, so the copy outlives the first heartbeat (every 1 s).
    let slow = proxy::Proxy::start(
        &stack.src.url(),
        proxy::Faults {
            blob_delay: Duration::from_secs(2),
            ..Default::default()
        },
    )
    .await;
    stack.config_for(&slow.host(), &[("lease/app", &["**"])]);
    let run = stack.plan()["run_id"].as_str().unwrap().to_string();
    let aws = awsproxy::AwsProxy::start(&stack.moto.endpoint()).await;
    // The heartbeat is batched: SQS refuses the entry, not the call.
    aws.set_fault(
        "ChangeMessageVisibilityBatch",
        awsproxy::OpFault {
            fail: vec![1],
            error: Some((400, "ReceiptHandleIsInvalid".into())),
            entries: true,
            ..Default::default()
        },
    );
    let endpoint = aws.endpoint();
    let mut w = stack.worker_with_env(
        &["--exit-when-idle", "6"],
        &[("AWS_ENDPOINT_URL", endpoint.as_str())],
    );
    assert_eq!(w.wait(Duration::from_secs(120)), 0, "{}", w.stderr());
    let err = w.stderr();
    assert!(err.contains("lease lost"), "{err}");
    // The delivery that held the message afterwards copied and recorded it.
    assert_eq!(stack.dst_digest("lease/app", "v1").await, Some(p.digest));
    let status = stack.status(&run);
    assert_eq!(status["states"]["succeeded"], 1, "{status}");
    assert!(
        status["slowest"][0]["attempts"].as_u64().unwrap() >= 2,
        "{status}"
    );
    assert_eq!(stack.depth(&stack.queue_url).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planner_killed_mid_run_leaves_no_queued_job_without_a_message_and_status_says_stalled() {
    let stack = Stack::start(5).await;
    let want = stack.small_images("crash/app", 5, 500).await;
    stack.config_for(&stack.src.host(), &[("crash/app", &["**"])]);
    // The planner's send is held on its way to SQS; the planner dies meanwhile.
    let aws = awsproxy::AwsProxy::start(&stack.moto.endpoint()).await;
    aws.set_fault(
        "SendMessageBatch",
        awsproxy::OpFault {
            stall: Duration::from_secs(8),
            ..Default::default()
        },
    );
    let mut planner = std::process::Command::new(planner_bin())
        .args(["plan", "--json"])
        .envs(stack.env())
        .env("AWS_ENDPOINT_URL", aws.endpoint())
        .env_remove("AWS_PROFILE")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while aws.counts().calls("SendMessageBatch") == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{:?}",
            aws.counts()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    planner.kill().unwrap();
    planner.wait().unwrap();
    // Whatever the worker finds, it finishes; nothing is left `queued` with no message.
    let mut w = stack.worker(&["--exit-when-idle", "3"]);
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.stderr());
    let status = stack.planner(&["status", "--json"]).ok().json();
    let queued = status["states"]["queued"].as_u64().unwrap_or(0);
    assert_eq!(
        queued, 0,
        "queued jobs whose messages were never sent: {status}"
    );
    assert_eq!(status["run"]["state"], "planning", "{status}");
    assert_eq!(status["stalled"], false, "not yet 10 minutes: {status}");
    let status = stack
        .planner(&["status", "--json", "--stalled-after-seconds", "0"])
        .ok()
        .json();
    assert_eq!(status["stalled"], true, "{status}");
    // The next plan covers what the dead one did not send.
    stack.plan();
    let mut w = stack.worker(&["--exit-when-idle", "3"]);
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.stderr());
    stack.until_copied(&want, Duration::from_secs(5)).await;
}
