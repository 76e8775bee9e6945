//! Failure handling end to end: injected transport faults are retried to success; a corrupted
//! blob and bad credentials end as clear permanent failures, not retry loops; Basic and bearer-token
//! auth work against real registries.

mod common;
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_500s_and_429s_are_retried_and_the_copy_completes() {
    let src = RegistryProcess::start(RegistryOpts::default()).await;
    let dst = RegistryProcess::start(RegistryOpts::default()).await;
    let faults = proxy::Faults {
        // About a quarter of all requests fail: one in 13 is reset, one in 10 answers 500, one
        // in 17 answers 429 (Retry-After: 1).
        reset_every: 13,
        error_every: 10,
        throttle_every: 17,
        ..Default::default()
    };
    let src_proxy = proxy::Proxy::start(&src.url(), faults.clone()).await;
    let dst_proxy = proxy::Proxy::start(&dst.url(), faults).await;
    let s = seed::Seeder::new(reqwest::Client::new(), &src.url(), None);
    let mut pushed = Vec::new();
    for i in 0..10u64 {
        pushed.push(
            s.image(
                "flaky/app",
                Some(&format!("v{i}")),
                vec![seed::noise(i, 64 * 1024)],
                &[],
                ("linux", "amd64"),
            )
            .await
            .unwrap(),
        );
    }
    let cfg = json!({
        "repos": [{ "source": format!("{}/flaky/app", src_proxy.host()) }],
        "destination_registry": dst_proxy.host(),
        "registries": { src_proxy.host(): { "plain_http": true }, dst_proxy.host(): { "plain_http": true } }
    });
    let run = Workdir::new().sync(&cfg, &[], &[]);
    run.assert_code(0);
    assert_eq!(run.count("copied"), 10);
    for (i, p) in pushed.iter().enumerate() {
        assert_eq!(
            skopeo_raw(&dst.host(), "flaky/app", &format!("v{i}")),
            p.bytes
        );
    }
    let injected = src_proxy.injected() + dst_proxy.injected();
    assert!(injected >= 4, "faults were actually injected: {injected}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_put_answered_digest_invalid_is_checked_and_pushed_again() {
    // distribution answers DIGEST_INVALID to a manifest PUT while another process uploads a
    // blob the manifest references into the same repository (the load test's chaos run met it,
    // several times in a row): the bytes were verified on the way in, so the PUT is retried
    // (and the blobs checked) instead of failing for good.
    let src = RegistryProcess::start(RegistryOpts::default()).await;
    let dst = RegistryProcess::start(RegistryOpts::default()).await;
    let dst_proxy = proxy::Proxy::start(
        &dst.url(),
        proxy::Faults {
            digest_invalid_manifest_puts: 3,
            ..Default::default()
        },
    )
    .await;
    let s = seed::Seeder::new(reqwest::Client::new(), &src.url(), None);
    let p = s
        .image(
            "race/app",
            Some("v1"),
            vec![seed::noise(5, 3000)],
            &[],
            ("linux", "amd64"),
        )
        .await
        .unwrap();
    let cfg = json!({
        "repos": [{ "source": format!("{}/race/app", src.host()) }],
        "destination_registry": dst_proxy.host(),
        "registries": { src.host(): { "plain_http": true }, dst_proxy.host(): { "plain_http": true } }
    });
    let run = Workdir::new().sync(&cfg, &[], &[]);
    run.assert_code(0);
    assert_eq!(run.count("copied"), 1, "{}", run.stderr);
    assert_eq!(dst.digest("race/app", "v1").await, Some(p.digest));
    assert_eq!(dst_proxy.injected(), 3);
}

/// A source registry holding one single-layer image `repo:v1` (noise seeded by `seed`), reached
/// through a proxy injecting `faults`; a destination registry; and the config between them.
async fn one_image_behind_a_faulty_source(
    repo: &str,
    seed: u64,
    faults: proxy::Faults,
) -> (
    RegistryProcess,
    RegistryProcess,
    proxy::Proxy,
    serde_json::Value,
) {
    let src = RegistryProcess::start(RegistryOpts::default()).await;
    let dst = RegistryProcess::start(RegistryOpts::default()).await;
    seed::Seeder::new(reqwest::Client::new(), &src.url(), None)
        .image(
            repo,
            Some("v1"),
            vec![seed::noise(seed, 4096)],
            &[],
            ("linux", "amd64"),
        )
        .await
        .unwrap();
    let src_proxy = proxy::Proxy::start(&src.url(), faults).await;
    let cfg = json!({
        "repos": [{ "source": format!("{}/{repo}", src_proxy.host()) }],
        "destination_registry": dst.host(),
        "registries": { src_proxy.host(): { "plain_http": true }, dst.host(): { "plain_http": true } }
    });
    (src, dst, src_proxy, cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_blob_fails_with_digest_mismatch_without_a_retry_loop() {
    let faults = proxy::Faults {
        corrupt_blobs: true,
        ..Default::default()
    };
    let (_src, dst, src_proxy, cfg) =
        one_image_behind_a_faulty_source("bad/bytes", 5, faults).await;
    let run = Workdir::new().sync(&cfg, &[], &[]);
    run.assert_code(1);
    let failed = run.jobs("failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["error_class"], "digest_mismatch");
    assert!(failed[0]["reason"]
        .as_str()
        .unwrap()
        .contains("digest mismatch"));
    let gets = src_proxy
        .requests()
        .iter()
        .filter(|(m, p)| m == "GET" && p.contains("/blobs/"))
        .count();
    assert!(
        gets <= 2,
        "a digest mismatch is permanent: {gets} blob GETs"
    );
    assert!(tags(&dst, "bad/bytes").await.is_empty());
    assert!(run.stderr.contains("digest_mismatch"), "{}", run.stderr);
}

/// One retry layer per blob transfer: the registry calls inside a transfer try once and the
/// transfer retries its steps under one budget, so a layer the source can never serve is fetched
/// exactly `transfer_retries + 1` times (13 with the default and the tests' policy) — not once
/// per request retry times once per transfer retry (7 × 7 before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_the_source_never_serves_is_fetched_a_bounded_number_of_times() {
    let faults = proxy::Faults {
        fail_blob_gets: true,
        ..Default::default()
    };
    let (_src, dst, src_proxy, cfg) =
        one_image_behind_a_faulty_source("broken/layer", 11, faults).await;
    let run = Workdir::new().sync(&cfg, &[], &[]);
    run.assert_code(1);
    let failed = run.jobs("failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["error_class"], "transient");
    let reason = failed[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("GET blob") && reason.contains("500"),
        "{reason}"
    );
    // Each blob of the image (config and layer) is fetched transfer_retries + 1 times, no more.
    let mut gets: std::collections::HashMap<String, usize> = Default::default();
    for (m, p) in src_proxy.requests() {
        if m == "GET" && p.contains("/blobs/sha256:") {
            *gets.entry(p).or_default() += 1;
        }
    }
    assert!(!gets.is_empty(), "no blob was fetched at all");
    assert!(
        gets.values().all(|&n| n == 13),
        "each failing blob is fetched exactly transfer_retries + 1 = 13 times: {gets:?}"
    );
    assert!(tags(&dst, "broken/layer").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_htpasswd_works_with_the_right_credentials_and_fails_clearly_with_wrong_ones() {
    let src = RegistryProcess::start(RegistryOpts {
        tls: true,
        htpasswd: Some(("alice".into(), "s3cret".into())),
        ..Default::default()
    })
    .await;
    let dst = RegistryProcess::start(RegistryOpts::default()).await;
    seed::Seeder::new(
        src.client(),
        &src.url(),
        Some(("alice".into(), "s3cret".into())),
    )
    .image(
        "private/app",
        Some("v1"),
        vec![seed::noise(9, 2048)],
        &[],
        ("linux", "amd64"),
    )
    .await
    .unwrap();
    let cfg = json!({
        "repos": [{ "source": format!("{}/private/app", src.host()) }],
        "destination_registry": dst.host(),
        "registries": {
            src.host(): { "ca_file": src.ca_file(), "username_env": "SRC_USER", "password_env": "SRC_PASS" },
            dst.host(): { "plain_http": true }
        }
    });
    let w = Workdir::new();
    let env = |pass: &str| {
        vec![
            ("SRC_USER".to_string(), "alice".to_string()),
            ("SRC_PASS".to_string(), pass.to_string()),
        ]
    };
    let bad = w.sync(&cfg, &[], &env("wrong"));
    bad.assert_code(1);
    let repos = bad.report()["repositories"].as_array().unwrap().clone();
    assert_eq!(repos[0]["event"], "failed");
    assert!(
        repos[0]["reason"]
            .as_str()
            .unwrap()
            .contains("not authorized"),
        "{repos:?}"
    );

    let good = w.sync(&cfg, &[], &env("s3cret"));
    good.assert_code(0);
    assert_eq!(good.count("copied"), 1);
    assert_eq!(tags(&dst, "private/app").await, vec!["v1"]);

    let missing = w.sync(&cfg, &[], &[]);
    missing.assert_code(2);
    assert!(missing.stderr.contains("SRC_USER"), "{}", missing.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_from_a_token_server_push_mount_and_pull_with_one_token_per_scope() {
    let tokens = token::TokenServer::start("bob", "t0ken").await;
    let guarded = RegistryProcess::start(RegistryOpts {
        token: Some(tokens.auth()),
        ..Default::default()
    })
    .await;
    let src = RegistryProcess::start(RegistryOpts::default()).await;
    let back = RegistryProcess::start(RegistryOpts::default()).await;
    // Two repositories sharing a base layer: the second push can mount it from the first,
    // which needs a token covering both repositories.
    let s = seed::Seeder::new(reqwest::Client::new(), &src.url(), None);
    let base = seed::noise(31, 4096);
    let base_digest = seed::sha256(&base);
    let mut pushed = Vec::new();
    for (repo, n) in [("team/app", 32), ("team/api", 33)] {
        s.blob(repo, base.clone()).await.unwrap();
        let p = s
            .image(
                repo,
                Some("v1"),
                vec![seed::noise(n, 2048)],
                &[(base_digest.clone(), base.len() as u64)],
                ("linux", "amd64"),
            )
            .await
            .unwrap();
        pushed.push((repo, p.digest));
    }
    let creds = |pass: &str| {
        vec![
            ("TOK_USER".to_string(), "bob".to_string()),
            ("TOK_PASS".to_string(), pass.to_string()),
        ]
    };
    let guarded_settings =
        json!({ "plain_http": true, "username_env": "TOK_USER", "password_env": "TOK_PASS" });
    let w = Workdir::new();
    // Push into the token-guarded registry.
    let push = json!({
        "repos": [
            { "source": format!("{}/team/app", src.host()) },
            { "source": format!("{}/team/api", src.host()) }
        ],
        "destination_registry": guarded.host(),
        "concurrency": { "jobs": 1 },
        "registries": { src.host(): { "plain_http": true }, guarded.host(): guarded_settings }
    });
    let bad = w.sync(&push, &[], &creds("wrong"));
    bad.assert_code(1);
    assert!(bad.stderr.contains("not authorized"), "{}", bad.stderr);
    let good = w.sync(&push, &[], &creds("t0ken"));
    good.assert_code(0);
    assert_eq!(good.count("copied"), 2, "{}", good.stderr);

    // Pull back out of it: the bytes and digests survived the round trip.
    let pull = json!({
        "repos": [
            { "source": format!("{}/team/app", guarded.host()) },
            { "source": format!("{}/team/api", guarded.host()) }
        ],
        "destination_registry": back.host(),
        "registries": { back.host(): { "plain_http": true }, guarded.host(): guarded_settings }
    });
    let out = w.sync(&pull, &[], &creds("t0ken"));
    out.assert_code(0);
    for (repo, digest) in &pushed {
        assert_eq!(
            back.digest(repo, "v1").await.as_deref(),
            Some(digest.as_str()),
            "{repo}"
        );
    }
    let asked = tokens.requests();
    let bob: Vec<&Vec<String>> = asked
        .iter()
        .filter(|(u, _)| u == "bob")
        .map(|(_, s)| s)
        .collect();
    let has = |scopes: &[&str]| bob.iter().any(|s| s.iter().eq(scopes.iter()));
    assert!(has(&["repository:team/app:pull,push"]), "{asked:?}");
    assert!(has(&["repository:team/api:pull"]), "{asked:?}");
    // The shared base layer was mounted: one token covering both repositories.
    assert!(
        has(&["repository:team/api:pull,push", "repository:team/app:pull"])
            || has(&["repository:team/app:pull,push", "repository:team/api:pull"]),
        "{asked:?}"
    );
    // One token request per scope and run, however many requests use it concurrently.
    let distinct: std::collections::BTreeSet<_> = bob.iter().collect();
    assert_eq!(bob.len(), distinct.len() + 2, "{asked:?}");
    assert!(asked.iter().any(|(u, _)| u == "bob (wrong password)"));
}
