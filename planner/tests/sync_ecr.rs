//! ECR end to end against moto (control plane) and testkit's local ECR standing in for the ECR
//! registry hosts (`registries.HOST.endpoint`): moto's token as Basic auth, repositories that
//! must exist in moto, pushes listed by DescribeImages, blob GETs redirected to an S3 stand-in.

mod common;
use aws_sdk_ecr::config::{BehaviorVersion, Credentials, Region};
use common::*;
use serde_json::json;

const DST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

fn ecr_client(moto: &MotoProcess) -> aws_sdk_ecr::Client {
    let conf = aws_sdk_ecr::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(moto.endpoint())
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .build();
    aws_sdk_ecr::Client::from_conf(conf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_mode_makes_repositories_with_the_defaults_and_refresh_mode_skips_missing_ones() {
    let moto = MotoProcess::start().await;
    let src = RegistryProcess::start(RegistryOpts::default()).await;
    let dst = ecr::LocalEcr::start(
        &moto.endpoint(),
        "123456789012",
        "us-east-1",
        ecr::EcrRules::default(),
    )
    .await;
    assert_eq!(dst.host(), DST);
    let s = seed::Seeder::new(reqwest::Client::new(), &src.url(), None);
    let v1 = s
        .image(
            "team/api",
            Some("v1"),
            vec![seed::noise(1, 1000)],
            &[],
            ("linux", "amd64"),
        )
        .await
        .unwrap();
    s.image(
        "team/web",
        Some("v1"),
        vec![seed::noise(2, 1000)],
        &[],
        ("linux", "amd64"),
    )
    .await
    .unwrap();
    let kms = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555";
    let cfg = |mode: &str, repo: &str| {
        json!({
            "mode": mode,
            "repos": [{ "source": format!("{}/{repo}", src.host()) }],
            "repo_defaults": { "scan_on_push": false, "tag_immutability": true, "encryption_type": "KMS", "kms_key_arn": kms },
            "destination_registry": DST,
            "registries": { src.host(): { "plain_http": true }, DST: { "endpoint": dst.url(), "plain_http": true } }
        })
    };
    let w = Workdir::new();
    let run = w.sync(&cfg("create", "team/api"), &[], &moto.env());
    run.assert_code(0);
    assert_eq!(run.count("copied"), 1);
    assert_eq!(dst.digest("team/api", "v1").await, Some(v1.digest.clone()));
    let ecr = ecr_client(&moto);
    let repo = ecr
        .describe_repositories()
        .repository_names("team/api")
        .send()
        .await
        .unwrap();
    let repo = &repo.repositories()[0];
    assert_eq!(repo.image_tag_mutability().unwrap().as_str(), "IMMUTABLE");
    assert!(!repo.image_scanning_configuration().unwrap().scan_on_push());
    let enc = repo.encryption_configuration().unwrap();
    assert_eq!(enc.encryption_type().as_str(), "KMS");
    assert_eq!(enc.kms_key(), Some(kms));

    // Warm: DescribeImages says the tag is there with its digest; no manifest request.
    let manifests = dst.counts().calls(ecr::EcrAction::BatchGetImage);
    let warm = w.sync(&cfg("create", "team/api"), &[], &moto.env());
    warm.assert_code(0);
    assert_eq!(
        (warm.count("copied"), warm.count("skipped")),
        (0, 1),
        "{}",
        warm.stdout
    );
    assert_eq!(
        dst.counts().calls(ecr::EcrAction::BatchGetImage),
        manifests,
        "a warm run asked the registry for a manifest"
    );

    let refresh = w.sync(&cfg("refresh", "team/web"), &[], &moto.env());
    refresh.assert_code(0);
    assert_eq!(refresh.count("copied"), 0);
    assert_eq!(refresh.report()["repositories"][0]["event"], "skipped");
    assert!(
        ecr.describe_repositories()
            .repository_names("team/web")
            .send()
            .await
            .is_err(),
        "refresh mode creates nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ecr_source_is_listed_through_describe_images_and_authenticated_with_an_ecr_token() {
    let moto = MotoProcess::start().await;
    // moto serves every caller here as one account, so the source is that account's ECR.
    let src = ecr::LocalEcr::start(
        &moto.endpoint(),
        "123456789012",
        "us-east-1",
        ecr::EcrRules::default(),
    )
    .await;
    src.control_plane(
        "CreateRepository",
        json!({ "repositoryName": "vendor/tool" }),
    )
    .await
    .unwrap();
    let src_proxy = proxy::Proxy::start(&src.url(), Default::default()).await;
    let dst = RegistryProcess::start(RegistryOpts::default()).await;
    // Pushed through the local ECR, the images are in moto's DescribeImages with their digests.
    let s = seed::Seeder::new(
        reqwest::Client::new(),
        &src.url(),
        Some(("AWS".to_string(), src.password())),
    );
    let mut pushed = Vec::new();
    for (tag, noise) in [("v1", 3), ("v2", 4)] {
        let p = s
            .image(
                "vendor/tool",
                Some(tag),
                vec![seed::noise(noise, 1000)],
                &[],
                ("linux", "amd64"),
            )
            .await
            .unwrap();
        pushed.push(p);
    }
    let cfg = json!({
        "repos": [{ "source": format!("{}/vendor/tool", src.host()), "tags": ["v1"] }],
        "destination_registry": dst.host(),
        "registries": {
            src.host(): { "endpoint": format!("http://{}", src_proxy.host()), "plain_http": true },
            dst.host(): { "plain_http": true }
        }
    });
    let run = Workdir::new().sync(&cfg, &[], &moto.env());
    run.assert_code(0);
    assert_eq!(run.count("copied"), 1);
    // The layer came through the S3 stand-in the blob GET redirected to, without the
    // registry's Authorization header (it refuses a second auth mechanism).
    assert_eq!(
        skopeo_raw(&dst.host(), "vendor/tool", "v1"),
        pushed[0].bytes
    );
    let listed_by_registry = src_proxy
        .requests()
        .iter()
        .filter(|(_, p)| p.contains("/tags/list"))
        .count();
    assert_eq!(
        listed_by_registry, 0,
        "tags and digests came from DescribeImages"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_is_loaded_from_s3() {
    let moto = MotoProcess::start().await;
    let http = reqwest::Client::new();
    assert!(http
        .put(format!("{}/cfg-bucket", moto.endpoint()))
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
    let cfg = json!({ "repos": [{ "source": "registry.example.com/team/app", "tags": ["v1.*"] }], "destination_registry": "127.0.0.1:5999" });
    let put = http
        .put(format!(
            "{}/cfg-bucket/ecr-sync/config.json",
            moto.endpoint()
        ))
        .body(cfg.to_string())
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    let ok = planner(
        &[
            "validate".into(),
            "--config".into(),
            "s3://cfg-bucket/ecr-sync/config.json".into(),
        ],
        &moto.env(),
    );
    ok.assert_code(0);
    assert!(ok.stdout.contains("1 repositories"), "{}", ok.stdout);
    let missing = planner(
        &[
            "validate".into(),
            "--config".into(),
            "s3://cfg-bucket/nope.json".into(),
        ],
        &moto.env(),
    );
    missing.assert_code(2);
    assert!(missing.stderr.contains("nope.json"), "{}", missing.stderr);
}
