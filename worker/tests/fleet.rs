//! The fleet end to end: plan → SQS → workers → DynamoDB ledger, on moto and local registries.

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_then_two_workers_copy_everything_and_the_ledger_agrees() {
    let stack = Stack::start(5).await;
    let s = stack.seeder();
    let base = s.blob("team/api", seed::noise(7, 50_000)).await.unwrap();
    let mut expected = BTreeMap::new();
    for repo in ["team/api", "team/web", "team/db"] {
        if repo != "team/api" {
            s.blob(repo, seed::noise(7, 50_000)).await.unwrap();
        }
        for i in 0..4 {
            let tag = format!("v{i}");
            let p = s
                .image(
                    repo,
                    Some(&tag),
                    vec![seed::noise(100 + i + repo.len() as u64 * 10, 3000)],
                    &[(base.clone(), 50_000)],
                    ("linux", "amd64"),
                )
                .await
                .unwrap();
            expected.insert((repo.to_string(), tag), p.digest);
        }
    }
    let (index, _) = s.multi_arch("team/multi", "latest", 9).await.unwrap();
    expected.insert(("team/multi".into(), "latest".into()), index.digest);
    s.image(
        "team/api",
        Some("dev"),
        vec![seed::noise(5, 10)],
        &[],
        ("linux", "amd64"),
    )
    .await
    .unwrap();
    // Blob GETs take 300 ms, so the 13 jobs outlast a worker's start-up on a loaded machine
    // and both workers take part.
    let slow = proxy::Proxy::start(
        &stack.src.url(),
        proxy::Faults {
            blob_delay: Duration::from_millis(300),
            ..Default::default()
        },
    )
    .await;
    stack.config_for(
        &slow.host(),
        &[
            ("team/api", &["v*"]),
            ("team/web", &["**"]),
            ("team/db", &["**"]),
            ("team/multi", &["latest"]),
        ],
    );

    let plan = stack.plan();
    let run = plan["run_id"].as_str().unwrap().to_string();
    assert_eq!(plan["planned"], 13, "{plan}");
    let status = stack.status(&run);
    assert_eq!(status["states"]["queued"], 13, "{status}");

    // Two jobs at a time each, so both workers take part.
    let mut a = stack.worker(&[
        "--exit-when-idle",
        "3",
        "--concurrency",
        "2",
        "--log-format",
        "json",
    ]);
    let mut b = stack.worker(&["--exit-when-idle", "3", "--concurrency", "2"]);
    assert_eq!(a.wait(Duration::from_secs(120)), 0, "{}", a.stderr());
    assert_eq!(b.wait(Duration::from_secs(120)), 0, "{}", b.stderr());

    for ((repo, tag), digest) in &expected {
        let got = stack.dst_digest(repo, tag).await;
        assert_eq!(got.as_deref(), Some(digest.as_str()), "{repo}:{tag}");
    }
    assert_eq!(
        stack.dst_digest("team/api", "dev").await,
        None,
        "glob excluded dev"
    );

    let status = stack.status(&run);
    assert_eq!(status["states"]["succeeded"], 13, "{status}");
    assert_eq!(status["failed"].as_array().unwrap().len(), 0);
    assert!(status["bytes"].as_u64().unwrap() > 50_000);
    assert_eq!(stack.depth(&stack.queue_url).await, 0);
    assert_eq!(stack.depth(&stack.dlq_url).await, 0);

    // Both workers took part, and every finished job left one EMF line.
    let emf: Vec<Value> = [a.stdout(), b.stdout()]
        .iter()
        .flat_map(|o| {
            o.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(emf.len(), 13, "EMF lines");
    assert!(emf
        .iter()
        .all(|m| m["Outcome"] == "succeeded" && m["_aws"]["CloudWatchMetrics"].is_array()));
    assert!(
        !a.stdout().is_empty() && !b.stdout().is_empty(),
        "both workers copied"
    );

    // JSON logs carry run and job ids on job lines.
    let done: Vec<Value> = a
        .stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "job done")
        .collect();
    assert!(!done.is_empty(), "{}", a.stderr());
    for l in &done {
        assert_eq!(l["span"]["run_id"], run.as_str(), "{l}");
        assert_eq!(l["span"]["job_id"].as_str().unwrap().len(), 32, "{l}");
    }

    // Planning again finds everything up to date.
    let again = stack.plan();
    assert_eq!(again["planned"], 0, "{again}");
    assert_eq!(again["up_to_date"], 13, "{again}");
}

/// One image with a big layer, served through a proxy that holds each blob GET for 3 s, so a
/// copy is surely in flight when a kill or drain test acts on it.
async fn big_image(stack: &Stack) -> (String, proxy::Proxy) {
    let s = stack.seeder();
    let layer = s.big_blob("big/app", 3, 192 << 20).await.unwrap();
    let p = s
        .image(
            "big/app",
            Some("v1"),
            vec![],
            &[(layer, 192 << 20)],
            ("linux", "amd64"),
        )
        .await
        .unwrap();
    let slow = proxy::Faults {
        blob_delay: Duration::from_secs(3),
        ..Default::default()
    };
    let proxy = proxy::Proxy::start(&stack.src.url(), slow).await;
    stack.config_for(&proxy.host(), &[("big/app", &["v1"])]);
    (p.digest, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_copy_leaves_the_job_to_another_which_completes_it() {
    let stack = Stack::start(5).await;
    let (digest, _proxy) = big_image(&stack).await;
    let plan = stack.plan();
    let run = plan["run_id"].as_str().unwrap().to_string();
    assert_eq!(plan["planned"], 1);
    let first = stack.worker(&[]);
    let stack_ref = &stack;
    eventually(Duration::from_secs(60), "the job to be running", || {
        stack_ref.status(&run)["states"]["running"] == 1
    })
    .await;
    first.signal("KILL");
    drop(first);
    // The message comes back after its 3 s visibility; a second worker finishes the job.
    let mut second = stack.worker(&["--exit-when-idle", "8"]);
    assert_eq!(
        second.wait(Duration::from_secs(120)),
        0,
        "{}",
        second.stderr()
    );
    assert_eq!(
        stack.dst_digest("big/app", "v1").await.as_deref(),
        Some(digest.as_str())
    );
    let status = stack.status(&run);
    assert_eq!(status["states"]["succeeded"], 1, "{status}");
    let job = &status["slowest"][0];
    assert_eq!(job["attempts"], 2, "{job}");
    assert_eq!(job["worker"], "w1", "{job}");
    assert_eq!(stack.depth(&stack.queue_url).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicated_message_records_one_success() {
    let stack = Stack::start(5).await;
    let p = stack.small_image("dup/app", "v1", 1).await;
    stack.config_for(&stack.src.host(), &[("dup/app", &["**"])]);
    let plan = stack.plan();
    let run = plan["run_id"].as_str().unwrap().to_string();
    // Take the planned message and put it on the queue twice.
    let body = stack.take_message().await;
    for _ in 0..2 {
        stack.send_raw(&body).await;
    }
    let mut w = stack.worker(&["--exit-when-idle", "3"]);
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.stderr());
    assert_eq!(stack.dst_digest("dup/app", "v1").await, Some(p.digest));
    let job_id = serde_json::from_str::<Value>(&body).unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let job = stack.job(&job_id);
    let successes = job["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "succeeded")
        .count();
    assert_eq!(successes, 1, "{job}");
    assert_eq!(job["runs"][0]["state"], "succeeded");
    assert_eq!(job["runs"][0]["run_id"], run.as_str());
    assert_eq!(stack.depth(&stack.queue_url).await, 0);
    assert_eq!(stack.depth(&stack.dlq_url).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_every_receive_was_lost_is_listed_with_why_and_replays() {
    // Workers that die holding a message (or receive answers lost on the way) use up its
    // receives without any worker seeing it: SQS then moves it to the DLQ with no class and no
    // reason, its job never recorded. `dlq list` says what happened, and replay copies it.
    let stack = Stack::start(2).await;
    let p = stack.small_image("lost/app", "v1", 4).await;
    stack.config_for(&stack.src.host(), &[("lost/app", &["**"])]);
    let run = stack.plan()["run_id"].as_str().unwrap().to_string();
    let sqs = stack.sqs().await;
    let mut received = 0;
    for _ in 0..20 {
        // Received with a 1 s visibility and never acknowledged: a worker killed at once.
        let got = sqs
            .receive_message()
            .queue_url(&stack.queue_url)
            .visibility_timeout(1)
            .wait_time_seconds(2)
            .send()
            .await
            .unwrap();
        received += got.messages().len();
        if stack.depth(&stack.dlq_url).await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    assert_eq!(
        received, 2,
        "maxReceiveCount 2: two receives, then the redrive"
    );
    assert_eq!(stack.depth(&stack.dlq_url).await, 1);
    let dead = stack.dlq();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0]["error_class"].is_null(), "{}", dead[0]);
    let reason = dead[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("maxReceiveCount"), "{}", dead[0]);
    assert!(reason.contains("no worker acknowledged"), "{}", dead[0]);
    assert_eq!(stack.status(&run)["states"]["queued"], 1);
    stack.planner(&["dlq", "replay", "--all"]).ok();
    let mut w = stack.worker(&["--exit-when-idle", "3"]);
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.stderr());
    assert_eq!(stack.dst_digest("lost/app", "v1").await, Some(p.digest));
    assert_eq!(stack.status(&run)["states"]["succeeded"], 1);
    assert_eq!(stack.depth(&stack.dlq_url).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_job_is_dead_lettered_after_the_give_up_window_and_replays_once_fixed() {
    let stack = Stack::start(2).await;
    let p = stack.small_image("poison/app", "v1", 2).await;
    let proxy = proxy::Proxy::start(&stack.src.url(), proxy::Faults::default()).await;
    stack.config_for(&proxy.host(), &[("poison/app", &["**"])]);
    let plan = stack.plan();
    assert_eq!(plan["planned"], 1);
    let run = plan["run_id"].as_str().unwrap().to_string();
    // Now every source request fails with a 500: a transient failure that never heals.
    proxy.set_faults(proxy::Faults {
        error_every: 1,
        ..Default::default()
    });
    // Retries are fresh messages, so the queue's two receives are not the limit: the job
    // is retried until it has been failing for the give-up window. Retries come 1 s, 2 s and
    // 4 s apart; a 5 s window lets the second attempt retry even when an attempt takes
    // seconds (a busy CI machine once gave up at the second), and the idle limit outlasts
    // the longest delay.
    let mut w = stack.worker(&["--exit-when-idle", "10", "--give-up-after-seconds", "5"]);
    assert_eq!(w.wait(Duration::from_secs(120)), 0, "{}", w.stderr());
    let dead = stack.dlq();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["state"], "dead", "{dead:?}");
    assert!(dead[0]["attempts"].as_u64().unwrap() >= 3, "{dead:?}");
    assert_eq!(dead[0]["error_class"], "transient", "{dead:?}");
    assert!(
        dead[0]["reason"].as_str().unwrap().contains("500"),
        "{dead:?}"
    );
    // Listing does not consume.
    assert_eq!(stack.dlq().len(), 1);
    assert_eq!(stack.status(&run)["failed"][0]["state"], "dead");

    proxy.set_faults(proxy::Faults::default());
    let replay = stack
        .planner(&["dlq", "replay", "--error-class", "transient", "--json"])
        .ok()
        .json();
    assert_eq!(replay["replayed"].as_array().unwrap().len(), 1, "{replay}");
    assert_eq!(stack.depth(&stack.dlq_url).await, 0);
    let mut w = stack.worker(&["--exit-when-idle", "3"]);
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.stderr());
    assert_eq!(stack.dst_digest("poison/app", "v1").await, Some(p.digest));
    let job_id = dead[0]["job_id"].as_str().unwrap();
    let job = stack.job(job_id);
    assert_eq!(job["runs"][0]["state"], "succeeded", "{job}");
    assert_eq!(job["runs"][0]["replays"], 1, "{job}");
    let events: Vec<&str> = job["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    let failed = events.iter().take_while(|e| **e == "failed").count();
    assert!(failed >= 2, "{job}");
    assert_eq!(events[failed..], ["dead", "replayed", "succeeded"], "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_jobs_or_releases_them_at_the_deadline() {
    let stack = Stack::start(5).await;
    let (digest, _proxy) = big_image(&stack).await;
    let run = stack.plan()["run_id"].as_str().unwrap().to_string();
    // Deadline 0: the in-flight job is released, visible again, and recorded as such.
    let mut w = stack.worker(&["--drain-seconds", "0"]);
    let stack_ref = &stack;
    eventually(Duration::from_secs(60), "the job to be running", || {
        stack_ref.status(&run)["states"]["running"] == 1
    })
    .await;
    w.signal("TERM");
    assert_eq!(w.wait(Duration::from_secs(30)), 0, "{}", w.stderr());
    assert!(w.stderr().contains("released"), "{}", w.stderr());
    let status = stack.status(&run);
    assert_eq!(status["states"]["queued"], 1, "{status}");

    // A generous deadline: the worker finishes the job, then exits 0.
    let mut w = stack.worker(&["--drain-seconds", "60"]);
    eventually(
        Duration::from_secs(60),
        "the job to be running again",
        || stack_ref.status(&run)["states"]["running"] == 1,
    )
    .await;
    w.signal("TERM");
    assert_eq!(w.wait(Duration::from_secs(90)), 0, "{}", w.stderr());
    assert_eq!(
        stack.dst_digest("big/app", "v1").await.as_deref(),
        Some(digest.as_str())
    );
    assert_eq!(stack.status(&run)["states"]["succeeded"], 1);
    assert_eq!(stack.depth(&stack.queue_url).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_message_is_dead_lettered_and_the_worker_keeps_serving() {
    let stack = Stack::start(5).await;
    let p = stack.small_image("ok/app", "v1", 3).await;
    stack.config_for(&stack.src.host(), &[("ok/app", &["**"])]);
    stack.send_raw("this is not json").await;
    stack.send_raw(r#"{"v": 1, "job_id": "x"}"#).await;
    let run = stack.plan()["run_id"].as_str().unwrap().to_string();
    let mut w = stack.worker(&["--exit-when-idle", "3"]);
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.stderr());
    assert_eq!(stack.dst_digest("ok/app", "v1").await, Some(p.digest));
    assert_eq!(stack.status(&run)["states"]["succeeded"], 1);
    let mut dead = stack.dlq();
    dead.sort_by_key(|d| d["reason"].as_str().unwrap_or("").to_string());
    assert_eq!(dead.len(), 2, "{dead:?}");
    for d in &dead {
        assert_eq!(d["error_class"], "bad_message", "{d}");
        assert!(d["job_id"].is_null());
    }
    let reasons: Vec<&str> = dead
        .iter()
        .map(|d| d["parse_error"].as_str().unwrap())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("not JSON")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("missing field")),
        "{reasons:?}"
    );
    // Replay leaves what is not a job where it is.
    let replay = stack
        .planner(&["dlq", "replay", "--all", "--json"])
        .ok()
        .json();
    assert_eq!(replay["not_jobs"], 2, "{replay}");
    assert_eq!(stack.dlq().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_events_copy_configured_images_and_acknowledge_the_rest() {
    let stack = Stack::start(5).await;
    let v1 = stack.small_image("team/app", "v1", 4).await;
    let dev = stack.small_image("team/app", "dev", 5).await;
    let other = stack.small_image("team/other", "v1", 6).await;
    // The ECR source host is served by the local registry.
    stack.ecr_source_config(&[("team/app", &["v*"])]);
    stack
        .send_raw(&push_event("team/app", "v1", &v1.digest))
        .await;
    stack
        .send_raw(&push_event("team/app", "dev", &dev.digest))
        .await;
    stack
        .send_raw(&push_event("team/other", "v1", &other.digest))
        .await;
    let mut w = stack.worker(&["--exit-when-idle", "3"]);
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.stderr());
    assert_eq!(stack.dst_digest("team/app", "v1").await, Some(v1.digest));
    assert_eq!(stack.dst_digest("team/app", "dev").await, None);
    assert_eq!(stack.dst_digest("team/other", "v1").await, None);
    assert_eq!(stack.depth(&stack.queue_url).await, 0);
    assert_eq!(stack.depth(&stack.dlq_url).await, 0);
    let err = w.stderr();
    assert_eq!(err.matches("not covered by the config").count(), 2, "{err}");
    // The day's event run holds the one job.
    let status = stack.planner(&["status", "--json"]).ok().json();
    assert!(
        status["run"]["run_id"]
            .as_str()
            .unwrap()
            .starts_with("events-"),
        "{status}"
    );
    assert_eq!(status["states"]["succeeded"], 1, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_copy_referrers_and_a_replan_sends_only_images_whose_referrers_are_missing() {
    use ecr_sync_testkit::artifacts::{Listing, COSIGN_SIGNATURE, SPDX_SBOM};
    let stack = Stack::start(5).await;
    let s = stack.seeder();
    let v1 = stack.small_image("team/app", "v1", 1).await;
    let v2 = stack.small_image("team/app", "v2", 2).await;
    let mut referrers = Vec::new();
    for (artifact_type, seed) in [(COSIGN_SIGNATURE, 11), (SPDX_SBOM, 12)] {
        let r = s
            .referrer("team/app", &v1, artifact_type, seed, Listing::TagSchema)
            .await
            .unwrap();
        referrers.push(r.digest);
    }
    referrers.sort();
    stack.config_for(&stack.src.host(), &[("team/app", &["**"])]);
    let dst = seed::Seeder::new(reqwest::Client::new(), &stack.dst.url(), None);
    let listed_at_dst = |subject: &seed::Pushed| {
        let (dst, digest) = (&dst, subject.digest.clone());
        async move { dst.schema_digests("team/app", &digest).await.unwrap() }
    };

    // The source's sha256-… index is not a job: its referrers travel with v1.
    let plan = stack.plan();
    assert_eq!(plan["planned"], 2, "{plan}");
    let run = plan["run_id"].as_str().unwrap().to_string();
    let mut w = stack.worker(&["--exit-when-idle", "2"]);
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.stderr());
    assert_eq!(listed_at_dst(&v1).await, referrers);
    let status = stack.status(&run);
    assert_eq!(status["states"]["succeeded"], 2, "{status}");
    assert_eq!(status["referrers"], 2, "{status}");

    // Nothing new: nothing sent. A signature added to v2: only v2 is sent, and the worker
    // copies the signature, not the image.
    assert_eq!(stack.plan()["planned"], 0);
    let late = s
        .referrer("team/app", &v2, COSIGN_SIGNATURE, 13, Listing::TagSchema)
        .await
        .unwrap();
    let plan = stack.plan();
    assert_eq!(
        (plan["planned"].clone(), plan["up_to_date"].clone()),
        (1.into(), 1.into()),
        "{plan}"
    );
    let run = plan["run_id"].as_str().unwrap().to_string();
    let mut w = stack.worker(&["--exit-when-idle", "2"]);
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.stderr());
    assert_eq!(listed_at_dst(&v2).await, vec![late.digest]);
    let status = stack.status(&run);
    assert_eq!(status["states"]["succeeded"], 1, "{status}");
    assert_eq!(status["referrers"], 1, "{status}");
    assert!(
        status["bytes"].as_u64().unwrap() < 2000,
        "the signature only: {status}"
    );
    assert_eq!(stack.plan()["planned"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_list_copies_a_rewritten_index_and_a_replan_finds_it_up_to_date() {
    let stack = Stack::start(5).await;
    let s = stack.seeder();
    let (index, children) = s.multi_arch("team/multi", "latest", 4).await.unwrap();
    let mut config = stack.config_for(&stack.src.host(), &[("team/multi", &["**"])]);
    config["platforms"] = serde_json::json!(["linux/arm64"]);
    stack.write_config(&config);

    assert_eq!(stack.plan()["planned"], 1);
    let mut w = stack.worker(&["--exit-when-idle", "2"]);
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.stderr());
    let copied = stack.dst_digest("team/multi", "latest").await.unwrap();
    assert_ne!(copied, index.digest, "rewritten");
    let body: Value = stack
        .dst
        .client()
        .get(format!(
            "{}/v2/team/multi/manifests/latest",
            stack.dst.url()
        ))
        .header("accept", seed::OCI_INDEX)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap();
    let named: Vec<&str> = body["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["digest"].as_str().unwrap())
        .collect();
    assert_eq!(named, [children[1].digest.as_str()], "arm64 only");
    assert_eq!(
        stack.dst_digest("team/multi", &children[0].digest).await,
        None
    );
    // The planner computes the same rewrite: nothing to send.
    let again = stack.plan();
    assert_eq!(
        (again["planned"].clone(), again["up_to_date"].clone()),
        (0.into(), 1.into()),
        "{again}"
    );
}
