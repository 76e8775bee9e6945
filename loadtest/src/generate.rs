//! A synthetic fleet pushed into a source registry: `repos` × `tags_per_repo` images with a
//! spread of layer counts and sizes (many small images, a few large), a fraction sharing base
//! layers, some multi-arch indexes — the same bytes and digests for the same seed.

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use ecr_sync_testkit::seed::{self, Pushed, Seeder};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::task::JoinSet;

/// Shared base layers an image may be built on: few, so that many repositories hold the same
/// blob (what cross-repository mounts and the "each digest uploaded once" rule are about).
const SHARED_BASES: usize = 3;

/// Architectures of a multi-arch tag's children (all `linux`), in index order. A single-arch
/// image is the first of them.
const PLATFORMS: [&str; 2] = ["amd64", "arm64"];

/// What to generate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetSpec {
    /// Repository names are `{prefix}/app{i}`.
    pub prefix: String,
    /// Repositories.
    pub repos: usize,
    /// Tags per repository (`v0`, `v1`, …).
    pub tags_per_repo: usize,
    /// Everything follows from this seed.
    pub seed: u64,
    /// Own layers per image, at least and at most.
    pub layers: (usize, usize),
    /// Size of a small layer in bytes, at least and at most.
    pub small_bytes: (u64, u64),
    /// Share of images with one large layer.
    pub large_fraction: f64,
    /// Size of a large layer in bytes.
    pub large_bytes: u64,
    /// Share of images built on a shared base layer (one of a few, pushed once per repo).
    pub shared_base_fraction: f64,
    /// Share of tags that are two-platform OCI indexes.
    pub multi_arch_fraction: f64,
    /// Pushes in flight.
    pub parallelism: usize,
}

impl Default for FleetSpec {
    fn default() -> Self {
        FleetSpec {
            prefix: "load".into(),
            repos: 10,
            tags_per_repo: 30,
            seed: 1,
            layers: (1, 3),
            small_bytes: (256, 4096),
            large_fraction: 0.0,
            large_bytes: 8 << 20,
            shared_base_fraction: 0.5,
            multi_arch_fraction: 0.1,
            parallelism: 16,
        }
    }
}

/// One tag pushed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// Repository.
    pub repo: String,
    /// Tag.
    pub tag: String,
    /// Manifest (or index) digest.
    pub digest: String,
}

/// What was pushed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Generated {
    /// Every tag, in repository and tag order.
    pub images: Vec<Image>,
    /// Bytes of distinct blobs (layers and configs) per repository, summed: what a destination
    /// must receive at least.
    pub unique_blob_bytes: u64,
    /// Distinct blobs per repository, summed.
    pub blobs: u64,
    /// Seconds the pushes took.
    pub elapsed_s: f64,
}

impl Generated {
    /// The repositories, in order.
    pub fn repos(&self) -> Vec<String> {
        let mut repos: Vec<String> = self.images.iter().map(|i| i.repo.clone()).collect();
        repos.dedup();
        repos
    }
}

/// Pushes the fleet `spec` describes into the registry at `registry_url`
/// (`http://127.0.0.1:PORT`).
///
/// Everything pushed is decided first, in one pass of a PRNG seeded with `spec.seed`; the pushes
/// then run `spec.parallelism` at a time, in any order, without changing a byte. Shared base
/// layers go into each repository that uses them once, before its images.
pub async fn generate(registry_url: &str, spec: &FleetSpec) -> anyhow::Result<Generated> {
    generate_with(
        Seeder::new(reqwest::Client::new(), registry_url, None),
        spec,
    )
    .await
}

/// The repositories the fleet `spec` describes: `{prefix}/app{i}`.
pub fn repo_names(spec: &FleetSpec) -> Vec<String> {
    (0..spec.repos)
        .map(|i| repo_name(&spec.prefix, i))
        .collect()
}

fn repo_name(prefix: &str, index: usize) -> String {
    format!("{prefix}/app{index}")
}

