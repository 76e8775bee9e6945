//! The ECR stand-in against real moto and a real `docker-registry`, part 2: how bytes move —
//! rate limits, upload parts, redirected blob GETs, mounts, the referrers API and lost
//! answers (part 1: `local_ecr.rs`).

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_image_over_ten_a_second_is_throttled_with_toomanyrequests_and_no_retry_after() {
    let (_moto, ecr) = start(EcrRules::default()).await;
    create_repo(&ecr, "app", "MUTABLE", &[]).await;
    let image = untagged_image(&seeder(&ecr), "app", 1).await;
    let burst = |round: usize| {
        let ecr = &ecr;
        let image = &image;
        futures_util::future::join_all((0..25).map(move |i| async move {
            put_manifest(
                ecr,
                "app",
                &format!("t{round}-{i}"),
                &image.media_type,
                &image.bytes,
            )
            .await
        }))
    };
    let mut throttled = 0;
    let mut created = 0;
    for resp in burst(0).await {
        if resp.status() == 429 {
            assert!(resp.headers().get("retry-after").is_none());
            assert_eq!(
                error_of(resp).await,
                (429, "TOOMANYREQUESTS".into(), "Rate exceeded".into())
            );
            throttled += 1;
        } else {
            assert_eq!(resp.status(), 201);
            created += 1;
        }
    }
    assert!(
        created >= 10 && throttled >= 5,
        "{created} created, {throttled} throttled"
    );
    let counts = ecr.counts();
    assert_eq!(counts.calls(EcrAction::PutImage), 26);
    assert_eq!(counts.throttled(EcrAction::PutImage), throttled);

    ecr.set_rules(EcrRules {
        rate_limits: None,
        ..EcrRules::default()
    });
    assert!(burst(1).await.iter().all(|r| r.status() == 201));
}

