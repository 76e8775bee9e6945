//! OCI 1.1 referrers on the wire: listing the manifests whose `subject` is a digest — through
//! the referrers API (`GET /v2/<name>/referrers/<digest>`) where the registry serves it, else
//! through the referrers tag schema (an index tagged `sha256-<hex>`, kept by the pushers) — and
//! pushing a referrer, learning from `OCI-Subject` whether the registry indexed it.

use super::{error, next_link, pull_scope, push_scope, ErrorKind, Registry, RegistryError};
use super::{Manifest, MANIFEST_PUT};
use crate::digest::Digest;
use crate::manifest::OCI_INDEX;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::Value;

/// One referrer: its descriptor as the registry listed it (media type, digest, size,
/// `artifactType`, annotations — kept whole, so a tag-schema index written from it says what
/// the source said).
#[derive(Debug, Clone, PartialEq)]
pub struct Referrer {
    /// The referrer manifest's digest.
    pub digest: Digest,
    /// Its `artifactType` (the config media type for manifests without one).
    pub artifact_type: Option<String>,
    /// The descriptor.
    pub descriptor: Value,
}

impl Referrer {
    /// The referrer `m` as a referrers index lists it (OCI 1.1): media type, digest, size,
    /// `artifactType` (else the config's media type) and every annotation of the manifest.
    pub fn of_manifest(m: &Manifest) -> Referrer {
        let body: Value = serde_json::from_slice(&m.bytes).unwrap_or_default();
        let artifact_type = body["artifactType"]
            .as_str()
            .or(body["config"]["mediaType"].as_str())
            .map(str::to_string);
        let mut descriptor = serde_json::json!({
            "mediaType": m.media_type, "digest": m.digest.as_str(), "size": m.bytes.len(),
        });
        if let Some(t) = &artifact_type {
            descriptor["artifactType"] = Value::from(t.as_str());
        }
        if let Some(a) = body["annotations"].as_object().filter(|a| !a.is_empty()) {
            descriptor["annotations"] = Value::Object(a.clone());
        }
        Referrer {
            digest: m.digest.clone(),
            artifact_type,
            descriptor,
        }
    }

    /// The referrer described by `descriptor`, an entry of a referrers index.
    fn from_descriptor(descriptor: Value) -> Result<Referrer, String> {
        let digest = descriptor["digest"]
            .as_str()
            .ok_or("a referrers index entry without a digest")?;
        let digest = Digest::parse(digest).map_err(|e| e.to_string())?;
        Ok(Referrer {
            digest,
            artifact_type: descriptor["artifactType"].as_str().map(str::to_string),
            descriptor,
        })
    }
}

/// Where a registry's referrers of a digest were found.
#[derive(Debug, Clone, PartialEq)]
pub enum Listing {
    /// The referrers API answered.
    Api(Vec<Referrer>),
    /// The registry has no referrers API; the tag-schema index (empty when the tag is absent).
    TagSchema(Vec<Referrer>),
}

impl Listing {
    /// The referrers, however found.
    pub fn referrers(&self) -> &[Referrer] {
        match self {
            Listing::Api(r) | Listing::TagSchema(r) => r,
        }
    }
}

/// The referrers tag schema's tag for `subject`: `sha256-<hex>`.
pub fn schema_tag(subject: &Digest) -> String {
    subject.as_str().replacen(':', "-", 1)
}