/// [`generate`] through `seeder` (a registry with credentials, such as ECR).
pub async fn generate_with(seeder: Seeder, spec: &FleetSpec) -> anyhow::Result<Generated> {
    check(spec)?;
    let fleet = plan(spec);
    let seeder = Arc::new(seeder);
    let bases: Arc<Vec<SharedBase>> = Arc::new(
        fleet
            .bases
            .iter()
            .map(|l| SharedBase::new(seed::noise(l.seed, l.size as usize)))
            .collect(),
    );
    let started = Instant::now();

    // A registry links a blob into one repository only, so a shared base is pushed into every
    // repository whose images use it — once per repository, not once per image.
    let base_pushes: BTreeSet<(String, usize)> = fleet
        .tags
        .iter()
        .filter_map(|t| t.base.map(|b| (t.repo.clone(), b)))
        .collect();
    bounded(base_pushes, spec.parallelism, |(repo, b)| {
        let (seeder, bases) = (seeder.clone(), bases.clone());
        async move {
            seeder
                .blob(&repo, bases[b].bytes.clone())
                .await
                .with_context(|| format!("pushing shared base layer {b} to {repo}"))
        }
    })
    .await?;

    let mut pushed = bounded(fleet.tags, spec.parallelism, |tag| {
        let (seeder, bases) = (seeder.clone(), bases.clone());
        async move {
            let result = push_tag(&seeder, &tag, &bases)
                .await
                .with_context(|| format!("pushing {}:{}", tag.repo, tag.tag));
            result.map(|(image, blobs)| ((tag.repo_index, tag.tag_index), image, blobs))
        }
    })
    .await?;
    let elapsed_s = started.elapsed().as_secs_f64();

    pushed.sort_by_key(|(order, _, _)| *order);
    let mut seen: HashSet<(String, String)> = HashSet::new();
    let mut generated = Generated {
        elapsed_s,
        ..Generated::default()
    };
    for (_, image, blobs) in pushed {
        for (digest, size) in blobs {
            if seen.insert((image.repo.clone(), digest)) {
                generated.blobs += 1;
                generated.unique_blob_bytes += size;
            }
        }
        generated.images.push(image);
    }
    Ok(generated)
}

/// Rejects specs that cannot be generated, naming the field.
fn check(spec: &FleetSpec) -> anyhow::Result<()> {
    anyhow::ensure!(spec.parallelism > 0, "parallelism must be at least 1");
    anyhow::ensure!(
        spec.layers.0 <= spec.layers.1,
        "layers: {:?} is not a range",
        spec.layers
    );
    anyhow::ensure!(
        spec.small_bytes.0 <= spec.small_bytes.1,
        "small_bytes: {:?} is not a range",
        spec.small_bytes
    );
    for (name, share) in [
        ("large_fraction", spec.large_fraction),
        ("shared_base_fraction", spec.shared_base_fraction),
        ("multi_arch_fraction", spec.multi_arch_fraction),
    ] {
        anyhow::ensure!(
            (0.0..=1.0).contains(&share),
            "{name}: {share} is not between 0 and 1"
        );
    }
    Ok(())
}

/// One layer: `noise(seed, size)` for a small one, streamed by `Seeder::big_blob` for a large.
#[derive(Debug, Clone, Copy)]
struct LayerPlan {
    seed: u64,
    size: u64,
}

/// One tag to push.
#[derive(Debug, Clone)]
struct TagPlan {
    repo_index: usize,
    tag_index: usize,
    repo: String,
    tag: String,
    /// A two-platform OCI index rather than a single image.
    index: bool,
    /// Which shared base layer sits under every child, if any.
    base: Option<usize>,
    /// The large layer, on the first child only (an index still counts as one image).
    large: Option<LayerPlan>,
    /// Own small layers per child, paired with [`PLATFORMS`] by position.
    children: Vec<Vec<LayerPlan>>,
}

/// The whole fleet, decided before anything is pushed.
#[derive(Debug, Clone)]
struct FleetPlan {
    bases: Vec<LayerPlan>,
    /// In repository, then tag order.
    tags: Vec<TagPlan>,
}

/// Draws the fleet from one PRNG seeded with `spec.seed`, in a fixed order (bases, which tags get
/// which feature, then tag by tag), so the same spec always gives the same bytes.
fn plan(spec: &FleetSpec) -> FleetPlan {
    let mut rng = fastrand::Rng::with_seed(spec.seed);
    let small = |rng: &mut fastrand::Rng| LayerPlan {
        seed: rng.u64(..),
        size: rng.u64(spec.small_bytes.0..=spec.small_bytes.1),
    };
    let bases = (0..SHARED_BASES).map(|_| small(&mut rng)).collect();
    let total = spec.repos * spec.tags_per_repo;
    let multi_arch = chosen(&mut rng, total, spec.multi_arch_fraction);
    let large = chosen(&mut rng, total, spec.large_fraction);
    let based = chosen(&mut rng, total, spec.shared_base_fraction);
    let mut tags = Vec::with_capacity(total);
    for repo_index in 0..spec.repos {
        for tag_index in 0..spec.tags_per_repo {
            let n = repo_index * spec.tags_per_repo + tag_index;
            let platforms = if multi_arch[n] { PLATFORMS.len() } else { 1 };
            let base = based[n].then(|| rng.usize(..SHARED_BASES));
            let large = large[n].then(|| LayerPlan {
                seed: rng.u64(..),
                size: spec.large_bytes,
            });
            let children = (0..platforms)
                .map(|_| {
                    let count = rng.usize(spec.layers.0..=spec.layers.1);
                    (0..count).map(|_| small(&mut rng)).collect()
                })
                .collect();
            tags.push(TagPlan {
                repo_index,
                tag_index,
                repo: repo_name(&spec.prefix, repo_index),
                tag: format!("v{tag_index}"),
                index: multi_arch[n],
                base,
                large,
                children,
            });
        }
    }
    FleetPlan { bases, tags }
}

