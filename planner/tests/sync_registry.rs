//! End-to-end `sync` between two real registries (Debian's docker-registry), with a counting proxy
//! in front of each so requests can be asserted.

mod common;
use common::*;
use serde_json::json;

struct Pair {
    src: RegistryProcess,
    dst: RegistryProcess,
    src_proxy: proxy::Proxy,
    dst_proxy: proxy::Proxy,
}

async fn pair() -> Pair {
    let src = RegistryProcess::start(RegistryOpts::default()).await;
    let dst = RegistryProcess::start(RegistryOpts::default()).await;
    let src_proxy = proxy::Proxy::start(&src.url(), Default::default()).await;
    let dst_proxy = proxy::Proxy::start(&dst.url(), Default::default()).await;
    Pair {
        src,
        dst,
        src_proxy,
        dst_proxy,
    }
}

impl Pair {
    fn seeder(&self) -> seed::Seeder {
        seed::Seeder::new(reqwest::Client::new(), &self.src.url(), None)
    }

    fn config(&self, repos: serde_json::Value) -> serde_json::Value {
        json!({
            "repos": repos,
            "destination_registry": self.dst_proxy.host(),
            "registries": {
                self.src_proxy.host(): { "plain_http": true },
                self.dst_proxy.host(): { "plain_http": true }
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn globs_select_tags_rename_works_and_a_warm_rerun_touches_no_blob() {
    let p = pair().await;
    let s = p.seeder();
    let all = [
        "v1.2.3", "v1.2.34", "v1.2", "v1.23", "latest", "stable", "edge",
    ];
    for (i, t) in all.iter().enumerate() {
        s.image(
            "team/app",
            Some(t),
            vec![seed::noise(i as u64, 1000)],
            &[],
            ("linux", "amd64"),
        )
        .await
        .unwrap();
    }
    let cfg = p.config(json!([
        { "source": format!("{}/team/app", p.src_proxy.host()), "tags": ["v?.?.?", "v?.?", "{latest,stable}"] },
        { "source": format!("{}/team/app", p.src_proxy.host()), "destination": "renamed/app", "tags": ["v1.*"] }
    ]));
    let w = Workdir::new();
    let run = w.sync(&cfg, &[], &[]);
    run.assert_code(0);
    assert_eq!(
        tags(&p.dst, "team/app").await,
        vec!["latest", "stable", "v1.2", "v1.2.3"]
    );
    assert_eq!(
        tags(&p.dst, "renamed/app").await,
        vec!["v1.2", "v1.2.3", "v1.2.34", "v1.23"]
    );
    assert_eq!(run.count("copied"), 8);
    // Each job says when it ended, within the run: what a timeline of the run is drawn from.
    let run_ms = run.count("duration_ms");
    for job in run.report()["jobs"].as_array().unwrap() {
        let (ended, took) = (job["finished_ms"].as_u64(), job["duration_ms"].as_u64());
        let (Some(ended), Some(took)) = (ended, took) else {
            panic!("a job without finished_ms or duration_ms: {job}");
        };
        assert!(
            took <= ended && ended <= run_ms,
            "{job} in a run of {run_ms} ms"
        );
    }
    for t in ["v1.2.3", "latest"] {
        assert_eq!(
            skopeo_raw(&p.src.host(), "team/app", t),
            skopeo_raw(&p.dst.host(), "team/app", t)
        );
    }

    // Warm: nothing to copy, no blob request at either end, one source request per tag plus
    // listing, the referrers API probe (per configured repository) and the auth ping; the
    // destination is only listed (the ledger saw every tag there a moment ago).
    p.src_proxy.reset_counts();
    p.dst_proxy.reset_counts();
    let warm = w.sync(&cfg, &[], &[]);
    warm.assert_code(0);
    assert_eq!(warm.count("skipped"), 8);
    assert_eq!(warm.count("copied"), 0);
    assert_eq!(p.src_proxy.blob_requests() + p.dst_proxy.blob_requests(), 0);
    let total = p.src_proxy.requests().len() + p.dst_proxy.requests().len();
    assert!(
        total <= 8 + 2 * 3 + 2,
        "warm run made {total} requests: {:?} {:?}",
        p.src_proxy.requests(),
        p.dst_proxy.requests()
    );
    let dst_manifests = |p: &Pair| {
        p.dst_proxy
            .requests()
            .iter()
            .filter(|(_, path)| path.contains("/manifests/"))
            .count()
    };
    assert_eq!(dst_manifests(&p), 0, "{:?}", p.dst_proxy.requests());

    // Asked to check every tag, the destination is asked once per tag again.
    p.dst_proxy.reset_counts();
    let checked = w.sync(&cfg, &["--recheck-after-seconds", "0"], &[]);
    checked.assert_code(0);
    assert_eq!(checked.count("skipped"), 8);
    assert_eq!(dst_manifests(&p), 8, "{:?}", p.dst_proxy.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_rerun_trusts_recent_sightings_yet_recopies_a_deleted_tag_and_repairs_a_moved_one_when_rechecking(
) {
    let p = pair().await;
    let s = p.seeder();
    let mut digests = std::collections::HashMap::new();
    for (i, t) in ["a", "b", "c"].iter().enumerate() {
        let pushed = s
            .image(
                "team/app",
                Some(t),
                vec![seed::noise(i as u64, 500)],
                &[],
                ("linux", "amd64"),
            )
            .await
            .unwrap();
        digests.insert(*t, pushed.digest);
    }
    let cfg = p.config(json!([{ "source": format!("{}/team/app", p.src_proxy.host()) }]));
    let w = Workdir::new();
    w.sync(&cfg, &[], &[]).assert_code(0);

    // Behind ecr-sync's back: tag `a` moved to another image, tag `b` deleted.
    let dst = seed::Seeder::new(reqwest::Client::new(), &p.dst.url(), None);
    let other = dst
        .image(
            "team/app",
            Some("a"),
            vec![seed::noise(99, 500)],
            &[],
            ("linux", "amd64"),
        )
        .await
        .unwrap();
    let deleted = p
        .dst
        .client()
        .delete(format!(
            "{}/v2/team/app/manifests/{}",
            p.dst.url(),
            digests["b"]
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 202);
    assert_eq!(tags(&p.dst, "team/app").await, vec!["a", "c"]);
    let dst_digest = |tag: &str| seed::sha256(&skopeo_raw(&p.dst.host(), "team/app", tag));

    // Within the window: the deleted tag is copied again (the listing no longer has it); the
    // moved one is trusted, as documented for registries that list names only.
    let warm = w.sync(&cfg, &[], &[]);
    warm.assert_code(0);
    let copied: Vec<String> = warm
        .jobs("copied")
        .iter()
        .map(|j| j["destination"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(copied, vec![format!("{}/team/app:b", p.dst_proxy.host())]);
    assert_eq!(dst_digest("b"), digests["b"]);
    assert_eq!(dst_digest("a"), other.digest);
    let recent = warm.jobs("skipped");
    assert_eq!(recent.len(), 2);
    assert!(
        recent
            .iter()
            .all(|j| j["reason"].as_str().unwrap().contains("seen recently")),
        "{recent:?}"
    );

    // Rechecking (the window over, or asked for) finds and repairs the moved tag.
    let checked = w.sync(&cfg, &["--recheck-after-seconds", "0"], &[]);
    checked.assert_code(0);
    assert_eq!(checked.count("copied"), 1);
    assert_eq!(dst_digest("a"), digests["a"]);
    assert_eq!(w.sync(&cfg, &[], &[]).count("copied"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_arch_index_is_copied_with_digests_preserved() {
    let p = pair().await;
    let (index, children) = p.seeder().multi_arch("multi/arch", "v1", 7).await.unwrap();
    let cfg = p.config(json!([{ "source": format!("{}/multi/arch", p.src_proxy.host()) }]));
    let run = Workdir::new().sync(&cfg, &[], &[]);
    run.assert_code(0);
    let raw = skopeo_raw(&p.dst.host(), "multi/arch", "v1");
    assert_eq!(raw, index.bytes);
    assert_eq!(seed::sha256(&raw), index.digest);
    assert_eq!(run.jobs("copied")[0]["digest"], index.digest.as_str());
    for c in children {
        assert_eq!(skopeo_raw(&p.dst.host(), "multi/arch", &c.digest), c.bytes);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_shared_by_concurrent_copies_is_pulled_once() {
    let p = pair().await;
    let s = p.seeder();
    let base = seed::noise(999, 256 * 1024);
    let base_len = base.len() as u64;
    let base_digest = s.blob("shared/a", base).await.unwrap();
    let mut repos = Vec::new();
    for r in ["shared/a", "shared/b", "shared/c"] {
        // Mount the base into each source repository so every image can reference it.
        if r != "shared/a" {
            let resp = reqwest::Client::new()
                .post(format!(
                    "{}/v2/{r}/blobs/uploads/?mount={base_digest}&from=shared/a",
                    p.src.url()
                ))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 201);
        }
        for t in 0..4 {
            s.image(
                r,
                Some(&format!("t{t}")),
                vec![seed::noise(t * 100 + r.len() as u64, 512)],
                &[(base_digest.clone(), base_len)],
                ("linux", "amd64"),
            )
            .await
            .unwrap();
        }
        repos.push(json!({ "source": format!("{}/{r}", p.src_proxy.host()) }));
    }
    let run = Workdir::new().sync(&p.config(json!(repos)), &["--concurrency", "12"], &[]);
    run.assert_code(0);
    assert_eq!(run.count("copied"), 12);
    let pulls = p
        .src_proxy
        .requests()
        .iter()
        .filter(|(m, path)| m == "GET" && path.ends_with(&format!("/blobs/{base_digest}")))
        .count();
    assert_eq!(pulls, 1, "the shared base layer must be pulled once");
    let cold = p.src_proxy.requests().len() + p.dst_proxy.requests().len();
    assert!(
        cold <= 12 * 8 + 12,
        "cold run made {cold} requests for 12 tags"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_reports_the_plan_and_writes_nothing() {
    let p = pair().await;
    p.seeder()
        .image(
            "dry/run",
            Some("v1"),
            vec![seed::noise(1, 100)],
            &[],
            ("linux", "amd64"),
        )
        .await
        .unwrap();
    let cfg = p.config(json!([{ "source": format!("{}/dry/run", p.src_proxy.host()) }]));
    let w = Workdir::new();
    let run = w.sync(&cfg, &["--dry-run"], &[]);
    run.assert_code(0);
    assert_eq!(run.count("would_copy"), 1);
    assert!(run.stdout.contains("copy"), "{}", run.stdout);
    assert!(tags(&p.dst, "dry/run").await.is_empty());
    assert_eq!(
        p.dst_proxy
            .requests()
            .iter()
            .filter(|(m, _)| m != "GET" && m != "HEAD")
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_mode_skips_repositories_missing_at_the_destination() {
    let p = pair().await;
    let s = p.seeder();
    s.image(
        "keep/me",
        Some("v1"),
        vec![seed::noise(1, 100)],
        &[],
        ("linux", "amd64"),
    )
    .await
    .unwrap();
    s.image(
        "keep/me",
        Some("v2"),
        vec![seed::noise(2, 100)],
        &[],
        ("linux", "amd64"),
    )
    .await
    .unwrap();
    s.image(
        "not/there",
        Some("v1"),
        vec![seed::noise(3, 100)],
        &[],
        ("linux", "amd64"),
    )
    .await
    .unwrap();
    // The destination already has keep/me (any tag), but not not/there.
    seed::Seeder::new(reqwest::Client::new(), &p.dst.url(), None)
        .image(
            "keep/me",
            Some("old"),
            vec![seed::noise(4, 100)],
            &[],
            ("linux", "amd64"),
        )
        .await
        .unwrap();
    let mut cfg = p.config(json!([
        { "source": format!("{}/keep/me", p.src_proxy.host()) },
        { "source": format!("{}/not/there", p.src_proxy.host()) }
    ]));
    cfg["mode"] = json!("refresh");
    let run = Workdir::new().sync(&cfg, &[], &[]);
    run.assert_code(0);
    assert_eq!(tags(&p.dst, "keep/me").await, vec!["old", "v1", "v2"]);
    assert!(tags(&p.dst, "not/there").await.is_empty());
    let repos = run.report()["repositories"].as_array().unwrap().clone();
    assert_eq!(repos.len(), 1);
    assert_eq!(repos[0]["event"], "skipped");
    assert!(repos[0]["reason"]
        .as_str()
        .unwrap()
        .contains("does not exist"));
}
