//! `sync` copies an image's OCI 1.1 referrers (signatures, attestations, SBOMs) with it, by the
//! tag schema between plain registries (docker-registry 2.8 has no referrers API) and by the
//! API into and out of testkit's local ECR; a warm run copies a signature added after its
//! image was copied, without copying the image again; `referrers` in the config turns it off
//! or narrows it to some artifact types.

mod common;
use common::*;
use ecr::{EcrRules, LocalEcr};
use ecr_sync_testkit::artifacts::{sorted_digests, Listing, Signed, COSIGN_SIGNATURE};
use seed::{Pushed, Seeder};
use serde_json::{json, Value};

const ACCOUNT: &str = "123456789012";

async fn signed(s: &Seeder, repo: &str, tag: &str, seed: u64, listing: Listing) -> Signed {
    s.signed_image(repo, tag, seed, listing).await.unwrap()
}

async fn plain_image(s: &Seeder, repo: &str, tag: &str, seed: u64) -> Pushed {
    s.image(
        repo,
        Some(tag),
        vec![seed::noise(seed, 3000)],
        &[],
        ("linux", "amd64"),
    )
    .await
    .unwrap()
}

/// The digests a tag-schema index at `reg` lists for `subject`.
async fn schema_listed(reg: &RegistryProcess, repo: &str, subject: &Pushed) -> Vec<String> {
    Seeder::new(reqwest::Client::new(), &reg.url(), None)
        .schema_digests(repo, &subject.digest)
        .await
        .unwrap()
}

/// The digests the local ECR's referrers API lists for `subject`.
async fn api_listed(ecr: &LocalEcr, repo: &str, subject: &Pushed) -> Vec<String> {
    let body = reqwest::Client::new()
        .get(format!(
            "{}/v2/{repo}/referrers/{}",
            ecr.url(),
            subject.digest
        ))
        .basic_auth("AWS", Some(ecr.password()))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let index: Value = serde_json::from_slice(&body).unwrap();
    let mut d: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["digest"].as_str().unwrap().to_string())
        .collect();
    d.sort();
    d
}

fn job<'a>(run: &'a Run, destination_suffix: &str) -> &'a Value {
    run.report()["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| {
            j["destination"]
                .as_str()
                .unwrap()
                .ends_with(destination_suffix)
        })
        .unwrap_or_else(|| panic!("no job for {destination_suffix}: {}", run.stderr))
}

fn referrers(run: &Run) -> u64 {
    run.report()["referrers"].as_u64().unwrap()
}