/// Exactly `round(share × total)` of `total` items, picked by a seeded shuffle: a share of 0.25
/// over 12 tags is 3 tags, not "about 3".
fn chosen(rng: &mut fastrand::Rng, total: usize, share: f64) -> Vec<bool> {
    let count = ((share * total as f64).round() as usize).min(total);
    let mut order: Vec<usize> = (0..total).collect();
    rng.shuffle(&mut order);
    let mut picked = vec![false; total];
    for &i in &order[..count] {
        picked[i] = true;
    }
    picked
}

/// A shared base layer's bytes and digest.
struct SharedBase {
    bytes: Vec<u8>,
    digest: String,
}

impl SharedBase {
    fn new(bytes: Vec<u8>) -> SharedBase {
        SharedBase {
            digest: seed::sha256(&bytes),
            bytes,
        }
    }
}

/// Pushes one tag (its shared base is already in the repository). Returns the image and the
/// blobs (digest, size) its manifests reference: configs and layers, children's included.
async fn push_tag(
    seeder: &Seeder,
    tag: &TagPlan,
    bases: &[SharedBase],
) -> anyhow::Result<(Image, Vec<(String, u64)>)> {
    let repo = tag.repo.as_str();
    let base: Option<(String, u64)> = tag.base.map(|b| {
        let base = &bases[b];
        (base.digest.clone(), base.bytes.len() as u64)
    });
    let large = match tag.large {
        Some(l) => Some((
            seeder
                .big_blob(repo, l.seed, l.size)
                .await
                .context("large layer")?,
            l.size,
        )),
        None => None,
    };
    let mut children: Vec<Pushed> = Vec::with_capacity(tag.children.len());
    for (i, (layers, arch)) in tag.children.iter().zip(PLATFORMS).enumerate() {
        let mut pushed_layers: Vec<(String, u64)> = base.iter().cloned().collect();
        if i == 0 {
            pushed_layers.extend(large.clone());
        }
        let own = layers
            .iter()
            .map(|l| seed::noise(l.seed, l.size as usize))
            .collect();
        // An index's children are pushed by digest only; the tag goes on the index.
        let reference = (!tag.index).then_some(tag.tag.as_str());
        let child = seeder
            .image(repo, reference, own, &pushed_layers, ("linux", arch))
            .await
            .with_context(|| format!("linux/{arch} image"))?;
        children.push(child);
    }
    let mut blobs = Vec::new();
    for child in &children {
        blobs.extend(referenced_blobs(&child.bytes)?);
    }
    let digest = if tag.index {
        seeder
            .manifest(repo, &tag.tag, seed::OCI_INDEX, index_json(&children)?)
            .await
            .context("index")?
            .digest
    } else {
        children[0].digest.clone()
    };
    let image = Image {
        repo: tag.repo.clone(),
        tag: tag.tag.clone(),
        digest,
    };
    Ok((image, blobs))
}

/// A two-platform OCI index over `children` (in [`PLATFORMS`] order).
fn index_json(children: &[Pushed]) -> anyhow::Result<Vec<u8>> {
    let manifests: Vec<Value> = children
        .iter()
        .zip(PLATFORMS)
        .map(|(c, arch)| {
            json!({
                "mediaType": c.media_type, "digest": c.digest, "size": c.size,
                "platform": {"os": "linux", "architecture": arch}
            })
        })
        .collect();
    Ok(serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": seed::OCI_INDEX,
        "manifests": manifests
    }))?)
}

/// The config and layers (digest, size) an image manifest references.
fn referenced_blobs(manifest: &[u8]) -> anyhow::Result<Vec<(String, u64)>> {
    let manifest: Value = serde_json::from_slice(manifest).context("reading our own manifest")?;
    let config = std::iter::once(&manifest["config"]);
    let layers = manifest["layers"].as_array().into_iter().flatten();
    config
        .chain(layers)
        .map(|d| match (d["digest"].as_str(), d["size"].as_u64()) {
            (Some(digest), Some(size)) => Ok((digest.to_string(), size)),
            _ => anyhow::bail!("descriptor without digest or size: {d}"),
        })
        .collect()
}

/// Runs `task` over `items`, at most `limit` at a time on the runtime's threads, and returns
/// the results in completion order. The first error stops the rest (dropping the set aborts
/// the tasks still running).
async fn bounded<T, R, F, Fut>(
    items: impl IntoIterator<Item = T>,
    limit: usize,
    task: F,
) -> anyhow::Result<Vec<R>>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = anyhow::Result<R>> + Send + 'static,
    R: Send + 'static,
{
    let mut running = JoinSet::new();
    let mut done = Vec::new();
    for item in items {
        if running.len() >= limit {
            if let Some(result) = running.join_next().await {
                done.push(result??);
            }
        }
        running.spawn(task(item));
    }
    while let Some(result) = running.join_next().await {
        done.push(result??);
    }
    Ok(done)
}
