//! Copying some platforms of a multi-arch image: the index is rewritten to name only the
//! children of the wanted platforms (and what belongs to them), so the destination never holds
//! an index naming manifests it does not have — ECR refuses such an index
//! (`ReferencedImagesNotFoundException`), and a client pulling a left-out platform would get
//! an error instead of "no such platform".
//!
//! The rewrite is a pure function of the source index's bytes and the platform list: the same
//! source always gives the same destination digest, which is what planning compares with the
//! destination tag, so a warm run stays free of work.

use super::CopyError;
use crate::config::Platform;
use crate::digest::Digest;
use crate::manifest::is_index;
use crate::registry::Manifest;
use serde_json::Value;

/// BuildKit's annotation naming what an index entry is (`attestation-manifest`).
const REFERENCE_TYPE: &str = "vnd.docker.reference.type";
/// BuildKit's annotation naming the image an attestation entry is about.
const REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";

/// The manifest to push for `source` when only `platforms` are wanted: `source` itself when
/// it is not an index or every entry is kept (its digest unchanged), else an index of the same
/// media type and fields naming only the kept entries: those of a wanted platform, BuildKit
/// attestations of kept images, and entries without a platform. An index with none of the
/// platforms is an error naming what it has.
pub fn select(source: &Manifest, platforms: &[Platform]) -> Result<Manifest, CopyError> {
    if !is_index(&source.media_type) {
        return Ok(source.clone());
    }
    let unreadable = |why: String| CopyError::Platforms(format!("{}: {why}", source.digest));
    let mut index: Value = serde_json::from_slice(&source.bytes)
        .map_err(|e| unreadable(format!("the index is not JSON: {e}")))?;
    let entries = index["manifests"]
        .as_array()
        .ok_or_else(|| unreadable("the index has no manifests list".into()))?
        .clone();
    let platform_of = |e: &Value| {
        let p = e.get("platform")?;
        Some((
            p["os"].as_str().unwrap_or_default().to_string(),
            p["architecture"].as_str().unwrap_or_default().to_string(),
            p["variant"].as_str().map(str::to_string),
        ))
    };
    let is_attestation = |e: &Value| e["annotations"][REFERENCE_TYPE] == "attestation-manifest";
    let wanted = |e: &Value| match platform_of(e) {
        Some((os, arch, variant)) => platforms
            .iter()
            .any(|p| p.matches(&os, &arch, variant.as_deref())),
        None => false,
    };
    let images: Vec<&Value> = entries
        .iter()
        .filter(|e| !is_attestation(e) && platform_of(e).is_some())
        .collect();
    let kept_images: Vec<&str> = images
        .iter()
        .filter(|e| wanted(e))
        .filter_map(|e| e["digest"].as_str())
        .collect();
    if kept_images.is_empty() && !images.is_empty() {
        let has: Vec<String> = images
            .iter()
            .filter_map(|e| platform_of(e))
            .map(|(os, arch, variant)| match variant {
                Some(v) => format!("{os}/{arch}/{v}"),
                None => format!("{os}/{arch}"),
            })
            .collect();
        let want: Vec<String> = platforms.iter().map(ToString::to_string).collect();
        return Err(CopyError::Platforms(format!(
            "the index has none of the platforms {} (it has {})",
            want.join(", "),
            has.join(", ")
        )));
    }
    let kept: Vec<Value> = entries
        .iter()
        .filter(|e| {
            if is_attestation(e) {
                e["annotations"][REFERENCE_DIGEST]
                    .as_str()
                    .is_some_and(|d| kept_images.contains(&d))
            } else {
                platform_of(e).is_none() || wanted(e)
            }
        })
        .cloned()
        .collect();
    if kept.len() == entries.len() {
        return Ok(source.clone());
    }
    index["manifests"] = Value::Array(kept);
    let bytes = bytes::Bytes::from(serde_json::to_vec(&index).expect("JSON values serialise"));
    Ok(Manifest {
        media_type: source.media_type.clone(),
        digest: Digest::of(&bytes),
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
    use serde_json::json;

    fn d(n: u8) -> String {
        Digest::of(&[n]).to_string()
    }

    fn entry(n: u8, os: &str, arch: &str, variant: Option<&str>) -> Value {
        let mut platform = json!({"os": os, "architecture": arch});
        if let Some(v) = variant {
            platform["variant"] = v.into();
        }
        json!({"mediaType": OCI_MANIFEST, "digest": d(n), "size": 10, "platform": platform})
    }

    fn attestation(n: u8, of: u8) -> Value {
        json!({"mediaType": OCI_MANIFEST, "digest": d(n), "size": 10,
               "platform": {"os": "unknown", "architecture": "unknown"},
               "annotations": {REFERENCE_TYPE: "attestation-manifest", REFERENCE_DIGEST: d(of)}})
    }

    fn index(media_type: &str, entries: Vec<Value>) -> Manifest {
        let bytes = bytes::Bytes::from(
            serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": media_type,
                "manifests": entries, "annotations": {"org.opencontainers.image.version": "1"}}))
            .unwrap(),
        );
        Manifest {
            media_type: media_type.into(),
            digest: Digest::of(&bytes),
            bytes,
        }
    }

    fn platforms(list: &[&str]) -> Vec<Platform> {
        list.iter()
            .map(|s| {
                let mut it = s.split('/');
                Platform {
                    os: it.next().unwrap().into(),
                    architecture: it.next().unwrap().into(),
                    variant: it.next().map(Into::into),
                }
            })
            .collect()
    }

    fn digests(m: &Manifest) -> Vec<String> {
        let v: Value = serde_json::from_slice(&m.bytes).unwrap();
        v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["digest"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn kept_platforms_keep_their_attestations_and_the_rest_is_left_out() {
        let src = index(
            OCI_INDEX,
            vec![
                entry(1, "linux", "amd64", None),
                entry(2, "linux", "arm64", Some("v8")),
                entry(3, "linux", "arm", Some("v7")),
                attestation(11, 1),
                attestation(12, 2),
            ],
        );
        let out = select(&src, &platforms(&["linux/amd64", "linux/arm/v7"])).unwrap();
        assert_eq!(digests(&out), [d(1), d(3), d(11)]);
        assert_ne!(out.digest, src.digest);
        assert_eq!(out.digest, Digest::of(&out.bytes));
        assert_eq!(out.media_type, OCI_INDEX);
        let body: Value = serde_json::from_slice(&out.bytes).unwrap();
        assert_eq!(body["annotations"]["org.opencontainers.image.version"], "1");
        // The same source and list always give the same index (warm runs compare its digest).
        let again = select(&src, &platforms(&["linux/amd64", "linux/arm/v7"])).unwrap();
        assert_eq!(again.bytes, out.bytes);
    }

    #[test]
    fn nothing_left_out_keeps_the_source_bytes_and_other_manifests_pass_through() {
        let src = index(
            DOCKER_MANIFEST_LIST,
            vec![
                entry(1, "linux", "amd64", None),
                entry(2, "linux", "arm64", None),
            ],
        );
        let out = select(&src, &platforms(&["linux/amd64", "linux/arm64/v8"])).unwrap();
        assert_eq!(
            (out.digest, out.bytes),
            (src.digest.clone(), src.bytes.clone())
        );
        let image = Manifest {
            media_type: OCI_MANIFEST.into(),
            bytes: bytes::Bytes::from_static(b"{}"),
            digest: Digest::of(b"{}"),
        };
        assert_eq!(
            select(&image, &platforms(&["linux/s390x"])).unwrap().digest,
            image.digest
        );
    }

    #[test]
    fn an_index_without_any_wanted_platform_says_what_it_has() {
        let src = index(
            OCI_INDEX,
            vec![entry(1, "linux", "arm64", None), attestation(11, 1)],
        );
        let err = select(&src, &platforms(&["linux/amd64", "windows/amd64"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the index has none of the platforms linux/amd64, windows/amd64 (it has linux/arm64)"
        );
        assert_eq!(err.class(), crate::vocab::ErrorClass::Unsupported);
    }
}
