//! Failure handling end to end: injected transport faults are retried to success; a corrupted
//! blob and bad credentials end as clear permanent failures, not retry loops.

mod common;
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_500s_and_429s_are_retried_and_the_copy_completes() {
    let src = RegistryProcess::start(RegistryOpts::default()).await;
    let dst = RegistryProcess::start(RegistryOpts::default()).await;
    let faults = proxy::Faults {
        reset_every: 7,
        error_every: 5,
        throttle_every: 11,
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
    let injected = src_proxy.requests().len() / 5 + dst_proxy.requests().len() / 5;
    assert!(injected >= 4, "faults were actually injected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_blob_fails_with_digest_mismatch_without_a_retry_loop() {
    let src = RegistryProcess::start(RegistryOpts::default()).await;
    let dst = RegistryProcess::start(RegistryOpts::default()).await;
    let faults = proxy::Faults {
        corrupt_blobs: true,
        ..Default::default()
    };
    let src_proxy = proxy::Proxy::start(&src.url(), faults).await;
    seed::Seeder::new(reqwest::Client::new(), &src.url(), None)
        .image(
            "bad/bytes",
            Some("v1"),
            vec![seed::noise(5, 4096)],
            &[],
            ("linux", "amd64"),
        )
        .await
        .unwrap();
    let cfg = json!({
        "repos": [{ "source": format!("{}/bad/bytes", src_proxy.host()) }],
        "destination_registry": dst.host(),
        "registries": { src_proxy.host(): { "plain_http": true }, dst.host(): { "plain_http": true } }
    });
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_htpasswd_works_with_the_right_credentials_and_fails_clearly_with_wrong_ones() {
    let src = RegistryProcess::start(RegistryOpts {
        tls: true,
        htpasswd: Some(("alice".into(), "s3cret".into())),
        access_log: false,
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
