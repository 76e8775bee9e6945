//! The ECR stand-in against real moto and a real `docker-registry`, part 1: who may push what —
//! auth, repositories, tag immutability, and what moto lists. Each rule of `testkit::ecr` has a
//! test that fails without it (part 2: `local_ecr_transport.rs`).

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_requests_need_motos_token_for_the_account_as_basic_auth() {
    let moto = MotoProcess::start().await;
    let ecr = LocalEcr::start(
        &moto.endpoint(),
        "111122223333",
        "eu-west-1",
        EcrRules::default(),
    )
    .await;
    assert_eq!(ecr.host(), "111122223333.dkr.ecr.eu-west-1.amazonaws.com");
    let token = ecr
        .control_plane("GetAuthorizationToken", json!({}))
        .await
        .unwrap();
    let token = token["authorizationData"][0]["authorizationToken"]
        .as_str()
        .unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token)
        .unwrap();
    assert_eq!(
        String::from_utf8(decoded).unwrap(),
        format!("AWS:{}", ecr.password())
    );

    let http = reqwest::Client::new();
    let base = format!("{}/v2/", ecr.url());
    let anonymous = http.get(&base).send().await.unwrap();
    assert_eq!(
        anonymous.headers()["www-authenticate"],
        "Basic realm=\"https://111122223333.dkr.ecr.eu-west-1.amazonaws.com/\",service=\"ecr.amazonaws.com\""
    );
    let (status, code, _) = error_of(anonymous).await;
    assert_eq!((status, code.as_str()), (401, "DENIED"));
    let wrong = http
        .get(&base)
        .basic_auth("AWS", Some("123456789012-auth-token"))
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_of(wrong).await;
    assert_eq!((status, code.as_str()), (401, "DENIED"));
    let right = http
        .get(&base)
        .basic_auth("AWS", Some(ecr.password()))
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);

    // The repository is looked up in this account: a push into it works.
    create_repo(&ecr, "team/api", "MUTABLE", &[]).await;
    let pushed = seeder(&ecr)
        .image(
            "team/api",
            Some("v1"),
            vec![seed::noise(1, 500)],
            &[],
            ("linux", "amd64"),
        )
        .await
        .unwrap();
    assert_eq!(
        ecr.digest("team/api", "v1").await.as_deref(),
        Some(pushed.digest.as_str())
    );

    ecr.set_rules(EcrRules {
        require_auth: false,
        ..EcrRules::default()
    });
    assert_eq!(http.get(&base).send().await.unwrap().status(), 200);
}

