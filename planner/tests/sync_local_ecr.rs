//! `sync` into testkit's local ECR, which follows ECR's rules where a plain registry is lax:
//! immutable tags answer `TAG_INVALID` to any second push, PutImage is limited to a rate per
//! second with `429 TOOMANYREQUESTS` and no `Retry-After`, mounts are refused, blob GETs
//! redirect, what is pushed shows in moto's DescribeImages, and authorization tokens expire.

mod common;
use common::*;
use ecr::{EcrAction, EcrRules, LocalEcr, RateLimits};
use serde_json::json;
use std::time::{Duration, Instant};

const ACCOUNT: &str = "123456789012";

/// Pushes `n` small single-layer images `repo:v0`… to `src`; returns (tag, digest) pairs.
async fn seed_tags(src: &RegistryProcess, repo: &str, n: u64, first: u64) -> Vec<(String, String)> {
    let s = seed::Seeder::new(reqwest::Client::new(), &src.url(), None);
    let mut want = Vec::new();
    for i in 0..n {
        let tag = format!("v{i}");
        let p = s
            .image(
                repo,
                Some(&tag),
                vec![seed::noise(first + i, 1000)],
                &[],
                ("linux", "amd64"),
            )
            .await
            .unwrap();
        want.push((tag, p.digest));
    }
    want
}

/// `repo` from `src` into the local ECR, creating the destination repository.
fn into_ecr(
    src: &RegistryProcess,
    ecr: &LocalEcr,
    repo: &str,
    immutable: bool,
) -> serde_json::Value {
    json!({
        "mode": "create",
        "repos": [{ "source": format!("{}/{repo}", src.host()) }],
        "repo_defaults": { "tag_immutability": immutable, "scan_on_push": false },
        "destination_registry": ecr.host(),
        "registries": {
            src.host(): { "plain_http": true },
            ecr.host(): { "endpoint": ecr.url(), "plain_http": true }
        }
    })
}

