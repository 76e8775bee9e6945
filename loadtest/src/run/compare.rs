//! `--compare skopeo`: the same fleet through another tool, timed in the same run.

use crate::generate::Generated;
use crate::report::{Compare, RunResult};
use crate::stack::Stack;
use anyhow::{bail, Context};
use ecr_sync_testkit::registry::{RegistryOpts, RegistryProcess};
use std::time::Instant;

/// The same fleet through `skopeo sync` (one process, every tag, every platform) into a fresh
/// destination registry, timed: what `--compare skopeo` reports next to `ours`.
pub async fn compare_skopeo(
    stack: &Stack,
    generated: &Generated,
    ours: &RunResult,
) -> anyhow::Result<Compare> {
    let Some(local) = stack.local() else {
        bail!("--compare needs the local stack (skopeo reads its source registry without credentials)");
    };
    let dst = RegistryProcess::start(RegistryOpts::default()).await;
    // skopeo's YAML source: every tag of every repository, plain HTTP.
    let mut yaml = format!("{}:\n  tls-verify: false\n  images:\n", local.src.host());
    for repo in generated.repos() {
        yaml.push_str(&format!("    {repo}:\n"));
        for image in generated.images.iter().filter(|i| i.repo == repo) {
            yaml.push_str(&format!("      - \"{}\"\n", image.tag));
        }
    }
    let file = stack.dir.path().join("skopeo-sync.yaml");
    std::fs::write(&file, yaml)?;
    let started = Instant::now();
    let out = std::process::Command::new("skopeo")
        .args(["sync", "--all", "--src", "yaml", "--dest", "docker"])
        .args(["--dest-tls-verify=false"])
        .arg(&file)
        .arg(dst.host())
        .output()
        .context("cannot run skopeo (is it installed?)")?;
    let wall_s = started.elapsed().as_secs_f64();
    if !out.status.success() {
        eprintln!(
            "skopeo sync failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(Compare {
        tool: "skopeo".into(),
        wall_s,
        exit_code: out.status.code().unwrap_or(-1),
        ratio: ours.wall_s / wall_s.max(1e-9),
    })
}