/// Starts an upload of `repo` through the stand-in; its `Location`.
async fn start_upload(ecr: &LocalEcr, repo: &str) -> String {
    let resp = request(
        ecr,
        reqwest::Method::POST,
        &format!("/v2/{repo}/blobs/uploads/"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 202);
    let loc = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(loc.starts_with(&ecr.url()), "{loc}");
    loc
}

/// PATCHes `bytes` at `offset`; the answer.
async fn patch(ecr: &LocalEcr, location: &str, offset: usize, bytes: &[u8]) -> reqwest::Response {
    reqwest::Client::new()
        .patch(location)
        .basic_auth("AWS", Some(ecr.password()))
        .header("content-type", "application/octet-stream")
        .header(
            "content-range",
            format!("{offset}-{}", offset + bytes.len() - 1),
        )
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_final_part_under_five_mib_is_refused_but_a_single_put_upload_works() {
    let (_moto, ecr) = start(EcrRules::default()).await;
    create_repo(&ecr, "app", "MUTABLE", &[]).await;
    let small = seed::noise(1, 1000);

    let loc = start_upload(&ecr, "app").await;
    assert_eq!(patch(&ecr, &loc, 0, &small).await.status(), 202);
    let (status, code, _) = error_of(patch(&ecr, &loc, 1000, &small).await).await;
    assert_eq!((status, code.as_str()), (400, "LAYER_PART_TOO_SMALL"));

    // A small part finished by a PUT carrying more bytes was not the last part either.
    let loc = start_upload(&ecr, "app").await;
    let resp = patch(&ecr, &loc, 0, &small).await;
    let loc = resp.headers()["location"].to_str().unwrap().to_string();
    let put = reqwest::Client::new()
        .put(format!(
            "{loc}&digest={}",
            seed::sha256(&[small.clone(), small.clone()].concat())
        ))
        .basic_auth("AWS", Some(ecr.password()))
        .body(small.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(put).await.1, "LAYER_PART_TOO_SMALL");

    // 5 MiB, then a small last part, then an empty PUT: accepted.
    let big = seed::noise(2, 5 * 1024 * 1024);
    let loc = start_upload(&ecr, "app").await;
    let resp = patch(&ecr, &loc, 0, &big).await;
    assert_eq!(resp.status(), 202);
    let loc = resp.headers()["location"].to_str().unwrap().to_string();
    let resp = patch(&ecr, &loc, big.len(), &small).await;
    assert_eq!(resp.status(), 202);
    let loc = resp.headers()["location"].to_str().unwrap().to_string();
    let digest = seed::sha256(&[big, small.clone()].concat());
    let put = reqwest::Client::new()
        .put(format!("{loc}&digest={digest}"))
        .basic_auth("AWS", Some(ecr.password()))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);

    // POST then one PUT with the whole (small) blob.
    seeder(&ecr).blob("app", small.clone()).await.unwrap();

    ecr.set_rules(EcrRules {
        min_part_bytes: None,
        ..EcrRules::default()
    });
    let loc = start_upload(&ecr, "app").await;
    let resp = patch(&ecr, &loc, 0, &small).await;
    let loc = resp.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(patch(&ecr, &loc, 1000, &small).await.status(), 202);
    let counts = ecr.counts();
    assert_eq!(counts.calls(EcrAction::UploadLayerPart), 7);
    assert_eq!(counts.calls(EcrAction::CompleteLayerUpload), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_gets_redirect_to_an_s3_stand_in_that_refuses_a_second_auth_mechanism() {
    let (_moto, ecr) = start(EcrRules::default()).await;
    create_repo(&ecr, "team/app", "MUTABLE", &[]).await;
    let bytes = seed::noise(7, 4096);
    let digest = seeder(&ecr).blob("team/app", bytes.clone()).await.unwrap();
    let path = format!("/v2/team/app/blobs/{digest}");

    let head = request(&ecr, reqwest::Method::HEAD, &path)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200, "HEAD is answered directly");
    assert_eq!(head.headers()["docker-content-digest"], digest.as_str());

    let get = request(&ecr, reqwest::Method::GET, &path)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 307);
    let location = get.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("http://127.0.0.1:") && !location.starts_with(&ecr.url()));
    assert!(location.contains("X-Amz-Signature="), "{location}");

    let http = reqwest::Client::new();
    let with_auth = http
        .get(&location)
        .basic_auth("AWS", Some(ecr.password()))
        .send()
        .await
        .unwrap();
    assert_eq!(with_auth.status(), 400);
    assert!(with_auth
        .text()
        .await
        .unwrap()
        .contains("<Code>InvalidArgument</Code>"));
    let plain = http.get(&location).send().await.unwrap();
    assert_eq!(plain.status(), 200);
    assert_eq!(seed::sha256(&plain.bytes().await.unwrap()), digest);
    let forged = http
        .get(location.replace("X-Amz-Signature=", "X-Amz-Signature=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);

    // reqwest drops credentials on a redirect to another origin, so it follows it fine.
    let followed = http
        .get(format!("{}{path}", ecr.url()))
        .basic_auth("AWS", Some(ecr.password()))
        .send()
        .await
        .unwrap();
    assert_eq!(seed::sha256(&followed.bytes().await.unwrap()), digest);

    ecr.set_rules(EcrRules {
        redirect_blob_gets: false,
        ..EcrRules::default()
    });
    let direct = request(&ecr, reqwest::Method::GET, &path)
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 200);
    let counts = ecr.counts();
    assert_eq!(counts.calls(EcrAction::GetDownloadUrlForLayer), 3);
    assert_eq!(counts.calls(EcrAction::BatchCheckLayerAvailability), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mount_works_only_with_mounting_on_from_a_committed_manifest_and_like_encryption() {
    let (_moto, ecr) = start(EcrRules::default()).await;
    create_repo(&ecr, "src", "MUTABLE", &[]).await;
    create_repo(&ecr, "dst", "MUTABLE", &[]).await;
    let digest = seeder(&ecr)
        .blob("src", seed::noise(3, 2000))
        .await
        .unwrap();
    let mount = format!("/v2/dst/blobs/uploads/?mount={digest}&from=src");
    let blob = format!("/v2/dst/blobs/{digest}");

    let resp = request(&ecr, reqwest::Method::POST, &mount)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let loc = resp.headers()["location"].to_str().unwrap();
    assert!(
        loc.starts_with(&format!("{}/v2/dst/blobs/uploads/", ecr.url())),
        "{loc}"
    );
    let head = request(&ecr, reqwest::Method::HEAD, &blob)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 404, "not mounted");

    ecr.set_rules(EcrRules {
        blob_mounting: true,
        ..EcrRules::default()
    });
    let post = |path: String| {
        let ecr = &ecr;
        async move {
            let resp = request(ecr, reqwest::Method::POST, &path)
                .send()
                .await
                .unwrap();
            resp.status().as_u16()
        }
    };
    let head = |path: String| {
        let ecr = &ecr;
        async move {
            let resp = request(ecr, reqwest::Method::HEAD, &path)
                .send()
                .await
                .unwrap();
            resp.status().as_u16()
        }
    };
    // Mounting on, but no committed manifest of `src` references the blob: a fresh upload.
    assert_eq!(post(mount.clone()).await, 202);
    assert_eq!(
        head(blob.clone()).await,
        404,
        "mounted an unreferenced blob"
    );
    // A manifest in `src` references it: mounted.
    seeder(&ecr)
        .image(
            "src",
            Some("v1"),
            vec![],
            &[(digest.clone(), 2000)],
            ("linux", "amd64"),
        )
        .await
        .unwrap();
    assert_eq!(post(mount.clone()).await, 201);
    assert_eq!(head(blob).await, 200, "mounted");
    // Not into a repository with other encryption settings.
    ecr.control_plane(
        "CreateRepository",
        serde_json::json!({"repositoryName": "kms", "encryptionConfiguration": {"encryptionType": "KMS"}}),
    )
    .await
    .unwrap();
    let into_kms = format!("/v2/kms/blobs/uploads/?mount={digest}&from=src");
    assert_eq!(post(into_kms).await, 202);
    assert_eq!(head(format!("/v2/kms/blobs/{digest}")).await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_referrers_api_lists_manifests_whose_subject_is_the_digest() {
    let (_moto, ecr) = start(EcrRules::default()).await;
    create_repo(&ecr, "app", "MUTABLE", &[]).await;
    let s = seeder(&ecr);
    let subject = s
        .image(
            "app",
            Some("v1"),
            vec![seed::noise(1, 1000)],
            &[],
            ("linux", "amd64"),
        )
        .await
        .unwrap();
    let empty = s.blob("app", b"{}".to_vec()).await.unwrap();
    let mut referrers = Vec::new();
    for (i, artifact_type) in [
        "application/vnd.example.sbom.v1+json",
        "application/vnd.example.sig.v1",
    ]
    .into_iter()
    .enumerate()
    {
        let payload = seed::noise(10 + i as u64, 300);
        let layer = s.blob("app", payload.clone()).await.unwrap();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": seed::OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": layer, "size": payload.len()}],
            "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
            "annotations": {"org.example.index": i.to_string()},
        }))
        .unwrap();
        let digest = seed::sha256(&manifest);
        let put = put_manifest(&ecr, "app", &digest, seed::OCI_MANIFEST, &manifest).await;
        assert_eq!(put.status(), 201);
        assert_eq!(put.headers()["oci-subject"], subject.digest.as_str());
        referrers.push((digest, manifest.len(), artifact_type));
    }

    let list = |query: &str| {
        let path = format!("/v2/app/referrers/{}{query}", subject.digest);
        request(&ecr, reqwest::Method::GET, &path).send()
    };
    let all = list("").await.unwrap();
    assert_eq!(all.headers()["content-type"], seed::OCI_INDEX);
    assert!(all.headers().get("oci-filters-applied").is_none());
    let all = json_of(all).await;
    assert_eq!(all["mediaType"], seed::OCI_INDEX);
    let listed = all["manifests"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    for (d, (digest, size, artifact_type)) in listed.iter().zip(&referrers) {
        assert_eq!(d["digest"], digest.as_str());
        assert_eq!(d["size"], *size);
        assert_eq!(d["artifactType"], *artifact_type);
        assert_eq!(d["mediaType"], seed::OCI_MANIFEST);
        assert!(d["annotations"]["org.example.index"].is_string());
    }
    let sboms = list("?artifactType=application%2Fvnd.example.sbom.v1%2Bjson")
        .await
        .unwrap();
    assert_eq!(sboms.headers()["oci-filters-applied"], "artifactType");
    let sboms = json_of(sboms).await;
    assert_eq!(sboms["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(sboms["manifests"][0]["digest"], referrers[0].0.as_str());

    let none = request(
        &ecr,
        reqwest::Method::GET,
        &format!("/v2/app/referrers/{empty}"),
    )
    .send()
    .await
    .unwrap();
    let none = json_of(none).await;
    assert_eq!(none["manifests"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_manifest_put_response_fails_the_client_yet_the_tag_is_committed() {
    let (_moto, ecr) = start(EcrRules::default()).await;
    create_repo(&ecr, "app", "IMMUTABLE", &[]).await;
    let image = untagged_image(&seeder(&ecr), "app", 1).await;
    ecr.lose_next_manifest_put_response();
    let lost = request(&ecr, reqwest::Method::PUT, "/v2/app/manifests/v1")
        .header("content-type", &image.media_type)
        .body(image.bytes.clone())
        .send()
        .await;
    assert!(lost.is_err(), "no answer: {lost:?}");
    assert_eq!(ecr.digest("app", "v1").await, Some(image.digest.clone()));
    assert_eq!(moto_digest(&ecr, "app", "v1").await, Some(image.digest));
    // The retry meets the committed immutable tag.
    let retry = put_manifest(&ecr, "app", "v1", &image.media_type, &image.bytes).await;
    assert_eq!(error_of(retry).await.1, "TAG_INVALID");
}
