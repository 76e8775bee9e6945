//! Pushes synthetic images through the distribution API (POST + monolithic PUT, manifest PUT),
//! written independently of the engine so tests do not check the engine against itself.

use aws_lc_rs::digest;
use bytes::Bytes;
use serde_json::json;

/// Docker image manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// OCI index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// An `Accept` header for every manifest kind the seeder pushes (and distribution serves).
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// `sha256:<hex>` of bytes.
pub fn sha256(bytes: &[u8]) -> String {
    let d = digest::digest(&digest::SHA256, bytes);
    format!("sha256:{}", hex(d.as_ref()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Deterministic incompressible bytes (xorshift64*), `len` long, from `seed`.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    fill_noise(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1, &mut out);
    out
}

fn fill_noise(mut state: u64, buf: &mut [u8]) -> u64 {
    for chunk in buf.chunks_mut(8) {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let v = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    state
}

/// A pushed manifest.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// Its digest.
    pub digest: String,
    /// Its exact bytes.
    pub bytes: Vec<u8>,
    /// Its media type.
    pub media_type: String,
    /// Its size.
    pub size: u64,
}

/// Pushes to one registry.
pub struct Seeder {
    http: reqwest::Client,
    pub(crate) base: String,
    auth: Option<(String, String)>,
}

impl Seeder {
    /// A seeder for `base` (`http://127.0.0.1:PORT`) using `http`.
    pub fn new(http: reqwest::Client, base: &str, auth: Option<(String, String)>) -> Seeder {
        Seeder {
            http,
            base: base.trim_end_matches('/').to_string(),
            auth,
        }
    }

    pub(crate) fn req(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, url);
        match &self.auth {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    async fn start_upload(&self, repo: &str) -> anyhow::Result<String> {
        let resp = self
            .req(
                reqwest::Method::POST,
                &format!("{}/v2/{repo}/blobs/uploads/", self.base),
            )
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().as_u16() == 202,
            "POST upload: {}",
            resp.status()
        );
        let loc = resp.headers()["location"].to_str()?.to_string();
        Ok(if loc.starts_with("http") {
            loc
        } else {
            format!("{}{loc}", self.base)
        })
    }

    async fn finish_upload(
        &self,
        location: &str,
        digest: &str,
        body: reqwest::Body,
        len: u64,
    ) -> anyhow::Result<()> {
        let sep = if location.contains('?') { '&' } else { '?' };
        let resp = self
            .req(
                reqwest::Method::PUT,
                &format!("{location}{sep}digest={digest}"),
            )
            .header("content-type", "application/octet-stream")
            .header("content-length", len)
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().as_u16() == 201,
            "PUT blob: {} {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
        Ok(())
    }

    /// Pushes a blob; returns its digest.
    pub async fn blob(&self, repo: &str, bytes: Vec<u8>) -> anyhow::Result<String> {
        let digest = sha256(&bytes);
        let len = bytes.len() as u64;
        let loc = self.start_upload(repo).await?;
        self.finish_upload(&loc, &digest, bytes.into(), len).await?;
        Ok(digest)
    }

    /// Pushes a `size`-byte noise blob without holding it in memory (hashes it in a first pass,
    /// streams it in a second). Returns its digest.
    pub async fn big_blob(&self, repo: &str, seed: u64, size: u64) -> anyhow::Result<String> {
        const CHUNK: usize = 1 << 20;
        let mut ctx = digest::Context::new(&digest::SHA256);
        let mut buf = vec![0u8; CHUNK];
        let mut state = seed | 1;
        let mut left = size;
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            state = fill_noise(state, &mut buf[..n]);
            ctx.update(&buf[..n]);
            left -= n as u64;
        }
        let digest = format!("sha256:{}", hex(ctx.finish().as_ref()));
        let stream = futures_util::stream::unfold((seed | 1, size), |(state, left)| async move {
            if left == 0 {
                return None;
            }
            let n = left.min(CHUNK as u64) as usize;
            let mut buf = vec![0u8; n];
            let state = fill_noise(state, &mut buf);
            Some((
                Ok::<_, std::io::Error>(Bytes::from(buf)),
                (state, left - n as u64),
            ))
        });
        let loc = self.start_upload(repo).await?;
        self.finish_upload(&loc, &digest, reqwest::Body::wrap_stream(stream), size)
            .await?;
        Ok(digest)
    }

    /// Pushes manifest bytes under `reference`.
    pub async fn manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: Vec<u8>,
    ) -> anyhow::Result<Pushed> {
        let digest = sha256(&bytes);
        let size = bytes.len() as u64;
        let resp = self
            .req(
                reqwest::Method::PUT,
                &format!("{}/v2/{repo}/manifests/{reference}", self.base),
            )
            .header("content-type", media_type)
            .body(bytes.clone())
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().as_u16() == 201,
            "PUT manifest: {} {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
        Ok(Pushed {
            digest,
            bytes,
            media_type: media_type.to_string(),
            size,
        })
    }

    /// Pushes a single-platform Docker image with the given layers (already-pushed layer digests
    /// and sizes may be passed in `shared`), tagged `tag` (or only by digest when `tag` is None).
    pub async fn image(
        &self,
        repo: &str,
        tag: Option<&str>,
        layers: Vec<Vec<u8>>,
        shared: &[(String, u64)],
        platform: (&str, &str),
    ) -> anyhow::Result<Pushed> {
        let mut descs: Vec<(String, u64)> = shared.to_vec();
        for l in layers {
            let len = l.len() as u64;
            descs.push((self.blob(repo, l).await?, len));
        }
        let config = serde_json::to_vec(&json!({
            "architecture": platform.1, "os": platform.0,
            "rootfs": {"type": "layers", "diff_ids": descs.iter().map(|d| d.0.clone()).collect::<Vec<_>>()},
            "config": {}
        }))?;
        let config_len = config.len() as u64;
        let config_digest = self.blob(repo, config).await?;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config_digest, "size": config_len},
            "layers": descs.iter().map(|(d, s)| json!({"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": d, "size": s})).collect::<Vec<_>>()
        }))?;
        let digest = sha256(&manifest);
        self.manifest(repo, tag.unwrap_or(&digest), DOCKER_MANIFEST, manifest)
            .await
    }

    /// Pushes a two-platform OCI index (linux/amd64, linux/arm64), each child with one layer.
    pub async fn multi_arch(
        &self,
        repo: &str,
        tag: &str,
        seed: u64,
    ) -> anyhow::Result<(Pushed, Vec<Pushed>)> {
        let mut children = Vec::new();
        for (i, arch) in ["amd64", "arm64"].iter().enumerate() {
            children.push(
                self.image(
                    repo,
                    None,
                    vec![noise(seed * 10 + i as u64, 2048)],
                    &[],
                    ("linux", arch),
                )
                .await?,
            );
        }
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": children.iter().zip(["amd64", "arm64"]).map(|(c, arch)| json!({
                "mediaType": c.media_type, "digest": c.digest, "size": c.size,
                "platform": {"os": "linux", "architecture": arch}
            })).collect::<Vec<_>>()
        }))?;
        let pushed = self.manifest(repo, tag, OCI_INDEX, index).await?;
        Ok((pushed, children))
    }
}
