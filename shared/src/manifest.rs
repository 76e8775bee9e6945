//! Manifest media types and the little of a manifest's JSON the copy engine needs: which blobs an
//! image references and which child manifests an index references.
//!
//! Manifests are always pushed as the exact bytes read from the source, so parsing here is
//! read-only and tolerant of fields we do not know.

use crate::digest::Digest;
use bytes::Bytes;
use serde::Deserialize;

/// A manifest as stored: exact bytes, media type, digest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The media type.
    pub media_type: String,
    /// The exact bytes.
    pub bytes: Bytes,
    /// sha256 of the bytes.
    pub digest: Digest,
}

/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list (multi-arch).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index (multi-arch).
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The `Accept` header for manifest requests: every type we can copy, indexes first so a registry
/// never down-converts a multi-arch image to one platform.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// A reference to content: a blob or a child manifest.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The referenced content's media type (may be empty in old manifests).
    #[serde(default)]
    pub media_type: String,
    /// The referenced content's digest.
    #[serde(deserialize_with = "de_digest")]
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Download locations for non-distributable ("foreign") layers; such blobs are not copied.
    #[serde(default)]
    pub urls: Vec<String>,
}

impl Descriptor {
    /// Whether the blob is a non-distributable layer that registries need not hold.
    pub fn is_foreign(&self) -> bool {
        self.media_type.contains("foreign") || self.media_type.contains("nondistributable")
    }
}

fn de_digest<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
    let s = String::deserialize(d)?;
    Digest::parse(&s).map_err(serde::de::Error::custom)
}

/// What a manifest references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    /// A multi-arch index: child manifests, copied before the index itself.
    Index {
        /// The child manifests.
        children: Vec<Descriptor>,
    },
    /// A single image: its config blob and layers.
    Image {
        /// The blobs to copy: config first, then layers in order (foreign layers left out).
        blobs: Vec<Descriptor>,
    },
}

/// A manifest that cannot be copied.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A media type we do not copy (e.g. Docker schema 1).
    #[error("unsupported manifest media type {0:?}")]
    Unsupported(String),
    /// The JSON does not have the shape its media type promises.
    #[error("malformed {media_type} manifest: {reason}")]
    Malformed {
        /// The declared media type.
        media_type: String,
        /// serde's account of what was wrong.
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// The media type to use for a manifest: the registry's `Content-Type` when it is one we know,
/// else the `mediaType` field of the body, else inferred from its shape (OCI allows omitting it).
pub fn media_type_of(content_type: Option<&str>, bytes: &[u8]) -> String {
    let known = [
        DOCKER_MANIFEST,
        DOCKER_MANIFEST_LIST,
        OCI_MANIFEST,
        OCI_INDEX,
    ];
    if let Some(ct) = content_type {
        let ct = ct.split(';').next().unwrap_or("").trim();
        if known.contains(&ct) {
            return ct.to_string();
        }
    }
    match serde_json::from_slice::<Raw>(bytes) {
        Ok(Raw {
            media_type: Some(mt),
            ..
        }) => mt,
        Ok(Raw {
            manifests: Some(_), ..
        }) => OCI_INDEX.to_string(),
        Ok(_) => OCI_MANIFEST.to_string(),
        Err(_) => content_type.unwrap_or("").to_string(),
    }
}

/// Whether a media type is a multi-arch index.
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// Parses what a manifest of `media_type` references.
pub fn contents(media_type: &str, bytes: &[u8]) -> Result<Contents, ManifestError> {
    let malformed = |reason: String| ManifestError::Malformed {
        media_type: media_type.to_string(),
        reason,
    };
    match media_type {
        OCI_INDEX | DOCKER_MANIFEST_LIST => {
            let raw: Raw = serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
            let children = raw
                .manifests
                .ok_or_else(|| malformed("missing \"manifests\"".into()))?;
            Ok(Contents::Index { children })
        }
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let raw: Raw = serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
            let config = raw
                .config
                .ok_or_else(|| malformed("missing \"config\"".into()))?;
            let mut blobs = vec![config];
            blobs.extend(
                raw.layers
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|l| !l.is_foreign()),
            );
            Ok(Contents::Image { blobs })
        }
        other => Err(ManifestError::Unsupported(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        Digest::of(&[n]).to_string()
    }

    #[test]
    fn image_lists_config_then_layers_without_foreign_ones() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
            "config":{{"mediaType":"c","digest":"{}","size":1}},
            "layers":[{{"mediaType":"l","digest":"{}","size":2}},
                      {{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{}","size":3,"urls":["https://x"]}}]}}"#,
            d(1),
            d(2),
            d(3)
        );
        let mt = media_type_of(None, body.as_bytes());
        assert_eq!(mt, DOCKER_MANIFEST);
        let Contents::Image { blobs } = contents(&mt, body.as_bytes()).unwrap() else {
            panic!()
        };
        let digests: Vec<String> = blobs.iter().map(|b| b.digest.to_string()).collect();
        assert_eq!(digests, vec![d(1), d(2)]);
    }

    #[test]
    fn index_without_media_type_is_inferred_and_children_listed() {
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":9}}]}}"#,
            d(4)
        );
        let mt = media_type_of(Some("application/octet-stream"), body.as_bytes());
        assert_eq!(mt, OCI_INDEX);
        let Contents::Index { children } = contents(&mt, body.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(children.len(), 1);
        assert!(is_index(&mt));
    }

    #[test]
    fn schema1_is_refused_with_its_media_type() {
        let err = contents(
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            b"{}",
        )
        .unwrap_err();
        assert!(err.to_string().contains("v1+prettyjws"));
    }
}