async fn assert_holds(ecr: &LocalEcr, repo: &str, want: &[(String, String)]) {
    for (tag, digest) in want {
        assert_eq!(
            ecr.digest(repo, tag).await.as_deref(),
            Some(digest.as_str()),
            "{repo}:{tag}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_to_tag_puts_on_an_immutable_ecr_destination_still_end_copied() {
    let moto = MotoProcess::start().await;
    let src = RegistryProcess::start(RegistryOpts::default()).await;
    let ecr = LocalEcr::start(&moto.endpoint(), ACCOUNT, "us-east-1", EcrRules::default()).await;
    let want = seed_tags(&src, "team/app", 5, 10).await;
    // The PUTs commit; their answers are lost; the retries meet TAG_INVALID.
    for _ in 0..3 {
        ecr.lose_next_manifest_put_response();
    }
    let run = Workdir::new().sync(&into_ecr(&src, &ecr, "team/app", true), &[], &moto.env());
    run.assert_code(0);
    assert_eq!(run.count("copied"), 5, "{}", run.stderr);
    assert_holds(&ecr, "team/app", &want).await;
    // Another image under an existing immutable tag is a conflict, not a success.
    let s = seed::Seeder::new(reqwest::Client::new(), &src.url(), None);
    s.image(
        "team/app",
        Some("v0"),
        vec![seed::noise(99, 1000)],
        &[],
        ("linux", "amd64"),
    )
    .await
    .unwrap();
    let again = Workdir::new().sync(&into_ecr(&src, &ecr, "team/app", true), &[], &moto.env());
    again.assert_code(1);
    let failed = again.jobs("failed");
    assert_eq!(failed.len(), 1, "{}", again.stdout);
    assert_eq!(failed[0]["error_class"], "immutable_tag", "{}", failed[0]);
    assert_holds(&ecr, "team/app", &want).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_image_throttling_without_retry_after_is_paced_and_fails_no_job() {
    let moto = MotoProcess::start().await;
    let src = RegistryProcess::start(RegistryOpts::default()).await;
    let rules = EcrRules {
        rate_limits: Some(RateLimits {
            put_image: 5,
            ..Default::default()
        }),
        ..Default::default()
    };
    let ecr = LocalEcr::start(&moto.endpoint(), ACCOUNT, "us-east-1", rules).await;
    let tags = 30;
    let want = seed_tags(&src, "busy/app", tags, 100).await;
    let run = Workdir::new().sync(&into_ecr(&src, &ecr, "busy/app", false), &[], &moto.env());
    run.assert_code(0);
    assert_eq!(run.count("copied"), tags, "{}", run.stderr);
    assert_holds(&ecr, "busy/app", &want).await;
    let counts = ecr.counts();
    let puts = counts.calls(EcrAction::PutImage);
    let throttled = counts.throttled(EcrAction::PutImage);
    println!("PutImage calls {puts}, throttled {throttled}");
    // 16 jobs at once against 5 per second, above the default budget of 10 (another writer
    // using half the quota, say): retried on a timer, most PUTs were throttled; paced, with
    // the waiting requests following each cut, 2 of 32 were when this test was written.
    assert!(
        throttled * 6 <= puts,
        "{throttled} of {puts} PutImage calls throttled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecr_tokens_that_expire_during_a_sync_are_fetched_again_and_fail_no_job() {
    let moto = MotoProcess::start().await;
    let src = RegistryProcess::start(RegistryOpts::default()).await;
    let lifetime = Duration::from_secs(2);
    let rules = EcrRules {
        token_lifetime: Some(lifetime),
        rate_limits: Some(RateLimits {
            put_image: 5,
            ..Default::default()
        }),
        ..Default::default()
    };
    let ecr = LocalEcr::start(&moto.endpoint(), ACCOUNT, "us-east-1", rules).await;
    let tags = 30;
    let want = seed_tags(&src, "short/app", tags, 300).await;
    // The ECR SDK client gets its tokens from the stand-in's API listener; the rest of AWS
    // (and every other ECR call, passed on) is moto.
    let mut env = moto.env();
    env.retain(|(k, _)| k != "AWS_ENDPOINT_URL_ECR");
    env.push(("AWS_ENDPOINT_URL_ECR".into(), ecr.api_endpoint()));
    let started = Instant::now();
    let run = Workdir::new().sync(&into_ecr(&src, &ecr, "short/app", false), &[], &env);
    let took = started.elapsed();
    run.assert_code(0);
    assert_eq!(run.count("copied"), tags, "{}", run.stderr);
    assert_holds(&ecr, "short/app", &want).await;
    // 30 PutImage calls at 5 a second: the run outlasts two token lifetimes.
    assert!(took > lifetime * 2, "the run took only {took:?}");
    let tokens = ecr.counts().calls(EcrAction::GetAuthorizationToken);
    println!("GetAuthorizationToken calls {tokens} in {took:?}");
    assert!(
        tokens >= 2,
        "{tokens} GetAuthorizationToken calls in {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_mount_is_not_asked_again_and_each_repository_gets_its_own_upload() {
    let moto = MotoProcess::start().await;
    let src = RegistryProcess::start(RegistryOpts::default()).await;
    let ecr = LocalEcr::start(&moto.endpoint(), ACCOUNT, "us-east-1", EcrRules::default()).await;
    // Four repositories whose images share a base layer.
    let s = seed::Seeder::new(reqwest::Client::new(), &src.url(), None);
    let base = seed::noise(1, 2000);
    let mut want = Vec::new();
    for i in 0..4u64 {
        let repo = format!("base/app{i}");
        let layers = vec![base.clone(), seed::noise(10 + i, 1000)];
        let p = s
            .image(&repo, Some("v1"), layers, &[], ("linux", "amd64"))
            .await
            .unwrap();
        want.push((repo, p.digest));
    }
    // Requests into the local ECR pass a counting proxy.
    let counter = proxy::Proxy::start(&ecr.url(), proxy::Faults::default()).await;
    let config = json!({
        "mode": "create",
        "repos": want.iter().map(|(repo, _)| json!({ "source": format!("{}/{repo}", src.host()) }))
            .collect::<Vec<_>>(),
        "repo_defaults": { "tag_immutability": true, "scan_on_push": false },
        "destination_registry": ecr.host(),
        // One job at a time: each later repository finds the base layer held by an earlier one.
        "concurrency": { "jobs": 1 },
        "registries": {
            src.host(): { "plain_http": true },
            ecr.host(): { "endpoint": format!("http://{}", counter.host()), "plain_http": true }
        }
    });
    let run = Workdir::new().sync(&config, &[], &moto.env());
    run.assert_code(0);
    for (repo, digest) in &want {
        assert_eq!(
            ecr.digest(repo, "v1").await.as_deref(),
            Some(digest.as_str()),
            "{repo}"
        );
    }
    let mounts = counter
        .requests()
        .into_iter()
        .filter(|(method, path)| method == "POST" && path.contains("mount="))
        .count();
    // The second repository's mount was refused (ECR's default); the third and fourth uploaded
    // without asking again.
    assert_eq!(mounts, 1, "{:?}", counter.requests());
}