/// Whether `tag` is a referrers tag-schema tag (`sha256-` and 64 lowercase hex digits): the
/// pushers' index of a digest's referrers, not an image a user tagged.
pub fn is_schema_tag(tag: &str) -> bool {
    tag.strip_prefix("sha256-").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Whether an answer to a referrers API request means the registry has no such API.
fn api_absent(kind: &ErrorKind) -> bool {
    matches!(kind, ErrorKind::NotFound { .. })
        || matches!(kind, ErrorKind::Status { status, .. } if [400, 405, 406, 415, 501].contains(status))
}

/// The referrer descriptors of an OCI index's `manifests`.
fn entries(index: &[u8], what: &str) -> Result<Vec<Referrer>, String> {
    let index: Value =
        serde_json::from_slice(index).map_err(|e| format!("{what} is not JSON: {e}"))?;
    index["manifests"]
        .as_array()
        .map(|m| m.as_slice())
        .unwrap_or_default()
        .iter()
        .cloned()
        .map(Referrer::from_descriptor)
        .collect()
}

impl Registry {
    /// The referrers of `subject` in `repo`: from the referrers API, following `Link` pages;
    /// from the tag-schema index when the registry answers the API with 404 (it has none; the
    /// repository's next listings go to the tag schema at once). Remembered per repository,
    /// not per registry: a registry with the API answers 404 for a repository that does not
    /// exist, and that must not hide the referrers of the others.
    pub async fn referrers(&self, repo: &str, subject: &Digest) -> Result<Listing, RegistryError> {
        if self.no_referrers_api.lock().unwrap().contains(repo) {
            return self
                .schema_referrers(repo, subject)
                .await
                .map(Listing::TagSchema);
        }
        let op = "GET referrers";
        let mut url = self.url(&format!("/v2/{repo}/referrers/{subject}"));
        let mut found = Vec::new();
        loop {
            let Some(resp) = self.send_api(op, &url, repo).await? else {
                if found.is_empty() {
                    self.no_referrers_api
                        .lock()
                        .unwrap()
                        .insert(repo.to_string());
                    return self
                        .schema_referrers(repo, subject)
                        .await
                        .map(Listing::TagSchema);
                }
                // A later page vanished: the listing changed under us; what we have stands.
                return Ok(Listing::Api(found));
            };
            let next = next_link(resp.headers());
            let body = resp
                .bytes()
                .await
                .map_err(|e| error::transport(op, &url, e))?;
            found.extend(entries(&body, "the referrers index").map_err(|reason| {
                RegistryError {
                    op,
                    url: url.clone(),
                    kind: ErrorKind::Protocol(reason),
                }
            })?);
            match next {
                Some(link) => url = self.absolute(&link),
                None => return Ok(Listing::Api(found)),
            }
        }
    }

    /// Whether `repo` (which exists) is served by the referrers API: one listing, of a digest
    /// no image has, answers 200 (an empty index) where it is and 404 where it is not; the
    /// answer "no" is remembered, as [`Registry::referrers`] does.
    pub async fn has_referrers_api(&self, repo: &str) -> Result<bool, RegistryError> {
        if self.no_referrers_api.lock().unwrap().contains(repo) {
            return Ok(false);
        }
        let probe = Digest::of(b"");
        let url = self.url(&format!("/v2/{repo}/referrers/{probe}"));
        let answer = self.send_api("GET referrers", &url, repo).await?;
        if answer.is_none() {
            self.no_referrers_api
                .lock()
                .unwrap()
                .insert(repo.to_string());
        }
        Ok(answer.is_some())
    }

    /// A referrers API request: `None` when the answer says the registry has no such API —
    /// 404, as the spec has it, or the 400, 405, 406, 415 or 501 that registries predating it
    /// give an unknown route — so the caller falls back to the tag schema instead of failing
    /// the copy of an image over its referrers.
    async fn send_api(
        &self,
        op: &'static str,
        url: &str,
        repo: &str,
    ) -> Result<Option<reqwest::Response>, RegistryError> {
        let sent = self
            .send(op, url, &pull_scope(repo), |c| {
                c.get(url).header(ACCEPT, OCI_INDEX)
            })
            .await;
        match sent {
            Ok(r) => Ok(Some(r)),
            Err(e) if api_absent(&e.kind) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The referrers the tag-schema index of `subject` lists (none when the tag is absent).
    pub async fn schema_referrers(
        &self,
        repo: &str,
        subject: &Digest,
    ) -> Result<Vec<Referrer>, RegistryError> {
        let tag = schema_tag(subject);
        let Some(index) = self.get_manifest(repo, &tag).await? else {
            return Ok(Vec::new());
        };
        // Not an index, or the subject itself (some registries resolve `sha256-<hex>` as the
        // digest): no referrers listed, as the spec tells clients to assume.
        if index.media_type != OCI_INDEX || &index.digest == subject {
            return Ok(Vec::new());
        }
        entries(&index.bytes, "the referrers tag-schema index").map_err(|reason| RegistryError {
            op: "GET manifest",
            url: self.url(&format!("/v2/{repo}/manifests/{tag}")),
            kind: ErrorKind::Protocol(reason),
        })
    }

    /// Pushes the referrer manifest `m` (of `subject`) by digest; `true` when the registry
    /// answered `OCI-Subject: <subject>` (it indexed it: its referrers API lists it), `false`
    /// when the pusher must list it in the tag-schema index.
    pub async fn put_referrer(
        &self,
        repo: &str,
        subject: &Digest,
        m: &Manifest,
    ) -> Result<bool, RegistryError> {
        let url = self.url(&format!("/v2/{repo}/manifests/{}", m.digest));
        let resp = self
            .send(MANIFEST_PUT, &url, &push_scope(repo), |c| {
                c.put(&url)
                    .header(CONTENT_TYPE, m.media_type.as_str())
                    .body(m.bytes.clone())
            })
            .await?;
        let indexed = resp
            .headers()
            .get("oci-subject")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == subject.as_str());
        Ok(indexed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_without_the_api_are_told_by_404_or_an_unknown_route_answer() {
        let status = |status| ErrorKind::Status {
            status,
            code: None,
            message: None,
            retry_after: None,
        };
        let not_found = ErrorKind::NotFound {
            code: None,
            message: None,
        };
        assert!(api_absent(&not_found));
        for s in [400, 405, 406, 415, 501] {
            assert!(api_absent(&status(s)), "{s}");
        }
        for s in [429, 500, 502, 503] {
            assert!(!api_absent(&status(s)), "{s} is a failure, not an answer");
        }
        let denied = ErrorKind::Unauthorized {
            status: 403,
            code: None,
            message: None,
        };
        assert!(!api_absent(&denied));
    }

    #[test]
    fn the_schema_tag_replaces_the_algorithm_separator() {
        let d = Digest::of(b"x");
        let tag = schema_tag(&d);
        assert_eq!(tag, format!("sha256-{}", &d.as_str()["sha256:".len()..]));
        assert!(is_schema_tag(&tag));
        for other in [
            "latest".to_string(),
            format!("{tag}.sig"),
            tag.to_uppercase(),
            tag[..tag.len() - 1].to_string(),
            tag.replacen("sha256-", "sha512-", 1),
        ] {
            assert!(!is_schema_tag(&other), "{other}");
        }
    }

    #[test]
    fn a_referrer_is_listed_as_its_manifest_says() {
        let manifest = |body: serde_json::Value| {
            let bytes = bytes::Bytes::from(body.to_string());
            Manifest {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                digest: Digest::of(&bytes),
                bytes,
            }
        };
        let sig = manifest(serde_json::json!({
            "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json"},
            "annotations": {"a": "1", "b": "2"}
        }));
        let r = Referrer::of_manifest(&sig);
        assert_eq!(r.digest, sig.digest);
        assert_eq!(r.descriptor["size"], sig.bytes.len());
        assert_eq!(
            r.descriptor["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(
            r.descriptor["artifactType"],
            "application/vnd.dev.cosign.artifact.sig.v1+json"
        );
        assert_eq!(
            r.descriptor["annotations"],
            serde_json::json!({"a": "1", "b": "2"})
        );
        // Without artifactType, the config's media type (Notation signatures); no annotations.
        let notation = manifest(serde_json::json!({
            "config": {"mediaType": "application/vnd.cncf.notary.signature"}
        }));
        let r = Referrer::of_manifest(&notation);
        assert_eq!(
            r.artifact_type.as_deref(),
            Some("application/vnd.cncf.notary.signature")
        );
        assert!(r.descriptor.get("annotations").is_none());
    }

    #[test]
    fn index_entries_keep_their_whole_descriptor() {
        let d = Digest::of(b"sig");
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d.as_str(),
             "size": 3, "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
             "annotations": {"dev.sigstore.cosign/signature": "x"}}]});
        let got = entries(index.to_string().as_bytes(), "index").unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].digest, d);
        assert_eq!(
            got[0].artifact_type.as_deref(),
            Some("application/vnd.dev.cosign.artifact.sig.v1+json")
        );
        assert_eq!(
            got[0].descriptor["annotations"]["dev.sigstore.cosign/signature"],
            "x"
        );
        let empty = serde_json::json!({"schemaVersion": 2, "manifests": []});
        assert!(entries(empty.to_string().as_bytes(), "index")
            .unwrap()
            .is_empty());
        assert!(entries(b"[", "index").unwrap_err().contains("not JSON"));
        let bad = serde_json::json!({"manifests": [{"size": 1}]});
        assert!(entries(bad.to_string().as_bytes(), "index").is_err());
    }
}
