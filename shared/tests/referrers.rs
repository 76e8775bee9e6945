//! Referrers follow their image, between real registries: `docker-registry` 2.8 has no
//! referrers API (the tag schema, both ways), testkit's local ECR serves it (as ECR does).
//! The artifacts are cosign- and SBOM-shaped manifests with `subject` and `artifactType`,
//! pushed by testkit as those tools push them.

use ecr_sync::copy::{BlobMover, ImageCopy, ReferrerCopy, ReferrerCount};
use ecr_sync::digest::Digest;
use ecr_sync::registry::{Credentials, Listing, Registry, RegistryOptions};
use ecr_sync::retry::RetryPolicy;
use ecr_sync_testkit::artifacts::{self, sorted_digests, Signed, COSIGN_SIGNATURE, SPDX_SBOM};
use ecr_sync_testkit::ecr::{EcrRules, LocalEcr};
use ecr_sync_testkit::moto::MotoProcess;
use ecr_sync_testkit::registry::{RegistryOpts, RegistryProcess};
use ecr_sync_testkit::seed::{Pushed, Seeder};
use serde_json::json;
use std::sync::atomic::Ordering;

/// One registry as the copy sees it and as the test pushes to it.
struct Side {
    client: Registry,
    seeder: Seeder,
    listing: artifacts::Listing,
}

impl Side {
    fn plain(r: &RegistryProcess) -> Side {
        Side {
            client: client(&r.host(), &r.url(), Credentials::Anonymous),
            seeder: Seeder::new(reqwest::Client::new(), &r.url(), None),
            listing: artifacts::Listing::TagSchema,
        }
    }

    async fn ecr(ecr: &LocalEcr, repo: &str) -> Side {
        ecr.control_plane(
            "CreateRepository",
            json!({"repositoryName": repo, "imageTagMutability": "MUTABLE"}),
        )
        .await
        .unwrap();
        let auth = ("AWS".to_string(), ecr.password());
        let creds = Credentials::Basic {
            username: auth.0.clone(),
            password: auth.1.clone(),
        };
        Side {
            client: client(&ecr.host(), &ecr.url(), creds),
            seeder: Seeder::new(reqwest::Client::new(), &ecr.url(), Some(auth)),
            listing: artifacts::Listing::Api,
        }
    }
}

fn client(host: &str, url: &str, credentials: Credentials) -> Registry {
    Registry::new(RegistryOptions {
        host: host.to_string(),
        base_url: url.to_string(),
        ca_pem: None,
        credentials,
        retry: RetryPolicy::fast(),
        budgets: Default::default(),
    })
    .unwrap()
}

/// `app:v1` at the source with a signature, an SBOM, and a signature on the SBOM.
async fn signed_image(src: &Side) -> Signed {
    src.seeder
        .signed_image("app", "v1", 10, src.listing)
        .await
        .unwrap()
}

/// Copies `app:v1` and its referrers (of `types`; all when empty), as a job would.
async fn copy(src: &Side, dst: &Side, image: &Pushed, types: &[String]) -> ReferrerCount {
    let mover = BlobMover::new(4, RetryPolicy::fast(), Default::default());
    let copy = ImageCopy {
        src: &src.client,
        src_repo: "app",
        dst: &dst.client,
        dst_repo: "app",
        probe: true,
        blobs: &mover,
    };
    let m = src
        .client
        .get_manifest("app", &image.digest)
        .await
        .unwrap()
        .unwrap();
    copy.content(&m).await.unwrap();
    dst.client.put_manifest("app", "v1", &m).await.unwrap();
    ReferrerCopy {
        image: &copy,
        artifact_types: types,
        source_schema_tags: None,
    }
    .copy(&m.digest)
    .await
    .unwrap()
}

fn digest(p: &Pushed) -> Digest {
    Digest::parse(&p.digest).unwrap()
}

/// The digests `side` lists as referrers of `subject`, and whether by the API.
async fn listed(side: &Side, subject: &Pushed) -> (bool, Vec<String>) {
    let listing = side
        .client
        .referrers("app", &digest(subject))
        .await
        .unwrap();
    let mut digests: Vec<String> = listing
        .referrers()
        .iter()
        .map(|r| r.digest.to_string())
        .collect();
    digests.sort();
    (matches!(listing, Listing::Api(_)), digests)
}

