//! `ecr-sync-testkit seed`: fills a registry with synthetic images for the demo and benchmarks.
//! `ecr-sync-testkit local-ecr`: serves testkit's local ECR until stopped, for benchmarks.

use clap::Parser;
use ecr_sync_testkit::ecr::{EcrAction, EcrRules, LocalEcr, RateLimits};
use ecr_sync_testkit::seed::{noise, Seeder};

/// Test servers and synthetic images for the demo and benchmarks.
#[derive(Parser)]
#[command(name = "ecr-sync-testkit")]
enum Cli {
    /// Serve a local ECR (moto's control plane, a docker-registry, ECR's rules) until SIGTERM or
    /// SIGINT. Prints one JSON line `{"url","host","password","api"}` when ready (`api`: the
    /// endpoint for `AWS_ENDPOINT_URL_ECR` that issues expiring tokens); at the end writes
    /// the calls and throttled calls per ECR action as JSON to `--counts`.
    LocalEcr {
        /// moto's endpoint, e.g. http://127.0.0.1:5000.
        #[arg(long)]
        moto: String,
        /// The account it stands for.
        #[arg(long, default_value = "123456789012")]
        account: String,
        /// Its region.
        #[arg(long, default_value = "us-east-1")]
        region: String,
        /// PutImage per second (ECR's default quota is 10).
        #[arg(long, default_value_t = 10)]
        put_image_rate: u32,
        /// Lose the answers to this many manifest PUTs (they commit; the client hears nothing).
        #[arg(long, default_value_t = 0)]
        lose_manifest_puts: u32,
        /// Where to write the counts at the end.
        #[arg(long)]
        counts: Option<std::path::PathBuf>,
    },
    /// Push `repos` × `tags` small single-layer images, optionally a multi-arch image and one image
    /// with a big layer.
    Seed {
        /// Registry base URL, e.g. http://127.0.0.1:5001.
        #[arg(long)]
        registry: String,
        /// Repository name prefix.
        #[arg(long, default_value = "demo")]
        prefix: String,
        /// Number of repositories of small images.
        #[arg(long, default_value_t = 2)]
        repos: usize,
        /// Tags per repository.
        #[arg(long, default_value_t = 3)]
        tags: usize,
        /// Layer size of the small images, in bytes.
        #[arg(long, default_value_t = 1024)]
        layer_bytes: usize,
        /// Also push PREFIX/multiarch:v1, a two-platform OCI index.
        #[arg(long)]
        multi_arch: bool,
        /// Also push PREFIX/big:v1 with one layer of this many MiB (0: none).
        #[arg(long, default_value_t = 0)]
        big_mib: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (registry, prefix, repos, tags, layer_bytes, multi_arch, big_mib) = match Cli::parse() {
        Cli::Seed {
            registry,
            prefix,
            repos,
            tags,
            layer_bytes,
            multi_arch,
            big_mib,
        } => (
            registry,
            prefix,
            repos,
            tags,
            layer_bytes,
            multi_arch,
            big_mib,
        ),
        Cli::LocalEcr {
            moto,
            account,
            region,
            put_image_rate,
            lose_manifest_puts,
            counts,
        } => {
            return serve_local_ecr(
                &moto,
                &account,
                &region,
                put_image_rate,
                lose_manifest_puts,
                counts,
            )
            .await
        }
    };
    let seeder = Seeder::new(reqwest::Client::new(), &registry, None);
    let mut n = 0u64;
    for r in 0..repos {
        let repo = format!("{prefix}/app{r}");
        let mut pending = Vec::new();
        for t in 0..tags {
            n += 1;
            let (seeder, repo) = (&seeder, repo.clone());
            pending.push(async move {
                let layer = noise(n * 7919 + 1, layer_bytes);
                seeder
                    .image(
                        &repo,
                        Some(&format!("v{t}")),
                        vec![layer],
                        &[],
                        ("linux", "amd64"),
                    )
                    .await
            });
            if pending.len() == 16 {
                for r in futures_util::future::join_all(pending.drain(..)).await {
                    r?;
                }
            }
        }
        for r in futures_util::future::join_all(pending).await {
            r?;
        }
    }
    if multi_arch {
        seeder
            .multi_arch(&format!("{prefix}/multiarch"), "v1", 77)
            .await?;
    }
    if big_mib > 0 {
        let repo = format!("{prefix}/big");
        let size = big_mib * 1024 * 1024;
        let digest = seeder.big_blob(&repo, 4242, size).await?;
        seeder
            .image(
                &repo,
                Some("v1"),
                vec![],
                &[(digest.clone(), size)],
                ("linux", "amd64"),
            )
            .await?;
        println!("big layer {digest} ({size} bytes)");
    }
    println!(
        "seeded {} small images in {repos} repositories under {prefix}/",
        repos * tags
    );
    Ok(())
}

/// `local-ecr`: see [`Cli::LocalEcr`].
async fn serve_local_ecr(
    moto: &str,
    account: &str,
    region: &str,
    put_image_rate: u32,
    lose_manifest_puts: u32,
    counts: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let rules = EcrRules {
        rate_limits: Some(RateLimits {
            put_image: put_image_rate,
            ..Default::default()
        }),
        ..Default::default()
    };
    let ecr = LocalEcr::start(moto, account, region, rules).await;
    for _ in 0..lose_manifest_puts {
        ecr.lose_next_manifest_put_response();
    }
    println!(
        "{}",
        serde_json::json!({
            "url": ecr.url(),
            "host": ecr.host(),
            "password": ecr.password(),
            "api": ecr.api_endpoint(),
        })
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    if let Some(path) = counts {
        let c = ecr.counts();
        let actions = [
            ("PutImage", EcrAction::PutImage),
            ("InitiateLayerUpload", EcrAction::InitiateLayerUpload),
            ("UploadLayerPart", EcrAction::UploadLayerPart),
            ("CompleteLayerUpload", EcrAction::CompleteLayerUpload),
            (
                "BatchCheckLayerAvailability",
                EcrAction::BatchCheckLayerAvailability,
            ),
            ("GetDownloadUrlForLayer", EcrAction::GetDownloadUrlForLayer),
            ("BatchGetImage", EcrAction::BatchGetImage),
            ("GetAuthorizationToken", EcrAction::GetAuthorizationToken),
        ];
        let json: serde_json::Map<String, serde_json::Value> = actions
            .iter()
            .map(|(name, a)| {
                let v = serde_json::json!({ "calls": c.calls(*a), "throttled": c.throttled(*a) });
                (name.to_string(), v)
            })
            .collect();
        std::fs::write(path, serde_json::Value::Object(json).to_string())?;
    }
    Ok(())
}
