//! A 512 MiB layer streams through with bounded memory: the copy never holds a blob whole.

mod common;
use common::*;
use serde_json::json;

/// The ceiling asserted on the planner's peak RSS: the target is 64 MiB for an optimised build;
/// a debug build and test noise get generous headroom, still far below the 512 MiB a buffered
/// copy would need.
const RSS_CEILING: u64 = 160 * 1024 * 1024;
const SIZE: u64 = 512 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_512_mib_layer_copies_with_bounded_memory_and_the_right_digest() {
    let src = RegistryProcess::start(RegistryOpts::default()).await;
    let dst = RegistryProcess::start(RegistryOpts::default()).await;
    let s = seed::Seeder::new(reqwest::Client::new(), &src.url(), None);
    let layer = s.big_blob("big/layer", 42, SIZE).await.unwrap();
    let image = s
        .image(
            "big/layer",
            Some("v1"),
            vec![],
            &[(layer.clone(), SIZE)],
            ("linux", "amd64"),
        )
        .await
        .unwrap();
    let cfg = json!({
        "repos": [{ "source": format!("{}/big/layer", src.host()) }],
        "destination_registry": dst.host(),
        "registries": { src.host(): { "plain_http": true }, dst.host(): { "plain_http": true } }
    });
    let run = Workdir::new().sync(&cfg, &[], &[]);
    run.assert_code(0);
    assert!(run.count("bytes") >= SIZE);
    let rss = run.report()["peak_rss_bytes"].as_u64().unwrap();
    assert!(rss < RSS_CEILING, "peak RSS {rss} bytes");
    assert_eq!(skopeo_raw(&dst.host(), "big/layer", "v1"), image.bytes);
    let head = reqwest::Client::new()
        .head(format!("{}/v2/big/layer/blobs/{layer}", dst.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status().as_u16(), 200);
    assert_eq!(
        head.headers()["content-length"].to_str().unwrap(),
        SIZE.to_string()
    );
}
