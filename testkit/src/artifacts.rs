//! Supply-chain artifacts as OCI 1.1 referrers, shaped as the tools that make them push them:
//! a manifest with `artifactType`, the empty config, one payload layer and a `subject` naming
//! the image it is about (cosign's signatures and attestations since v3, Notation's
//! signatures, SBOM attachments). On a registry without the referrers API the pusher also lists
//! it in the subject's tag-schema index (`sha256-<hex>`), as cosign and oras do.

use crate::seed::{noise, sha256, Pushed, Seeder, OCI_INDEX, OCI_MANIFEST};
use serde_json::{json, Value};

/// cosign's signature artifact type.
pub const COSIGN_SIGNATURE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
/// An in-toto attestation in a Sigstore bundle, as cosign v3 stores attestations.
pub const SIGSTORE_BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// An SPDX SBOM.
pub const SPDX_SBOM: &str = "application/spdx+json";
/// The OCI empty config's media type.
pub const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";

/// Whether the pusher also lists a referrer in its subject's tag-schema index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// The registry serves the referrers API: pushing the manifest is all.
    Api,
    /// The registry has none: the pusher keeps the `sha256-<hex>` index.
    TagSchema,
}

/// An image with a signature, an SBOM and a signature on the SBOM (a referrer of a referrer).
#[derive(Debug, Clone)]
pub struct Signed {
    /// The image (`repo:tag`).
    pub image: Pushed,
    /// Its cosign signature.
    pub signature: Pushed,
    /// Its SPDX SBOM.
    pub sbom: Pushed,
    /// The SBOM's Sigstore bundle.
    pub sbom_signature: Pushed,
}

/// The digests of `pushed`, sorted (as listings are compared).
pub fn sorted_digests(pushed: &[&Pushed]) -> Vec<String> {
    let mut d: Vec<String> = pushed.iter().map(|p| p.digest.clone()).collect();
    d.sort();
    d
}

impl Seeder {
    /// Pushes `repo:tag`, a one-layer image of noise from `seed`, with a signature, an SBOM and
    /// a signature on the SBOM (seeds `seed + 1` to `seed + 3`), listed per `listing`.
    pub async fn signed_image(
        &self,
        repo: &str,
        tag: &str,
        seed: u64,
        listing: Listing,
    ) -> anyhow::Result<Signed> {
        let image = self
            .image(
                repo,
                Some(tag),
                vec![noise(seed, 3000)],
                &[],
                ("linux", "amd64"),
            )
            .await?;
        let signature = self
            .referrer(repo, &image, COSIGN_SIGNATURE, seed + 1, listing)
            .await?;
        let sbom = self
            .referrer(repo, &image, SPDX_SBOM, seed + 2, listing)
            .await?;
        let sbom_signature = self
            .referrer(repo, &sbom, SIGSTORE_BUNDLE, seed + 3, listing)
            .await?;
        Ok(Signed {
            image,
            signature,
            sbom,
            sbom_signature,
        })
    }

    /// The digests the tag-schema index of `subject` lists, sorted (none without the tag).
    pub async fn schema_digests(&self, repo: &str, subject: &str) -> anyhow::Result<Vec<String>> {
        let mut d = Vec::new();
        for e in self.schema_index(repo, subject).await? {
            let digest = e["digest"].as_str();
            d.push(
                digest
                    .ok_or_else(|| anyhow::anyhow!("an index entry without a digest: {e}"))?
                    .to_string(),
            );
        }
        d.sort();
        Ok(d)
    }

    /// Pushes a referrer of `subject` in `repo`: `artifact_type`, a payload layer of noise
    /// from `seed`, an annotation naming the seed; listed per `listing`.
    pub async fn referrer(
        &self,
        repo: &str,
        subject: &Pushed,
        artifact_type: &str,
        seed: u64,
        listing: Listing,
    ) -> anyhow::Result<Pushed> {
        let empty = self.blob(repo, b"{}".to_vec()).await?;
        let payload = noise(seed, 400);
        let len = payload.len();
        let layer = self.blob(repo, payload).await?;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": EMPTY_CONFIG, "digest": empty, "size": 2},
            "layers": [{"mediaType": artifact_type, "digest": layer, "size": len}],
            "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
            "annotations": {"org.example.seed": seed.to_string()},
        }))?;
        let digest = sha256(&manifest);
        let pushed = self.manifest(repo, &digest, OCI_MANIFEST, manifest).await?;
        if listing == Listing::TagSchema {
            let descriptor = json!({
                "mediaType": OCI_MANIFEST, "digest": pushed.digest, "size": pushed.size,
                "artifactType": artifact_type, "annotations": {"org.example.seed": seed.to_string()},
            });
            self.add_to_schema_index(repo, &subject.digest, descriptor)
                .await?;
        }
        Ok(pushed)
    }

    /// The descriptors the tag-schema index of `subject` lists (none without the tag).
    pub async fn schema_index(&self, repo: &str, subject: &str) -> anyhow::Result<Vec<Value>> {
        let tag = subject.replacen(':', "-", 1);
        let resp = self
            .req(
                reqwest::Method::GET,
                &format!("{}/v2/{repo}/manifests/{tag}", self.base),
            )
            .header("accept", OCI_INDEX)
            .send()
            .await?;
        if resp.status().as_u16() == 404 {
            return Ok(Vec::new());
        }
        anyhow::ensure!(resp.status().is_success(), "GET {tag}: {}", resp.status());
        let index: Value = serde_json::from_slice(&resp.bytes().await?)?;
        Ok(index["manifests"].as_array().cloned().unwrap_or_default())
    }

    async fn add_to_schema_index(
        &self,
        repo: &str,
        subject: &str,
        descriptor: Value,
    ) -> anyhow::Result<()> {
        let mut listed = self.schema_index(repo, subject).await?;
        listed.push(descriptor);
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": listed,
        }))?;
        self.manifest(repo, &subject.replacen(':', "-", 1), OCI_INDEX, index)
            .await?;
        Ok(())
    }
}
