//! The fleet generator against real `docker-registry` processes: every tag it reports is in the
//! registry under the digest it reports, the same seed gives the same digests in a fresh
//! registry, another seed gives others, and shared base layers really are shared.

use std::collections::{BTreeMap, BTreeSet};

use ecr_sync_loadtest::generate::{generate, FleetSpec, Generated};
use ecr_sync_testkit::registry::{RegistryOpts, RegistryProcess};
use ecr_sync_testkit::seed::{sha256, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use serde_json::Value;

/// 3 repositories × 4 tags, every image on a shared base, a quarter of the tags multi-arch.
fn small_spec(seed: u64) -> FleetSpec {
    FleetSpec {
        prefix: "gen".into(),
        repos: 3,
        tags_per_repo: 4,
        seed,
        shared_base_fraction: 1.0,
        multi_arch_fraction: 0.25,
        large_fraction: 0.25,
        large_bytes: 3 << 20,
        parallelism: 4,
        ..FleetSpec::default()
    }
}

/// A manifest or index as the registry serves it: (Docker-Content-Digest, body).
async fn get_manifest(registry: &RegistryProcess, repo: &str, reference: &str) -> (String, Value) {
    let resp = registry
        .client()
        .get(format!(
            "{}/v2/{repo}/manifests/{reference}",
            registry.url()
        ))
        .header(
            "Accept",
            format!("{DOCKER_MANIFEST}, {OCI_MANIFEST}, {OCI_INDEX}"),
        )
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "GET {repo}:{reference}: {}",
        resp.status()
    );
    let header = resp.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_string();
    let body = resp.bytes().await.unwrap();
    assert_eq!(header, sha256(&body), "{repo}:{reference} body digest");
    (header, serde_json::from_slice(&body).unwrap())
}

/// Per repository, the blobs (digest → size) the registry's manifests for `generated` reference,
/// children of indexes included; and how many tags are indexes.
async fn blobs_in_registry(
    registry: &RegistryProcess,
    generated: &Generated,
) -> (BTreeMap<String, BTreeMap<String, u64>>, usize) {
    let mut blobs: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut indexes = 0;
    for image in &generated.images {
        let (digest, body) = get_manifest(registry, &image.repo, &image.tag).await;
        assert_eq!(digest, image.digest, "{}:{}", image.repo, image.tag);
        let manifests = if body["mediaType"] == OCI_INDEX {
            indexes += 1;
            let children = body["manifests"].as_array().unwrap();
            let platforms: Vec<&str> = children
                .iter()
                .map(|c| c["platform"]["architecture"].as_str().unwrap())
                .collect();
            assert_eq!(platforms, ["amd64", "arm64"]);
            let mut fetched = Vec::new();
            for child in children {
                let child = child["digest"].as_str().unwrap();
                fetched.push(get_manifest(registry, &image.repo, child).await.1);
            }
            fetched
        } else {
            vec![body]
        };
        let repo = blobs.entry(image.repo.clone()).or_default();
        for m in manifests {
            let layers = m["layers"].as_array().unwrap().iter();
            for d in std::iter::once(&m["config"]).chain(layers) {
                repo.insert(
                    d["digest"].as_str().unwrap().to_string(),
                    d["size"].as_u64().unwrap(),
                );
            }
        }
    }
    (blobs, indexes)
}

fn digests(generated: &Generated) -> Vec<String> {
    generated.images.iter().map(|i| i.digest.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_tag_is_in_the_registry_under_its_recorded_digest() {
    let registry = RegistryProcess::start(RegistryOpts::default()).await;
    let spec = small_spec(7);
    let generated = generate(&registry.url(), &spec).await.unwrap();

    let expected: Vec<(String, String)> = (0..3)
        .flat_map(|r| (0..4).map(move |t| (format!("gen/app{r}"), format!("v{t}"))))
        .collect();
    let got: Vec<(String, String)> = generated
        .images
        .iter()
        .map(|i| (i.repo.clone(), i.tag.clone()))
        .collect();
    assert_eq!(got, expected, "every tag, in repository and tag order");
    assert_eq!(generated.repos(), ["gen/app0", "gen/app1", "gen/app2"]);

    let (blobs, indexes) = blobs_in_registry(&registry, &generated).await;
    assert_eq!(indexes, 3, "a quarter of 12 tags are indexes");
    let count: usize = blobs.values().map(|r| r.len()).sum();
    let bytes: u64 = blobs.values().flat_map(|r| r.values()).sum();
    assert_eq!(generated.blobs, count as u64);
    assert_eq!(generated.unique_blob_bytes, bytes);
    let large = blobs
        .values()
        .flat_map(|r| r.values())
        .filter(|&&s| s == 3 << 20)
        .count();
    assert_eq!(large, 3, "a quarter of 12 images have a large layer");
    assert!(generated.elapsed_s > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_spec_gives_the_same_digests_in_a_fresh_registry() {
    let first = RegistryProcess::start(RegistryOpts::default()).await;
    let second = RegistryProcess::start(RegistryOpts::default()).await;
    let spec = small_spec(7);
    let a = generate(&first.url(), &spec).await.unwrap();
    let b = generate(
        &second.url(),
        &FleetSpec {
            parallelism: 1,
            ..spec
        },
    )
    .await
    .unwrap();
    assert_eq!(
        a.images, b.images,
        "same spec, any parallelism: same tags and digests"
    );
    assert_eq!(
        (a.blobs, a.unique_blob_bytes),
        (b.blobs, b.unique_blob_bytes)
    );
    for image in &b.images {
        assert_eq!(
            second.digest(&image.repo, &image.tag).await.as_deref(),
            Some(image.digest.as_str())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_seed_gives_other_digests() {
    let registry = RegistryProcess::start(RegistryOpts::default()).await;
    let a = generate(&registry.url(), &small_spec(7)).await.unwrap();
    let b = generate(&registry.url(), &small_spec(8)).await.unwrap();
    let a: BTreeSet<String> = digests(&a).into_iter().collect();
    let b: BTreeSet<String> = digests(&b).into_iter().collect();
    assert!(
        a.is_disjoint(&b),
        "no digest in common: {:?}",
        a.intersection(&b)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shared_base_layer_is_in_several_repositories() {
    let registry = RegistryProcess::start(RegistryOpts::default()).await;
    let generated = generate(&registry.url(), &small_spec(7)).await.unwrap();
    let (blobs, _) = blobs_in_registry(&registry, &generated).await;

    let mut repos_of: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (repo, digests) in &blobs {
        for digest in digests.keys() {
            repos_of.entry(digest).or_default().push(repo);
        }
    }
    let shared: Vec<(&str, &Vec<&str>)> = repos_of
        .iter()
        .filter(|(_, repos)| repos.len() > 1)
        .map(|(d, r)| (*d, r))
        .collect();
    assert!(!shared.is_empty(), "some layer is in two repositories");
    // The registry holds the blob in each repository that references it.
    let http = registry.client();
    for (digest, repos) in shared {
        for repo in repos {
            let resp = http
                .head(format!("{}/v2/{repo}/blobs/{digest}", registry.url()))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 200, "{repo} holds {digest}");
        }
    }
}
