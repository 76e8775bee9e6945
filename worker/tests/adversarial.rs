//! The fleet tried the way production tries it: replays while workers poll, dead-letter sends
//! that fail, late (stale) jobs, forged jobs, and push events that move a tag back and forth.
//! Real moto, real registries, real worker processes.

mod common;
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Waits (bounded) until every `(repo, tag, digest)` is at the destination.
async fn until_copied(stack: &Stack, want: &[(&str, String, String)], limit: Duration) {
    let start = Instant::now();
    loop {
        let mut missing = Vec::new();
        for (repo, tag, digest) in want {
            if stack.dst_digest(repo, tag).await.as_ref() != Some(digest) {
                missing.push(format!("{repo}:{tag}"));
            }
        }
        if missing.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "still not copied after {limit:?}: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_jobs_replayed_while_a_worker_polls_are_all_copied() {
    let stack = Stack::start(5).await;
    let mut want = Vec::new();
    for i in 0..6u64 {
        let tag = format!("v{i}");
        let p = stack.small_image("replay/app", &tag, 100 + i).await;
        want.push(("replay/app", tag, p.digest));
    }
    let proxy = proxy::Proxy::start(&stack.src.url(), proxy::Faults::default()).await;
    stack.config_for(&proxy.host(), &[("replay/app", &["**"])]);
    let run = stack.plan()["run_id"].as_str().unwrap().to_string();
    proxy.set_faults(proxy::Faults {
        corrupt_blobs: true,
        ..Default::default()
    });
    let mut w = stack.worker(&["--exit-when-idle", "3"]);
    assert_eq!(w.wait(Duration::from_secs(90)), 0, "{}", w.stderr());
    assert_eq!(stack.dlq().len(), 6);

    // The source is fixed; a worker is polling while the operator replays.
    proxy.set_faults(proxy::Faults::default());
    let live = stack.worker(&[]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let replay = stack
        .planner(&["dlq", "replay", "--all", "--json"])
        .ok()
        .json();
    assert_eq!(replay["replayed"].as_array().unwrap().len(), 6, "{replay}");
    until_copied(&stack, &want, Duration::from_secs(60)).await;
    let status = stack.status(&run);
    assert_eq!(
        status["states"]["succeeded"],
        6,
        "{status}\n{}",
        live.stderr()
    );
    assert_eq!(status["states"].as_object().unwrap().len(), 1, "{status}");
    assert_eq!(stack.depth(&stack.dlq_url).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_recorded_dead_reaches_the_dead_letter_queue_even_when_the_first_send_fails() {
    let stack = Stack::start(3).await;
    stack.small_image("lost/app", "v1", 7).await;
    let proxy = proxy::Proxy::start(&stack.src.url(), proxy::Faults::default()).await;
    stack.config_for(&proxy.host(), &[("lost/app", &["**"])]);
    let run = stack.plan()["run_id"].as_str().unwrap().to_string();
    proxy.set_faults(proxy::Faults {
        corrupt_blobs: true,
        ..Default::default()
    });
    // This worker's dead-letter queue does not exist: recording `dead` works, the send fails.
    let missing_dlq = format!("{}/123456789012/no-such-queue", stack.moto.endpoint());
    let mut w = stack.worker(&["--dlq-url", &missing_dlq, "--exit-when-idle", "4"]);
    assert_eq!(w.wait(Duration::from_secs(90)), 0, "{}", w.stderr());
    assert_eq!(stack.status(&run)["states"]["dead"], 1);
    // Whatever happened to the message since (redelivery, redrive), the job is in the DLQ
    // with its class and reason; a healthy worker finishes what is left.
    let mut w = stack.worker(&["--exit-when-idle", "3"]);
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.stderr());
    let dead = stack.dlq();
    assert!(!dead.is_empty(), "the dead job vanished\n{}", w.stderr());
    assert!(
        dead.iter().all(|d| d["error_class"] == "digest_mismatch"),
        "{dead:?}"
    );
    assert_eq!(stack.depth(&stack.queue_url).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_job_for_an_old_digest_does_not_move_the_tag_back() {
    let stack = Stack::start(5).await;
    stack.small_image("stale/app", "v1", 1).await;
    stack.config_for(&stack.src.host(), &[("stale/app", &["**"])]);
    let old_run = stack.plan()["run_id"].as_str().unwrap().to_string();
    let old = stack.take_message().await;
    // The tag moves to B, which is planned and copied.
    let b = stack.small_image("stale/app", "v1", 2).await;
    stack.plan();
    let mut w = stack.worker(&["--exit-when-idle", "3"]);
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.stderr());
    assert_eq!(
        stack.dst_digest("stale/app", "v1").await,
        Some(b.digest.clone())
    );
    // The job for A arrives late.
    stack.send_raw(&old).await;
    let mut w = stack.worker(&["--exit-when-idle", "3"]);
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.stderr());
    assert_eq!(
        stack.dst_digest("stale/app", "v1").await,
        Some(b.digest),
        "the stale job moved the tag back\n{}",
        w.stderr()
    );
    let status = stack.status(&old_run);
    assert_eq!(status["states"]["superseded"], 1, "{status}");
    assert_eq!(
        stack.depth(&stack.dlq_url).await,
        0,
        "superseded is not an error"
    );
    assert_eq!(stack.depth(&stack.queue_url).await, 0);
}

/// A job message naming `source_repo:tag` → `dst_repo`, as a forger would write it.
/// Well formed: its job id matches its contents.
fn forged(stack: &Stack, source_repo: &str, tag: &str, dst_repo: &str, digest: &str) -> String {
    let job = ecr_sync::job::CopyJob {
        source_registry: stack.src.host(),
        source_repo: source_repo.into(),
        tag: tag.into(),
        source_digest: Some(ecr_sync::digest::Digest::parse(digest).unwrap()),
        destination_registry: stack.dst.host(),
        destination_repo: dst_repo.into(),
    };
    serde_json::json!({
        "v": 1, "job_id": job.id(), "run_id": "forged",
        "source": {"registry": stack.src.host(), "repository": source_repo, "tag": tag, "digest": digest},
        "destination": {"registry": stack.dst.host(), "repository": dst_repo},
        "immutable_tags": false, "probe": false
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_foreign_jobs_are_rejected_and_dead_lettered_without_touching_a_registry() {
    let stack = Stack::start(5).await;
    let allowed = stack.small_image("team/app", "v1", 1).await;
    let secret = stack.small_image("other/secret", "v1", 2).await;
    stack.config_for(&stack.src.host(), &[("team/app", &["v*"])]);
    let bodies = [
        // A repository the config does not name.
        forged(&stack, "other/secret", "v1", "other/secret", &secret.digest),
        // A configured source copied somewhere else.
        forged(&stack, "team/app", "v1", "elsewhere/app", &allowed.digest),
        // A tag outside the mapping's globs.
        forged(&stack, "team/app", "latest", "team/app", &allowed.digest),
        // A tag that is not a tag: it would change the URL.
        forged(
            &stack,
            "team/app",
            "../../other/secret/manifests/v1",
            "team/app",
            &allowed.digest,
        ),
    ];
    for b in &bodies {
        stack.send_raw(b).await;
    }
    let mut w = stack.worker(&["--exit-when-idle", "3"]);
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.stderr());
    for repo in ["other/secret", "elsewhere/app", "team/app"] {
        assert!(
            tags_at(&stack, repo).await.is_empty(),
            "{repo} was written at the destination"
        );
    }
    let dead = stack.dlq();
    assert_eq!(dead.len(), bodies.len(), "{dead:?}");
    for d in &dead {
        assert_eq!(d["error_class"], "rejected_job", "{d}");
        assert!(!d["reason"].as_str().unwrap_or("").is_empty(), "{d}");
    }
    assert_eq!(stack.depth(&stack.queue_url).await, 0);
}

/// Tags of a destination repository (empty when it does not exist).
async fn tags_at(stack: &Stack, repo: &str) -> Vec<String> {
    let resp = stack
        .dst
        .client()
        .get(format!("{}/v2/{repo}/tags/list", stack.dst.url()))
        .send()
        .await
        .unwrap();
    if resp.status().as_u16() == 404 {
        return Vec::new();
    }
    let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    v["tags"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_events_moving_a_tag_a_to_b_and_back_to_a_on_one_day_end_at_a() {
    let stack = Stack::start(5).await;
    stack.ecr_source_config(&[("flip/app", &["**"])]);
    let mut w = stack.worker(&[]);
    let a = stack.small_image("flip/app", "v1", 1).await;
    stack
        .send_raw(&push_event("flip/app", "v1", &a.digest))
        .await;
    until_copied(
        &stack,
        &[("flip/app", "v1".into(), a.digest.clone())],
        Duration::from_secs(30),
    )
    .await;
    let b = stack.small_image("flip/app", "v1", 2).await;
    stack
        .send_raw(&push_event("flip/app", "v1", &b.digest))
        .await;
    until_copied(
        &stack,
        &[("flip/app", "v1".into(), b.digest.clone())],
        Duration::from_secs(30),
    )
    .await;
    // Back to A: re-tag the first image.
    stack
        .seeder()
        .manifest("flip/app", "v1", &a.media_type, a.bytes.clone())
        .await
        .unwrap();
    stack
        .send_raw(&push_event("flip/app", "v1", &a.digest))
        .await;
    let start = Instant::now();
    while stack.dst_digest("flip/app", "v1").await.as_ref() != Some(&a.digest) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the third event was not copied\n{}",
            w.stderr()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    w.signal("TERM");
    assert_eq!(w.wait(Duration::from_secs(30)), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_event_reaches_every_config_entry_that_covers_it() {
    let stack = Stack::start(5).await;
    let v1 = stack.small_image("team/app", "v1", 1).await;
    // Two entries copy v* of one source to two destinations; a third selects other tags.
    stack.ecr_source_config(&[("team/app", &["v*"])]);
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(stack.dir.path().join("config.json")).unwrap())
            .unwrap();
    let source = format!("{ECR_SOURCE}/team/app");
    config["repos"].as_array_mut().unwrap().extend([
        serde_json::json!({"source": source, "destination": "mirror/app", "tags": ["v*"]}),
        serde_json::json!({"source": source, "destination": "dev/app", "tags": ["dev"]}),
    ]);
    stack.write_config(&config);
    stack
        .send_raw(&push_event("team/app", "v1", &v1.digest))
        .await;
    let mut w = stack.worker(&["--exit-when-idle", "3"]);
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.stderr());
    assert_eq!(
        stack.dst_digest("team/app", "v1").await,
        Some(v1.digest.clone())
    );
    assert_eq!(stack.dst_digest("mirror/app", "v1").await, Some(v1.digest));
    assert!(tags_at(&stack, "dev/app").await.is_empty());
    let status = stack.planner(&["status", "--json"]).ok().json();
    assert_eq!(status["states"]["succeeded"], 2, "{status}");
    assert_eq!(stack.depth(&stack.queue_url).await, 0);
    assert_eq!(stack.depth(&stack.dlq_url).await, 0);
}

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
async fn a_reloaded_config_that_cannot_run_is_not_swapped_in_and_jobs_keep_copying() {
    let stack = Stack::start(5).await;
    let v1 = stack.small_image("reload/app", "v1", 1).await;
    let good = stack.config_for(&stack.src.host(), &[("reload/app", &["**"])]);
    let good_path = stack.dir.path().join("good.json");
    std::fs::write(&good_path, good.to_string()).unwrap();
    let mut w = stack.worker(&["--config-refresh-seconds", "1"]);
    let worker = &w;
    eventually(Duration::from_secs(30), "the worker to start", || {
        worker.stderr().contains("worker started")
    })
    .await;
    // A new version that parses but cannot run: the source now takes its credentials from
    // variables that are not set (yet).
    let mut bad = good.clone();
    bad["registries"][stack.src.host()]["username_env"] = "ECR_SYNC_TEST_UNSET_USER".into();
    bad["registries"][stack.src.host()]["password_env"] = "ECR_SYNC_TEST_UNSET_PASS".into();
    stack.write_config(&bad);
    let start = Instant::now();
    loop {
        let err = w.stderr();
        if err.contains("config changed") || err.contains("cannot run") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no reload\n{err}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Jobs planned meanwhile (with the good config) are still copied.
    stack
        .planner(&["plan", "--config", good_path.to_str().unwrap(), "--json"])
        .ok();
    let start = Instant::now();
    while stack.dst_digest("reload/app", "v1").await.as_ref() != Some(&v1.digest) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not copied after a bad reload\n{}",
            w.stderr()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(w.stderr().contains("cannot run"), "{}", w.stderr());
    assert_eq!(stack.depth(&stack.dlq_url).await, 0);
    w.signal("TERM");
    assert_eq!(w.wait(Duration::from_secs(30)), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_from_a_newer_ecr_sync_are_handed_back_not_dead_lettered() {
    let stack = Stack::start(10).await;
    let p = stack.small_image("upgrade/app", "v1", 1).await;
    stack.config_for(&stack.src.host(), &[("upgrade/app", &["**"])]);
    stack.plan();
    let body: Value = serde_json::from_str(&stack.take_message().await).unwrap();
    let mut newer_version = body.clone();
    newer_version["v"] = 2.into();
    let mut newer_field = body.clone();
    newer_field["priority"] = 5.into();
    stack.send_raw(&newer_version.to_string()).await;
    stack.send_raw(&newer_field.to_string()).await;
    let mut w = stack.worker(&["--exit-when-idle", "3"]);
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.stderr());
    let err = w.stderr();
    assert!(err.contains("newer worker"), "{err}");
    assert_eq!(stack.dst_digest("upgrade/app", "v1").await, None);
    assert_eq!(stack.depth(&stack.dlq_url).await, 0, "{err}");
    assert_eq!(
        stack.depth(&stack.queue_url).await,
        2,
        "both wait for a newer worker"
    );
    // The same job as this version writes it is copied.
    stack.send_raw(&body.to_string()).await;
    let mut w = stack.worker(&["--exit-when-idle", "2"]);
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.stderr());
    assert_eq!(stack.dst_digest("upgrade/app", "v1").await, Some(p.digest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_receive_budget_ends_with_every_job_copied() {
    // The queue allows two receives; the outage outlasts several retries.
    let stack = Stack::start(2).await;
    let mut want = Vec::new();
    for i in 0..3u64 {
        let tag = format!("v{i}");
        let p = stack.small_image("outage/app", &tag, 200 + i).await;
        want.push(("outage/app", tag, p.digest));
    }
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
    until_copied(&stack, &want, Duration::from_secs(60)).await;
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
    let mut want = Vec::new();
    for i in 0..4u64 {
        let tag = format!("v{i}");
        let p = stack.small_image("lossy/app", &tag, 300 + i).await;
        want.push(("lossy/app", tag, p.digest));
    }
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
    aws.set_fault("PutItem", lose(&[1]));
    aws.set_fault("DeleteMessage", lose(&[1]));
    aws.set_fault("ChangeMessageVisibility", lose(&[1]));
    let endpoint = aws.endpoint();
    let mut w = stack.worker_with_env(
        &["--exit-when-idle", "8"],
        &[("AWS_ENDPOINT_URL", endpoint.as_str())],
    );
    assert_eq!(w.wait(Duration::from_secs(120)), 0, "{}", w.stderr());
    until_copied(&stack, &want, Duration::from_secs(5)).await;
    let status = stack.status(&run);
    assert_eq!(status["states"]["succeeded"], 4, "{status}\n{}", w.stderr());
    assert_eq!(status["states"].as_object().unwrap().len(), 1, "{status}");
    assert_eq!(stack.depth(&stack.queue_url).await, 0);
    assert_eq!(stack.depth(&stack.dlq_url).await, 0);
    // Receive #2, UpdateItem #1/#4/#6, PutItem #1 and DeleteMessage #1 happen in any run.
    assert!(
        aws.lost() >= 6,
        "only {} responses lost: {:?}",
        aws.lost(),
        aws.counts()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_calls_one_job_costs_stay_within_todays_bounds() {
    let stack = Stack::start(5).await;
    let jobs = 20u64;
    for i in 0..jobs {
        stack
            .small_image("cost/app", &format!("v{i}"), 400 + i)
            .await;
    }
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
    // Printed for the notes (`--nocapture`); idle long polls at the end are included.
    println!(
        "per job: SQS {:.2} (plan {:.2}, worker {:.2}: {:?}), DynamoDB item writes {:.2} (plan {:?}, worker {:?})",
        per_job(sqs_plan + sqs_work),
        per_job(sqs_plan),
        per_job(sqs_work),
        worked.calls,
        per_job(writes),
        planned.item_writes,
        worked.item_writes
    );
    // Today's design (a ceiling that catches added calls; the target is lower).
    assert!(per_job(writes) <= 4.5, "{}", per_job(writes));
    assert!(
        per_job(sqs_plan + sqs_work) <= 3.0,
        "{}",
        per_job(sqs_plan + sqs_work)
    );
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
    aws.set_fault(
        "ChangeMessageVisibility",
        awsproxy::OpFault {
            fail: vec![1],
            error: Some((400, "ReceiptHandleIsInvalid".into())),
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
    let mut want = Vec::new();
    for i in 0..5u64 {
        let tag = format!("v{i}");
        let p = stack.small_image("crash/app", &tag, 500 + i).await;
        want.push(("crash/app", tag, p.digest));
    }
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
    until_copied(&stack, &want, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replanning_does_not_queue_again_what_an_earlier_run_has_pending_or_dead() {
    let stack = Stack::start(5).await;
    for i in 0..3u64 {
        stack
            .small_image("again/app", &format!("v{i}"), 600 + i)
            .await;
    }
    let proxy = proxy::Proxy::start(&stack.src.url(), proxy::Faults::default()).await;
    stack.config_for(&proxy.host(), &[("again/app", &["**"])]);
    assert_eq!(stack.plan()["planned"], 3);
    // Nothing ran yet: the same jobs are still pending from the first run.
    let second = stack.plan();
    assert_eq!(second["planned"], 0, "{second}");
    assert_eq!(second["pending_elsewhere"], 3, "{second}");
    assert_eq!(stack.depth(&stack.queue_url).await, 3);
    // They die (corrupt source); the next plan does not dead-letter them all over again.
    proxy.set_faults(proxy::Faults {
        corrupt_blobs: true,
        ..Default::default()
    });
    let mut w = stack.worker(&["--exit-when-idle", "3"]);
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.stderr());
    assert_eq!(stack.dlq().len(), 3);
    let third = stack.plan();
    assert_eq!(third["planned"], 0, "{third}");
    assert_eq!(third["pending_elsewhere"], 3, "{third}");
    assert_eq!(stack.depth(&stack.queue_url).await, 0);
    assert_eq!(stack.dlq().len(), 3);
}
