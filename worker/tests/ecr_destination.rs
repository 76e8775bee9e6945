//! The fleet into testkit's local ECR, which follows ECR's rules where a plain registry is lax:
//! PutImage limited per second with `429 TOOMANYREQUESTS` and no `Retry-After` (shared by every
//! worker, as an account's quota is), immutable tags answering `TAG_INVALID` to any second push,
//! lost answers, refused mounts, pushes listed by moto.

mod common;
use common::*;
use ecr_sync_testkit::ecr::{EcrAction, EcrRules, LocalEcr, RateLimits};
use std::time::Duration;

/// A fleet stack (moto, registries) and a local ECR as the destination.
async fn start(rules: EcrRules) -> (Stack, LocalEcr) {
    let stack = Stack::start(5).await;
    let ecr = LocalEcr::start(&stack.moto.endpoint(), "123456789012", "us-east-1", rules).await;
    (stack, ecr)
}

/// Writes a config copying the source repository `repo` into the local ECR, creating the
/// repository with immutable tags; `puts_per_second` is the manifest PUT budget (default:
/// ECR's 10).
fn write_config(stack: &Stack, ecr: &LocalEcr, repo: &str, puts_per_second: Option<u32>) {
    let mut dst = serde_json::json!({ "endpoint": ecr.url(), "plain_http": true });
    if let Some(n) = puts_per_second {
        dst["manifest_puts_per_second"] = n.into();
    }
    stack.write_config(&serde_json::json!({
        "mode": "create",
        "repo_defaults": { "tag_immutability": true, "scan_on_push": false },
        "destination_registry": ecr.host(),
        "repos": [{ "source": format!("{}/{repo}", stack.src.host()) }],
        "registries": { stack.src.host(): { "plain_http": true }, ecr.host(): dst },
    }));
}

/// Asserts the local ECR holds every `(repo, tag, digest)`.
async fn assert_holds(ecr: &LocalEcr, want: &[(&str, String, String)]) {
    for (repo, tag, digest) in want {
        assert_eq!(
            ecr.digest(repo, tag).await.as_deref(),
            Some(digest.as_str()),
            "{repo}:{tag}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_sharing_a_put_image_quota_copy_everything_and_dead_letter_nothing() {
    let rules = EcrRules {
        rate_limits: Some(RateLimits {
            put_image: 5,
            ..Default::default()
        }),
        ..Default::default()
    };
    let (stack, ecr) = start(rules).await;
    let want = stack.small_images("quota/app", 40, 500).await;
    // The account's quota, which the workers split through the ledger.
    write_config(&stack, &ecr, "quota/app", Some(5));
    let run = stack.plan()["run_id"].as_str().unwrap().to_string();
    let args = ["--concurrency", "16", "--exit-when-idle", "5"];
    let mut workers = [stack.worker(&args), stack.worker(&args)];
    for w in &mut workers {
        assert_eq!(w.wait(Duration::from_secs(120)), 0, "{}", w.stderr());
    }
    assert_holds(&ecr, &want).await;
    let status = stack.status(&run);
    assert_eq!(status["states"]["succeeded"], 40, "{status}");
    assert_eq!(stack.depth(&stack.dlq_url).await, 0, "{status}");
    let counts = ecr.counts();
    let (puts, throttled) = (
        counts.calls(EcrAction::PutImage),
        counts.throttled(EcrAction::PutImage),
    );
    println!("PutImage calls {puts}, throttled {throttled}");
    // Pacing on 429s alone let the two overshoot together (4 of 44 calls throttled when
    // this test was written); sharing the budget keeps them within it.
    assert!(
        throttled * 20 <= puts,
        "{throttled} of {puts} PutImage calls throttled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_put_image_answers_on_immutable_tags_end_succeeded_and_nothing_is_dead_lettered() {
    let (stack, ecr) = start(EcrRules::default()).await;
    let want = stack.small_images("imm/app", 6, 700).await;
    write_config(&stack, &ecr, "imm/app", None);
    // ECR commits these PUTs but the answers never arrive; the retries meet TAG_INVALID.
    for _ in 0..3 {
        ecr.lose_next_manifest_put_response();
    }
    let run = stack.plan()["run_id"].as_str().unwrap().to_string();
    let mut w = stack.worker(&["--exit-when-idle", "4"]);
    assert_eq!(w.wait(Duration::from_secs(120)), 0, "{}", w.stderr());
    assert_holds(&ecr, &want).await;
    let status = stack.status(&run);
    assert_eq!(status["states"]["succeeded"], 6, "{status}");
    assert_eq!(stack.depth(&stack.dlq_url).await, 0, "{status}");
    assert!(
        ecr.counts().calls(EcrAction::PutImage) >= 9,
        "the lost answers were not retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_tag_moved_under_an_immutable_destination_tag_is_a_conflict_not_a_dead_letter() {
    let (stack, ecr) = start(EcrRules::default()).await;
    let first = stack.small_image("imm/app", "v1", 800).await;
    write_config(&stack, &ecr, "imm/app", None);
    stack.plan();
    let mut w = stack.worker(&["--exit-when-idle", "3"]);
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.stderr());
    assert_eq!(
        ecr.digest("imm/app", "v1").await,
        Some(first.digest.clone())
    );
    // v1 moves at the source; ECR refuses to move it at the destination (TAG_INVALID).
    stack.small_image("imm/app", "v1", 801).await;
    let run = stack.plan()["run_id"].as_str().unwrap().to_string();
    let mut w = stack.worker(&["--exit-when-idle", "3"]);
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.stderr());
    assert_eq!(
        ecr.digest("imm/app", "v1").await,
        Some(first.digest),
        "an immutable tag was overwritten"
    );
    let status = stack.status(&run);
    assert_eq!(status["states"]["conflict"], 1, "{status}");
    assert_eq!(
        status["failed"][0]["error_class"], "immutable_tag",
        "{status}"
    );
    // No replay can fix it, so it does not sit in the DLQ keeping its alarm red.
    assert_eq!(stack.depth(&stack.dlq_url).await, 0, "{}", w.stderr());
    assert_eq!(stack.depth(&stack.queue_url).await, 0);
    assert!(
        w.stderr().contains("immutable tag conflict"),
        "{}",
        w.stderr()
    );
}
