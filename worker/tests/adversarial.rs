//! The fleet tried the way production tries it: replays while workers poll, dead-letter sends
//! that fail, late (stale) jobs, forged jobs, and push events that move a tag back and forth.
//! Real moto, real registries, real worker processes.

mod common;
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_jobs_replayed_while_a_worker_polls_are_all_copied() {
    let stack = Stack::start(5).await;
    let want = stack.small_images("replay/app", 6, 100).await;
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
    stack.until_copied(&want, Duration::from_secs(60)).await;
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
            stack.tags_at(repo).await.is_empty(),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_events_moving_a_tag_a_to_b_and_back_to_a_on_one_day_end_at_a() {
    let stack = Stack::start(5).await;
    stack.ecr_source_config(&[("flip/app", &["**"])]);
    let mut w = stack.worker(&[]);
    let a = stack.small_image("flip/app", "v1", 1).await;
    stack
        .send_raw(&push_event("flip/app", "v1", &a.digest))
        .await;
    stack
        .until_copied(
            &[("flip/app", "v1".into(), a.digest.clone())],
            Duration::from_secs(30),
        )
        .await;
    let b = stack.small_image("flip/app", "v1", 2).await;
    stack
        .send_raw(&push_event("flip/app", "v1", &b.digest))
        .await;
    stack
        .until_copied(
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
    assert!(stack.tags_at("dev/app").await.is_empty());
    let status = stack.planner(&["status", "--json"]).ok().json();
    assert_eq!(status["states"]["succeeded"], 2, "{status}");
    assert_eq!(stack.depth(&stack.queue_url).await, 0);
    assert_eq!(stack.depth(&stack.dlq_url).await, 0);
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
async fn replanning_does_not_queue_again_what_an_earlier_run_has_pending_or_dead() {
    let stack = Stack::start(5).await;
    stack.small_images("again/app", 3u64, 600).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_deleted_at_the_destination_after_a_worker_copied_it_is_copied_again() {
    let stack = Stack::start(5).await;
    let s = stack.seeder();
    let shared = seed::noise(7, 3000);
    let platform = ("linux", "amd64");
    let a = s
        .image(
            "gone/app",
            Some("a"),
            vec![shared.clone(), seed::noise(8, 3000)],
            &[],
            platform,
        )
        .await
        .unwrap();
    stack.config_for(&stack.src.host(), &[("gone/app", &["**"])]);
    stack.plan();
    let mut w = stack.worker(&["--exit-when-idle", "15"]);
    stack
        .until_copied(
            &[("gone/app", "a".to_string(), a.digest)],
            Duration::from_secs(30),
        )
        .await;
    // The shared layer is deleted at the destination (by hand, or a lifecycle policy) while
    // the worker still believes the repository holds it.
    let layer = ecr_sync::digest::Digest::of(&shared).to_string();
    let deleted = stack
        .dst
        .client()
        .delete(format!("{}/v2/gone/app/blobs/{layer}", stack.dst.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 202);
    let b = s
        .image(
            "gone/app",
            Some("b"),
            vec![shared, seed::noise(9, 3000)],
            &[],
            platform,
        )
        .await
        .unwrap();
    let run = stack.plan()["run_id"].as_str().unwrap().to_string();
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.stderr());
    assert_eq!(
        stack.dst_digest("gone/app", "b").await,
        Some(b.digest),
        "{}",
        w.stderr()
    );
    assert_eq!(stack.status(&run)["states"]["succeeded"], 1);
    assert!(
        w.stderr().contains("lacks content it was believed to hold"),
        "{}",
        w.stderr()
    );
}
