//! ECR end to end against moto (control plane) and local registries standing in for the ECR
//! registry hosts (`registries.HOST.endpoint`), authenticated with moto's ECR token as Basic auth.

mod common;
use aws_sdk_ecr::config::{BehaviorVersion, Credentials, Region};
use common::*;
use serde_json::json;

const DST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
const SRC: &str = "111122223333.dkr.ecr.us-east-1.amazonaws.com";

fn ecr_client(moto: &MotoProcess) -> aws_sdk_ecr::Client {
    let conf = aws_sdk_ecr::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(moto.endpoint())
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .build();
    aws_sdk_ecr::Client::from_conf(conf)
}

/// moto's token for the caller's account, as Basic credentials on the stand-in registries.
fn ecr_auth() -> RegistryOpts {
    RegistryOpts {
        htpasswd: Some(("AWS".into(), "123456789012-auth-token".into())),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_mode_makes_repositories_with_the_defaults_and_refresh_mode_skips_missing_ones() {
    let moto = MotoProcess::start().await;
    let src = RegistryProcess::start(RegistryOpts::default()).await;
    let dst = RegistryProcess::start(ecr_auth()).await;
    let s = seed::Seeder::new(reqwest::Client::new(), &src.url(), None);
    s.image(
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
    assert_eq!(
        tags(&dst, "team/api").await,
        Vec::<String>::new(),
        "unauthenticated listing sees nothing"
    );
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
    let src = RegistryProcess::start(ecr_auth()).await;
    let src_proxy = proxy::Proxy::start(&src.url(), Default::default()).await;
    let dst = RegistryProcess::start(RegistryOpts::default()).await;
    let auth = Some(("AWS".to_string(), "123456789012-auth-token".to_string()));
    let s = seed::Seeder::new(reqwest::Client::new(), &src.url(), auth);
    let v1 = s
        .image(
            "vendor/tool",
            Some("v1"),
            vec![seed::noise(3, 1000)],
            &[],
            ("linux", "amd64"),
        )
        .await
        .unwrap();
    let v2 = s
        .image(
            "vendor/tool",
            Some("v2"),
            vec![seed::noise(4, 1000)],
            &[],
            ("linux", "amd64"),
        )
        .await
        .unwrap();
    // The control plane knows the same images (moto needs the real manifest and digest).
    let ecr = ecr_client(&moto);
    ecr.create_repository()
        .registry_id("111122223333")
        .repository_name("vendor/tool")
        .send()
        .await
        .unwrap();
    for (tag, p) in [("v1", &v1), ("v2", &v2)] {
        ecr.put_image()
            .registry_id("111122223333")
            .repository_name("vendor/tool")
            .image_tag(tag)
            .image_digest(&p.digest)
            .image_manifest(String::from_utf8(p.bytes.clone()).unwrap())
            .image_manifest_media_type(&p.media_type)
            .send()
            .await
            .unwrap();
    }
    let cfg = json!({
        "repos": [{ "source": format!("{SRC}/vendor/tool"), "tags": ["v1"] }],
        "destination_registry": dst.host(),
        "registries": {
            SRC: { "endpoint": format!("http://{}", src_proxy.host()), "plain_http": true },
            dst.host(): { "plain_http": true }
        }
    });
    let run = Workdir::new().sync(&cfg, &[], &moto.env());
    run.assert_code(0);
    assert_eq!(run.count("copied"), 1);
    assert_eq!(skopeo_raw(&dst.host(), "vendor/tool", "v1"), v1.bytes);
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
