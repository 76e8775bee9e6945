//! `platforms`: only some platforms of a multi-arch image are copied. The index is rewritten
//! to name only them (and BuildKit's attestations of them), so the destination — here
//! testkit's local ECR — never holds an index naming manifests it lacks; the rewrite is the
//! same every time, so a warm run copies nothing.

mod common;
use common::*;
use ecr::{EcrRules, LocalEcr};
use seed::{Pushed, Seeder, OCI_INDEX, OCI_MANIFEST};
use serde_json::{json, Value};

const ACCOUNT: &str = "123456789012";

/// An index as BuildKit pushes one with provenance: an image per platform and, per image, an
/// attestation manifest (`unknown/unknown`, annotated with the image it is about). Returns the
/// index and its images.
async fn buildkit_index(
    s: &Seeder,
    repo: &str,
    tag: &str,
    arches: &[&str],
    seed: u64,
) -> (Pushed, Vec<Pushed>) {
    let mut images = Vec::new();
    let mut entries = Vec::new();
    for (i, arch) in arches.iter().enumerate() {
        let image = s
            .image(
                repo,
                None,
                vec![seed::noise(seed + i as u64, 2048)],
                &[],
                ("linux", arch),
            )
            .await
            .unwrap();
        entries.push(
            json!({"mediaType": image.media_type, "digest": image.digest, "size": image.size,
                            "platform": {"os": "linux", "architecture": arch}}),
        );
        images.push(image);
    }
    for (i, image) in images.clone().iter().enumerate() {
        let attestation = s
            .image(
                repo,
                None,
                vec![seed::noise(seed + 100 + i as u64, 300)],
                &[],
                ("unknown", "unknown"),
            )
            .await
            .unwrap();
        entries.push(json!({"mediaType": OCI_MANIFEST, "digest": attestation.digest, "size": attestation.size,
            "platform": {"os": "unknown", "architecture": "unknown"},
            "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                            "vnd.docker.reference.digest": image.digest}}));
    }
    let index = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}),
    )
    .unwrap();
    (
        s.manifest(repo, tag, OCI_INDEX, index).await.unwrap(),
        images,
    )
}

/// The digests the local ECR's index under `tag` names, and whether ECR has each.
async fn at_ecr(ecr: &LocalEcr, repo: &str, tag: &str) -> (String, Vec<(String, bool)>) {
    let index = reqwest::Client::new()
        .get(format!("{}/v2/{repo}/manifests/{tag}", ecr.url()))
        .basic_auth("AWS", Some(ecr.password()))
        .header("accept", format!("{OCI_INDEX}, {OCI_MANIFEST}"))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let digest = index.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_string();
    let body: Value = serde_json::from_slice(&index.bytes().await.unwrap()).unwrap();
    let mut children = Vec::new();
    for e in body["manifests"].as_array().unwrap() {
        let d = e["digest"].as_str().unwrap().to_string();
        let there = ecr.digest(repo, &d).await.is_some();
        children.push((d, there));
    }
    (digest, children)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_listed_platforms_are_copied_into_ecr_and_a_warm_run_copies_nothing() {
    let moto = MotoProcess::start().await;
    let src = RegistryProcess::start(RegistryOpts::default()).await;
    let ecr = LocalEcr::start(&moto.endpoint(), ACCOUNT, "us-east-1", EcrRules::default()).await;
    let s = Seeder::new(reqwest::Client::new(), &src.url(), None);
    let (multi, images) = buildkit_index(&s, "team/app", "multi", &["amd64", "arm64"], 10).await;
    let single = s
        .image(
            "team/app",
            Some("single"),
            vec![seed::noise(50, 900)],
            &[],
            ("linux", "amd64"),
        )
        .await
        .unwrap();
    let (_, _) = buildkit_index(&s, "team/app", "arm-only", &["arm64"], 60).await;
    let (full, _) = buildkit_index(&s, "team/full", "multi", &["amd64", "arm64"], 80).await;

    let config = json!({
        "repos": [
            { "source": format!("{}/team/app", src.host()) },
            { "source": format!("{}/team/full", src.host()), "platforms": ["linux/amd64", "linux/arm64"] },
        ],
        "platforms": ["linux/amd64"],
        "repo_defaults": { "tag_immutability": true, "scan_on_push": false },
        "destination_registry": ecr.host(),
        "registries": {
            src.host(): { "plain_http": true },
            ecr.host(): { "endpoint": ecr.url(), "plain_http": true }
        }
    });
    let work = Workdir::new();
    let cold = work.sync(&config, &[], &moto.env());
    // arm-only has none of the platforms: a failure that says so, so the run exits 1.
    cold.assert_code(1);
    assert_eq!(cold.count("copied"), 3, "{}", cold.stderr);
    let failed = cold.jobs("failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0]["destination"]
        .as_str()
        .unwrap()
        .ends_with("team/app:arm-only"));
    assert_eq!(failed[0]["error_class"], "unsupported");
    assert_eq!(
        failed[0]["reason"],
        "the index has none of the platforms linux/amd64 (it has linux/arm64)"
    );

    // team/app:multi is a new index naming amd64 and its attestation, both present; arm64's
    // image was not copied.
    let (digest, children) = at_ecr(&ecr, "team/app", "multi").await;
    assert_ne!(digest, multi.digest, "rewritten");
    assert_eq!(children.len(), 2, "{children:?}");
    assert_eq!(children[0], (images[0].digest.clone(), true));
    assert!(children.iter().all(|(_, there)| *there), "{children:?}");
    assert_eq!(
        ecr.digest("team/app", &images[1].digest).await,
        None,
        "arm64 left out"
    );
    // Which is why the index is rewritten: the source's own index, naming arm64, is refused
    // (ECR: ReferencedImagesNotFoundException; its storage here: MANIFEST_BLOB_UNKNOWN).
    let sparse = Seeder::new(
        reqwest::Client::new(),
        &ecr.url(),
        Some(("AWS".into(), ecr.password())),
    )
    .manifest("team/app", "sparse", OCI_INDEX, multi.bytes.clone())
    .await;
    assert!(sparse.is_err(), "a sparse index was accepted");
    // A single-platform image and a fully wanted index keep their digests.
    assert_eq!(ecr.digest("team/app", "single").await, Some(single.digest));
    let (digest, children) = at_ecr(&ecr, "team/full", "multi").await;
    assert_eq!(digest, full.digest);
    assert_eq!(children.len(), 4);

    // Warm: the destination's index is the one the rewrite gives again: nothing copied, no
    // blob read (the immutable tags would refuse a different index anyway).
    let warm = work.sync(&config, &[], &moto.env());
    assert_eq!(warm.count("copied"), 0, "{}", warm.stderr);
    assert_eq!(warm.count("skipped"), 3);
    let blobs: u64 = warm.report()["blob_requests"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(blobs, 0);
}
