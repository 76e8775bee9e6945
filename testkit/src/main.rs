//! `ecr-sync-testkit seed`: fills a registry with synthetic images for the demo and benchmarks.

use clap::Parser;
use ecr_sync_testkit::seed::{noise, Seeder};

/// Push synthetic images into a registry.
#[derive(Parser)]
#[command(name = "ecr-sync-testkit")]
enum Cli {
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
    let Cli::Seed {
        registry,
        prefix,
        repos,
        tags,
        layer_bytes,
        multi_arch,
        big_mib,
    } = Cli::parse();
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