fn requests(run: &Run, key: &str, host: &str) -> u64 {
    run.report()[key][host].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_follow_images_through_the_tag_schema_and_a_warm_run_copies_a_late_signature() {
    let src = RegistryProcess::start(RegistryOpts::default()).await;
    let dst = RegistryProcess::start(RegistryOpts::default()).await;
    let s = Seeder::new(reqwest::Client::new(), &src.url(), None);
    let app = signed(&s, "team/app", "v1", 100, Listing::TagSchema).await;
    let v2 = plain_image(&s, "team/app", "v2", 200).await;
    // A multi-arch image whose amd64 child is signed on its own (`cosign sign --recursive`).
    let (multi, children) = s.multi_arch("team/app", "multi", 30).await.unwrap();
    let child_signature = s
        .referrer(
            "team/app",
            &children[0],
            COSIGN_SIGNATURE,
            300,
            Listing::TagSchema,
        )
        .await
        .unwrap();
    // Only signatures are wanted here.
    let picky = signed(&s, "team/picky", "v1", 400, Listing::TagSchema).await;
    // Referrers off: the tag-schema index is an ordinary tag, copied as such if selected.
    let off = signed(&s, "team/off", "v1", 500, Listing::TagSchema).await;

    let config = json!({
        "repos": [
            { "source": format!("{}/team/app", src.host()) },
            { "source": format!("{}/team/picky", src.host()),
              "referrers": { "artifact_types": [COSIGN_SIGNATURE] } },
            { "source": format!("{}/team/off", src.host()), "referrers": { "enabled": false } },
        ],
        "destination_registry": dst.host(),
        "registries": { src.host(): { "plain_http": true }, dst.host(): { "plain_http": true } }
    });
    let work = Workdir::new();
    let cold = work.sync(&config, &[], &[]);
    cold.assert_code(0);
    // team/app: v1, v2, multi (its sha256-… tags are referrer indexes, not jobs); picky: v1;
    // off: v1 and its two sha256-… tags (the image's, the SBOM's).
    assert_eq!(cold.count("copied"), 7, "{}", cold.stderr);
    assert_eq!(cold.count("selected"), 7);
    assert_eq!(
        job(&cold, "team/app:v1")["referrers"],
        3,
        "signature, SBOM, the SBOM's signature"
    );
    assert_eq!(job(&cold, "team/app:multi")["referrers"], 1, "the child's");
    assert_eq!(job(&cold, "team/app:v2")["referrers"], 0);
    assert_eq!(job(&cold, "team/picky:v1")["referrers"], 1);
    assert_eq!(job(&cold, "team/off:v1")["referrers"], 0);
    assert_eq!(referrers(&cold), 5);
    assert!(
        cold.stdout.contains("5 referrers copied"),
        "{}",
        cold.stdout
    );

    assert_eq!(
        schema_listed(&dst, "team/app", &app.image).await,
        sorted_digests(&[&app.signature, &app.sbom])
    );
    assert_eq!(
        schema_listed(&dst, "team/app", &app.sbom).await,
        sorted_digests(&[&app.sbom_signature])
    );
    assert_eq!(
        schema_listed(&dst, "team/app", &children[0]).await,
        sorted_digests(&[&child_signature])
    );
    assert_eq!(
        schema_listed(&dst, "team/picky", &picky.image).await,
        sorted_digests(&[&picky.signature])
    );
    assert_eq!(
        tags(&dst, "team/app").await.len(),
        3 + 3,
        "v1, v2, multi and three indexes"
    );
    // Digests preserved: skopeo reads each referrer at the destination byte for byte.
    for p in [
        &app.signature,
        &app.sbom,
        &app.sbom_signature,
        &child_signature,
    ] {
        assert_eq!(skopeo_raw(&dst.host(), "team/app", &p.digest), p.bytes);
    }
    assert_eq!(
        skopeo_raw(&dst.host(), "team/app", "multi"),
        multi.bytes,
        "the index itself"
    );
    // Off: the source's index went over as a tag, its referrers with it (as an index's
    // children), not as referrers of the image.
    assert_eq!(
        schema_listed(&dst, "team/off", &off.image).await,
        sorted_digests(&[&off.signature, &off.sbom])
    );

    // Warm: nothing to copy, and no blob read; the referrer check costs one GET of each
    // signed image's tag-schema index (the listing shows which have one) and one referrers
    // probe per repository.
    let warm = work.sync(&config, &[], &[]);
    warm.assert_code(0);
    assert_eq!((warm.count("copied"), referrers(&warm)), (0, 0));
    assert_eq!(requests(&warm, "blob_requests", &src.host()), 0);
    assert_eq!(requests(&warm, "blob_requests", &dst.host()), 0);
    // The registry's `/v2/` check; per repository: tag list (and, where referrers are
    // copied, the referrers API probe); per tag: its manifest; per signed image (app:v1,
    // picky:v1; the listing shows which have an index): its index at the source.
    let src_requests = requests(&warm, "requests", &src.host());
    assert_eq!(
        src_requests,
        1 + 3 + 2 + 7 + 2,
        "source requests on a warm run of 7 tags"
    );

    // A signature added to v2 after it was copied: the next run copies it, not the image.
    let late = s
        .referrer("team/app", &v2, COSIGN_SIGNATURE, 600, Listing::TagSchema)
        .await
        .unwrap();
    let again = work.sync(&config, &[], &[]);
    again.assert_code(0);
    assert_eq!(again.count("copied"), 0, "{}", again.stderr);
    assert_eq!(referrers(&again), 1);
    let v2_job = job(&again, "team/app:v2");
    assert_eq!(v2_job["outcome"], "skipped");
    assert_eq!(v2_job["referrers"], 1);
    assert!(
        v2_job["reason"]
            .as_str()
            .unwrap()
            .contains("1 referrers copied"),
        "{v2_job}"
    );
    assert_eq!(
        schema_listed(&dst, "team/app", &v2).await,
        sorted_digests(&[&late])
    );
    // The signature's two blobs (empty config, payload), not the image's layer.
    assert!(requests(&again, "blob_requests", &src.host()) <= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_go_into_an_ecr_destination_through_its_api_and_come_back_out_of_it() {
    let moto = MotoProcess::start().await;
    let src = RegistryProcess::start(RegistryOpts::default()).await;
    let back = RegistryProcess::start(RegistryOpts::default()).await;
    let ecr = LocalEcr::start(&moto.endpoint(), ACCOUNT, "us-east-1", EcrRules::default()).await;
    let s = Seeder::new(reqwest::Client::new(), &src.url(), None);
    let app = signed(&s, "team/app", "v1", 700, Listing::TagSchema).await;

    let into_ecr = json!({
        "repos": [{ "source": format!("{}/team/app", src.host()) }],
        "repo_defaults": { "tag_immutability": true, "scan_on_push": false },
        "destination_registry": ecr.host(),
        "registries": {
            src.host(): { "plain_http": true },
            ecr.host(): { "endpoint": ecr.url(), "plain_http": true }
        }
    });
    let work = Workdir::new();
    let run = work.sync(&into_ecr, &[], &moto.env());
    run.assert_code(0);
    assert_eq!(
        (run.count("copied"), referrers(&run)),
        (1, 3),
        "{}",
        run.stderr
    );
    // ECR indexes each referrer by its subject: its API lists them, and no sha256-… tag was
    // written (an immutable repository would refuse to rewrite one).
    assert_eq!(
        api_listed(&ecr, "team/app", &app.image).await,
        sorted_digests(&[&app.signature, &app.sbom])
    );
    assert_eq!(
        api_listed(&ecr, "team/app", &app.sbom).await,
        sorted_digests(&[&app.sbom_signature])
    );
    assert_eq!(
        ecr.digest("team/app", "v1").await,
        Some(app.image.digest.clone())
    );
    let warm = work.sync(&into_ecr, &[], &moto.env());
    warm.assert_code(0);
    assert_eq!((warm.count("copied"), referrers(&warm)), (0, 0));

    // Out of ECR (the API) into a registry without one (the tag schema), digests unchanged.
    let out_of_ecr = json!({
        "repos": [{ "source": format!("{}/team/app", ecr.host()) }],
        "destination_registry": back.host(),
        "registries": {
            back.host(): { "plain_http": true },
            ecr.host(): { "endpoint": ecr.url(), "plain_http": true }
        }
    });
    let out = Workdir::new().sync(&out_of_ecr, &[], &moto.env());
    out.assert_code(0);
    assert_eq!(
        (out.count("copied"), referrers(&out)),
        (1, 3),
        "{}",
        out.stderr
    );
    assert_eq!(
        schema_listed(&back, "team/app", &app.image).await,
        sorted_digests(&[&app.signature, &app.sbom])
    );
    for p in [&app.signature, &app.sbom, &app.sbom_signature] {
        assert_eq!(skopeo_raw(&back.host(), "team/app", &p.digest), p.bytes);
    }
}