/// Every referrer is at the destination by digest, byte for byte.
async fn same_bytes(dst: &Side, pushed: &[&Pushed]) {
    for p in pushed {
        let got = dst.client.get_manifest("app", &p.digest).await.unwrap();
        assert_eq!(
            got.map(|m| m.bytes.to_vec()),
            Some(p.bytes.clone()),
            "{}",
            p.digest
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_referrers_api_referrers_travel_through_the_tag_schema_both_ways() {
    let (a, b) = (
        RegistryProcess::start(RegistryOpts::default()).await,
        RegistryProcess::start(RegistryOpts::default()).await,
    );
    let (src, dst) = (Side::plain(&a), Side::plain(&b));
    let s = signed_image(&src).await;
    // docker-registry 2.8 has no referrers API: the client falls back to the tag schema.
    let (api, at_src) = listed(&src, &s.image).await;
    assert!(!api);
    assert_eq!(at_src, sorted_digests(&[&s.signature, &s.sbom]));

    let count = copy(&src, &dst, &s.image, &[]).await;
    assert_eq!((count.copied, count.present, count.skipped), (3, 0, 0));
    assert!(count.bytes > 0);
    assert_eq!(listed(&dst, &s.image).await, (false, at_src));
    assert_eq!(
        listed(&dst, &s.sbom).await,
        (false, sorted_digests(&[&s.sbom_signature]))
    );
    same_bytes(&dst, &[&s.signature, &s.sbom, &s.sbom_signature]).await;
    // The destination's index says what the source's said about each referrer.
    let index = dst
        .seeder
        .schema_index("app", &s.image.digest)
        .await
        .unwrap();
    let sig = index
        .iter()
        .find(|d| d["digest"] == s.signature.digest.as_str())
        .unwrap();
    assert_eq!(sig["artifactType"], COSIGN_SIGNATURE);
    assert_eq!(sig["annotations"]["org.example.seed"], "11");

    // Again: everything is there, nothing is pushed, the index is not rewritten. Each side is
    // asked for the tag-schema index of each subject at once (its missing API was learnt).
    let tag = ecr_sync::registry::schema_tag(&digest(&s.image));
    let before = dst.client.head_manifest("app", &tag).await.unwrap();
    let requests = |side: &Side| side.client.counts.total.load(Ordering::Relaxed);
    let (src_before, dst_before) = (requests(&src), requests(&dst));
    let count = copy(&src, &dst, &s.image, &[]).await;
    assert_eq!((count.copied, count.present), (0, 3));
    // Source: the image manifest, then one index per subject (the image, the signature, the
    // SBOM, its signature). Destination: the image's two blob HEADs and its tag PUT, then one
    // index per subject with referrers (the image, the SBOM).
    assert_eq!(requests(&src) - src_before, 1 + 4);
    assert_eq!(requests(&dst) - dst_before, 3 + 2);
    assert_eq!(dst.client.head_manifest("app", &tag).await.unwrap(), before);

    // A signature added at the source later is copied and listed next to the others.
    let late = src
        .seeder
        .referrer("app", &s.image, COSIGN_SIGNATURE, 14, src.listing)
        .await
        .unwrap();
    let count = copy(&src, &dst, &s.image, &[]).await;
    assert_eq!((count.copied, count.present), (1, 3));
    assert_eq!(
        listed(&dst, &s.image).await.1,
        sorted_digests(&[&s.signature, &s.sbom, &late])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_artifact_type_filter_picks_the_images_referrers_and_keeps_what_vouches_for_them() {
    let (a, b) = (
        RegistryProcess::start(RegistryOpts::default()).await,
        RegistryProcess::start(RegistryOpts::default()).await,
    );
    let (src, dst) = (Side::plain(&a), Side::plain(&b));
    let s = signed_image(&src).await;
    let count = copy(&src, &dst, &s.image, &[COSIGN_SIGNATURE.to_string()]).await;
    assert_eq!(count.copied, 1);
    assert_eq!(
        listed(&dst, &s.image).await.1,
        sorted_digests(&[&s.signature])
    );
    // Only SBOMs, into another destination: the SBOM, and the signature on it whatever its
    // type.
    let c = RegistryProcess::start(RegistryOpts::default()).await;
    let dst = Side::plain(&c);
    let count = copy(&src, &dst, &s.image, &[SPDX_SBOM.to_string()]).await;
    assert_eq!(count.copied, 2);
    assert_eq!(listed(&dst, &s.image).await.1, sorted_digests(&[&s.sbom]));
    assert_eq!(
        listed(&dst, &s.sbom).await.1,
        sorted_digests(&[&s.sbom_signature])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn between_registries_with_the_api_referrers_are_pushed_and_listed_by_it_alone() {
    let moto = MotoProcess::start().await;
    let (a, b) = (
        LocalEcr::start(
            &moto.endpoint(),
            "111122223333",
            "us-east-1",
            EcrRules::default(),
        )
        .await,
        LocalEcr::start(
            &moto.endpoint(),
            "444455556666",
            "us-east-1",
            EcrRules::default(),
        )
        .await,
    );
    let (src, dst) = (Side::ecr(&a, "app").await, Side::ecr(&b, "app").await);
    let s = signed_image(&src).await;
    let (api, at_src) = listed(&src, &s.image).await;
    assert!(api);
    let count = copy(&src, &dst, &s.image, &[]).await;
    assert_eq!((count.copied, count.present), (3, 0));
    assert_eq!(listed(&dst, &s.image).await, (true, at_src));
    assert_eq!(
        listed(&dst, &s.sbom).await,
        (true, sorted_digests(&[&s.sbom_signature]))
    );
    same_bytes(&dst, &[&s.signature, &s.sbom, &s.sbom_signature]).await;
    // The destination indexed them itself: no tag-schema index was written.
    assert!(dst
        .seeder
        .schema_index("app", &s.image.digest)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_the_tag_schema_into_a_registry_with_the_api() {
    let moto = MotoProcess::start().await;
    let a = RegistryProcess::start(RegistryOpts::default()).await;
    let b = LocalEcr::start(
        &moto.endpoint(),
        "444455556666",
        "us-east-1",
        EcrRules::default(),
    )
    .await;
    let (src, dst) = (Side::plain(&a), Side::ecr(&b, "app").await);
    let s = signed_image(&src).await;
    let count = copy(&src, &dst, &s.image, &[]).await;
    assert_eq!(count.copied, 3);
    assert_eq!(
        listed(&dst, &s.image).await,
        (true, sorted_digests(&[&s.signature, &s.sbom]))
    );
    assert!(dst
        .seeder
        .schema_index("app", &s.image.digest)
        .await
        .unwrap()
        .is_empty());
}