/// Asserts ECR's answer to a stale token: 401 `DENIED`, its message, and the Basic challenge.
async fn assert_token_expired(resp: reqwest::Response, ecr: &LocalEcr) {
    assert_eq!(
        resp.headers()["www-authenticate"],
        format!(
            "Basic realm=\"https://{}/\",service=\"ecr.amazonaws.com\"",
            ecr.host()
        )
        .as_str()
    );
    let (status, code, message) = error_of(resp).await;
    assert_eq!(
        (status, code.as_str(), message.as_str()),
        (
            401,
            "DENIED",
            "Your authorization token has expired. Reauthenticate and try again."
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_lifetime_only_issued_tokens_work_and_only_until_they_expire() {
    let moto = MotoProcess::start().await;
    let lifetime = Duration::from_secs(2);
    let rules = EcrRules {
        token_lifetime: Some(lifetime),
        ..EcrRules::default()
    };
    let ecr = LocalEcr::start(&moto.endpoint(), "111122223333", "eu-west-1", rules.clone()).await;
    let before = epoch_now();
    let first = get_authorization_token(&ecr).await;
    let second = get_authorization_token(&ecr).await;
    let after = epoch_now();
    assert_eq!(
        first["proxyEndpoint"],
        "https://111122223333.dkr.ecr.eu-west-1.amazonaws.com"
    );
    let (p1, p2) = (password_of(&first), password_of(&second));
    assert!(p1.starts_with("111122223333-auth-token-"), "{p1}");
    assert_ne!(p1, p2, "every call issues a new token");
    let expires = first["expiresAt"].as_f64().unwrap();
    assert!(
        before + 1.99 <= expires && expires <= after + 2.01,
        "expiresAt {expires} is not 2 s after issue ({before}..{after})"
    );
    assert_eq!(ecr.counts().calls(EcrAction::GetAuthorizationToken), 2);

    assert_eq!(ping_with(&ecr, &p1).await.status(), 200);
    assert_eq!(ping_with(&ecr, &p2).await.status(), 200);
    // moto's fixed password is not one the listener issued (moto says it expired in 2015).
    assert_token_expired(ping_with(&ecr, &ecr.password()).await, &ecr).await;
    assert_token_expired(ping_with(&ecr, "111122223333-auth-token-9").await, &ecr).await;

    tokio::time::sleep(lifetime + Duration::from_millis(200)).await;
    for stale in [&p1, &p2] {
        assert_token_expired(ping_with(&ecr, stale).await, &ecr).await;
    }
    let third = password_of(&get_authorization_token(&ecr).await);
    assert_eq!(ping_with(&ecr, &third).await.status(), 200);
    assert_eq!(ecr.counts().calls(EcrAction::GetAuthorizationToken), 3);

    // At run time: without the rule nothing expires and moto's password works again.
    ecr.set_rules(EcrRules::default());
    assert_eq!(ping_with(&ecr, &p1).await.status(), 200);
    assert_eq!(ping_with(&ecr, &ecr.password()).await.status(), 200);
    ecr.set_rules(rules);
    assert_token_expired(ping_with(&ecr, &p1).await, &ecr).await;
    assert_eq!(ping_with(&ecr, &third).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_endpoint_issues_twelve_hour_tokens_and_passes_other_calls_to_moto() {
    let moto = MotoProcess::start().await;
    let ecr = LocalEcr::start(
        &moto.endpoint(),
        "111122223333",
        "eu-west-1",
        EcrRules::default(),
    )
    .await;
    let data = get_authorization_token(&ecr).await;
    let expires = data["expiresAt"].as_f64().unwrap();
    let twelve_hours = 12.0 * 3600.0;
    assert!(
        (expires - (epoch_now() + twelve_hours)).abs() < 5.0,
        "expiresAt {expires}"
    );
    let issued = password_of(&data);
    assert_ne!(issued, ecr.password());
    // Without a token lifetime, issued tokens and moto's fixed password both work.
    assert_eq!(ping_with(&ecr, &issued).await.status(), 200);
    assert_eq!(ping_with(&ecr, &ecr.password()).await.status(), 200);
    let (status, code, message) = error_of(ping_with(&ecr, "nonsense").await).await;
    assert_eq!(
        (status, code.as_str(), message.as_str()),
        (401, "DENIED", "Not Authorized")
    );

    // Other calls reach moto as the stand-in's account, answers and errors unchanged.
    let created = api_call(
        &ecr,
        "CreateRepository",
        json!({"repositoryName": "team/api"}),
    )
    .await;
    assert_eq!(created.status(), 200);
    assert_eq!(
        json_of(created).await["repository"]["registryId"],
        "111122223333"
    );
    let listed = ecr
        .control_plane(
            "DescribeRepositories",
            json!({"repositoryNames": ["team/api"]}),
        )
        .await
        .unwrap();
    assert_eq!(listed["repositories"][0]["repositoryName"], "team/api");
    let again = api_call(
        &ecr,
        "CreateRepository",
        json!({"repositoryName": "team/api"}),
    )
    .await;
    assert_eq!(again.status(), 400);
    assert!(json_of(again).await["__type"]
        .as_str()
        .unwrap()
        .ends_with("RepositoryAlreadyExistsException"));
    assert_eq!(ecr.counts().calls(EcrAction::GetAuthorizationToken), 1);

    // GetAuthorizationToken is rate limited too: a bucket of ten seconds' worth.
    ecr.set_rules(EcrRules {
        rate_limits: Some(RateLimits {
            get_authorization_token: 1,
            ..RateLimits::default()
        }),
        ..EcrRules::default()
    });
    let mut statuses = Vec::new();
    for _ in 0..15 {
        let resp = api_call(&ecr, "GetAuthorizationToken", json!({})).await;
        let status = resp.status().as_u16();
        if status == 400 {
            assert_eq!(json_of(resp).await["__type"], "ThrottlingException");
        }
        statuses.push(status);
    }
    assert_eq!(statuses[..10], [200; 10], "a full bucket holds ten");
    let throttled = statuses.iter().filter(|s| **s == 400).count() as u64;
    assert!(throttled >= 1, "{statuses:?}");
    assert_eq!(
        ecr.counts().throttled(EcrAction::GetAuthorizationToken),
        throttled
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_moto_lacks_is_name_unknown_for_pushes_and_pulls() {
    let (_moto, ecr) = start(EcrRules::default()).await;
    let upload = request(&ecr, reqwest::Method::POST, "/v2/team/ghost/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let (status, code, message) = error_of(upload).await;
    assert_eq!((status, code.as_str()), (404, "NAME_UNKNOWN"));
    assert!(message.contains("'team/ghost'"), "{message}");
    let pull = request(&ecr, reqwest::Method::GET, "/v2/team/ghost/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(pull).await.1, "NAME_UNKNOWN");
    let put = put_manifest(&ecr, "team/ghost", "v1", seed::OCI_MANIFEST, b"{}").await;
    assert_eq!(error_of(put).await.1, "NAME_UNKNOWN");

    create_repo(&ecr, "team/ghost", "MUTABLE", &[]).await;
    let upload = request(&ecr, reqwest::Method::POST, "/v2/team/ghost/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immutable_tag_refuses_any_second_push_even_of_the_same_manifest() {
    let (_moto, ecr) = start(EcrRules::default()).await;
    create_repo(&ecr, "app", "IMMUTABLE", &[]).await;
    let s = seeder(&ecr);
    let first = untagged_image(&s, "app", 1).await;
    let other = untagged_image(&s, "app", 2).await;
    let put = put_manifest(&ecr, "app", "v1", &first.media_type, &first.bytes).await;
    assert_eq!(put.status(), 201);

    for again in [&first, &other] {
        let put = put_manifest(&ecr, "app", "v1", &again.media_type, &again.bytes).await;
        let (status, code, message) = error_of(put).await;
        assert_eq!((status, code.as_str()), (400, "TAG_INVALID"));
        assert_eq!(
            message,
            "The image tag 'v1' already exists in the 'app' repository and cannot be overwritten because the tag is immutable."
        );
    }
    assert_eq!(ecr.digest("app", "v1").await, Some(first.digest.clone()));
    // A new tag on an existing manifest is no overwrite.
    let put = put_manifest(&ecr, "app", "v2", &first.media_type, &first.bytes).await;
    assert_eq!(put.status(), 201);

    // Mutability is read afresh on every push.
    ecr.control_plane(
        "PutImageTagMutability",
        json!({"repositoryName": "app", "imageTagMutability": "MUTABLE"}),
    )
    .await
    .unwrap();
    let put = put_manifest(&ecr, "app", "v1", &other.media_type, &other.bytes).await;
    assert_eq!(put.status(), 201);
    assert_eq!(ecr.digest("app", "v1").await, Some(other.digest.clone()));
    assert_eq!(moto_digest(&ecr, "app", "v1").await, Some(other.digest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutable_tag_can_be_overwritten_and_pushed_again_unchanged() {
    let (_moto, ecr) = start(EcrRules::default()).await;
    create_repo(&ecr, "app", "MUTABLE", &[]).await;
    let s = seeder(&ecr);
    let first = untagged_image(&s, "app", 1).await;
    let other = untagged_image(&s, "app", 2).await;
    for (m, digest) in [(&first, &first), (&first, &first), (&other, &other)] {
        let put = put_manifest(&ecr, "app", "latest", &m.media_type, &m.bytes).await;
        assert_eq!(put.status(), 201);
        assert_eq!(
            ecr.digest("app", "latest").await,
            Some(digest.digest.clone())
        );
        assert_eq!(
            moto_digest(&ecr, "app", "latest").await,
            Some(digest.digest.clone())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusion_filters_flip_the_mutability_of_matching_tags() {
    let (_moto, ecr) = start(EcrRules::default()).await;
    create_repo(&ecr, "imm", "IMMUTABLE_WITH_EXCLUSION", &["latest*"]).await;
    create_repo(&ecr, "mut", "MUTABLE_WITH_EXCLUSION", &["release-*"]).await;
    for repo in ["imm", "mut"] {
        let s = seeder(&ecr);
        let a = untagged_image(&s, repo, 1).await;
        let b = untagged_image(&s, repo, 2).await;
        let (overwritable, fixed) = if repo == "imm" {
            ("latest", "v1")
        } else {
            ("dev", "release-1")
        };
        for tag in [overwritable, fixed] {
            let put = put_manifest(&ecr, repo, tag, &a.media_type, &a.bytes).await;
            assert_eq!(put.status(), 201, "{repo}:{tag}");
        }
        let put = put_manifest(&ecr, repo, overwritable, &b.media_type, &b.bytes).await;
        assert_eq!(put.status(), 201, "{repo}:{overwritable}");
        assert_eq!(moto_digest(&ecr, repo, overwritable).await, Some(b.digest));
        let put = put_manifest(&ecr, repo, fixed, &b.media_type, &b.bytes).await;
        assert_eq!(error_of(put).await.1, "TAG_INVALID", "{repo}:{fixed}");
        assert_eq!(moto_digest(&ecr, repo, fixed).await, Some(a.digest));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_manifests_are_described_by_moto_with_the_sha256_of_their_exact_bytes() {
    let (_moto, ecr) = start(EcrRules::default()).await;
    create_repo(&ecr, "app", "MUTABLE", &[]).await;
    let s = seeder(&ecr);
    let image = untagged_image(&s, "app", 1).await;
    // Re-serialized with indentation: same content, other bytes, other digest.
    let pretty =
        serde_json::to_vec_pretty(&serde_json::from_slice::<Value>(&image.bytes).unwrap()).unwrap();
    let pretty_digest = seed::sha256(&pretty);
    assert_ne!(pretty_digest, image.digest);
    let put = put_manifest(&ecr, "app", "v1", seed::DOCKER_MANIFEST, &pretty).await;
    assert_eq!(put.status(), 201);
    assert_eq!(
        put.headers()["docker-content-digest"],
        pretty_digest.as_str()
    );
    assert!(put.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with(&ecr.url()));

    let described = ecr
        .control_plane("DescribeImages", json!({"repositoryName": "app"}))
        .await
        .unwrap();
    let mut listed: Vec<(String, Vec<String>, String)> = described["imageDetails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["imageDigest"].as_str().unwrap().to_string(),
                d["imageTags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| t.as_str().unwrap().to_string())
                    .collect(),
                d["imageManifestMediaType"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    listed.sort();
    let mut expected = vec![
        (
            image.digest.clone(),
            vec![],
            seed::DOCKER_MANIFEST.to_string(),
        ),
        (
            pretty_digest.clone(),
            vec!["v1".to_string()],
            seed::DOCKER_MANIFEST.to_string(),
        ),
    ];
    expected.sort();
    assert_eq!(listed, expected, "the untagged push is listed too");
}
