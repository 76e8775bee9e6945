//! Manifest PUTs (tag immutability, storage, moto's `PutImage`, the lost-response fault) and
//! the referrers API served from the index they feed.

use super::control_plane::ControlPlaneError;
use super::proxy::{control_plane_failure, full, query_pairs, registry_error, Body, State};
use super::rules::TagMutability;
use super::EcrRules;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

/// A manifest PUT: repository check, tag immutability, storage, moto's `PutImage`, the
/// referrers index, and the lost-response fault — under the repository's lock.
pub(super) async fn manifest_put(
    req: Request<Incoming>,
    st: &State,
    rules: &EcrRules,
    repo: &str,
    reference: &str,
) -> Result<Response<Body>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let digest = crate::seed::sha256(&body);
    let tag = (!reference.contains(':')).then_some(reference);
    let lock = st
        .manifest_locks
        .lock()
        .unwrap()
        .entry(repo.to_string())
        .or_default()
        .clone();
    let _held = lock.lock().await;

    let repository = match st.moto.repository(repo).await {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(st.name_unknown(repo)),
        Err(e) => return Ok(control_plane_failure(&e)),
    };
    let mutability =
        TagMutability::from_wire(repository["imageTagMutability"].as_str().unwrap_or(""));
    if let (Some(tag), true) = (tag, rules.immutability) {
        let filters = if mutability.has_exclusions() {
            match st.moto.exclusion_filters(repo).await {
                Ok(f) => f,
                Err(e) => return Ok(control_plane_failure(&e)),
            }
        } else {
            Vec::new()
        };
        if mutability.is_immutable(&filters, tag) {
            match st.moto.tagged_digest(repo, tag).await {
                Ok(Some(_)) => {
                    return Ok(registry_error(
                        400,
                        "TAG_INVALID",
                        &format!("The image tag '{tag}' already exists in the '{repo}' repository and cannot be overwritten because the tag is immutable."),
                    ))
                }
                Ok(None) => {}
                Err(e) => return Ok(control_plane_failure(&e)),
            }
        }
    }

    let media_type = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|m| m["mediaType"].as_str().map(str::to_string))
        })
        .unwrap_or_default();
    let resp = st
        .storage_request(
            &parts.method,
            &parts.headers,
            &format!("/v2/{repo}/manifests/{reference}"),
            false,
        )
        .body(body.clone())
        .send()
        .await
        .map_err(std::io::Error::other)?;
    if !resp.status().is_success() {
        return Ok(st.relay(resp));
    }
    if let Err(e) = register_image(st, repo, tag, mutability, &media_type, &digest, &body).await {
        return Ok(control_plane_failure(&e));
    }
    if let Ok(m) = serde_json::from_slice::<Value>(&body) {
        let blobs = std::iter::once(&m["config"])
            .chain(m["layers"].as_array().into_iter().flatten())
            .filter_map(|d| d["digest"].as_str().map(str::to_string));
        st.committed_blobs
            .lock()
            .unwrap()
            .entry(repo.to_string())
            .or_default()
            .extend(blobs);
    }
    let subject = referrer_descriptor(&media_type, &digest, &body).map(|(subject, d)| {
        let mut index = st.referrers.lock().unwrap();
        let list = index
            .entry((repo.to_string(), subject.clone()))
            .or_default();
        list.retain(|old| old["digest"] != d["digest"]);
        list.push(d);
        subject
    });
    let lose = st
        .lose_manifest_puts
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if lose {
        return Err(std::io::Error::other(
            "injected: the manifest PUT took effect and its response is lost",
        ));
    }
    let mut out = st.relay(resp);
    if let Some(subject) = subject {
        out.headers_mut()
            .insert("oci-subject", subject.parse().unwrap());
    }
    Ok(out)
}

/// Registers a stored manifest in moto (`PutImage`), working around moto where it differs
/// from ECR:
/// - the same manifest under the same tag raises `ImageAlreadyExistsException` (a registry
///   push of it succeeds on ECR): accepted when the tag already holds this digest;
/// - moto matches exclusion filters as regular expressions from the tag's start, so it may
///   refuse a tag ECR's wildcard rule (checked before) lets through: the tag is then taken
///   off its old image (`BatchDeleteImage`, as moto does for a mutable overwrite) and the
///   image put again;
/// - an untagged `PutImage` crashes moto in a repository with exclusion filters, and one of a
///   manifest moto already has rewrites that image's tag: such pushes are stored only.
async fn register_image(
    st: &State,
    repo: &str,
    tag: Option<&str>,
    mutability: TagMutability,
    media_type: &str,
    digest: &str,
    body: &[u8],
) -> Result<(), ControlPlaneError> {
    if tag.is_none()
        && (mutability.has_exclusions()
            || st
                .moto
                .image_digest(repo, json!({"imageDigest": digest}))
                .await?
                .is_some())
    {
        return Ok(());
    }
    let mut input = json!({
        "repositoryName": repo,
        "imageManifest": String::from_utf8_lossy(body),
        "imageManifestMediaType": media_type,
        "imageDigest": digest,
    });
    if let Some(tag) = tag {
        input["imageTag"] = json!(tag);
    }
    match st.moto.call("PutImage", &input).await {
        Ok(_) => Ok(()),
        Err(e) if e.code == "ImageAlreadyExistsException" => {
            let tag = tag.unwrap_or_default();
            if st.moto.tagged_digest(repo, tag).await?.as_deref() == Some(digest) {
                return Ok(());
            }
            st.moto
                .call(
                    "BatchDeleteImage",
                    &json!({"repositoryName": repo, "imageIds": [{"imageTag": tag}]}),
                )
                .await?;
            st.moto.call("PutImage", &input).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// `GET /v2/<name>/referrers/<digest>[?artifactType=…]`: an OCI index of the manifests pushed
/// into `repo` whose `subject` is `digest`.
pub(super) fn referrers(st: &State, repo: &str, digest: &str, pq: &str) -> Response<Body> {
    let filter = query_pairs(pq)
        .into_iter()
        .find(|(k, _)| k == "artifactType")
        .map(|(_, v)| v);
    let manifests: Vec<Value> = st
        .referrers
        .lock()
        .unwrap()
        .get(&(repo.to_string(), digest.to_string()))
        .into_iter()
        .flatten()
        .filter(|d| {
            filter
                .as_ref()
                .is_none_or(|f| d["artifactType"] == f.as_str())
        })
        .cloned()
        .collect();
    let body = json!({
        "schemaVersion": 2,
        "mediaType": crate::seed::OCI_INDEX,
        "manifests": manifests,
    });
    let mut out = Response::builder()
        .status(200)
        .header("content-type", crate::seed::OCI_INDEX)
        .header("docker-distribution-api-version", "registry/2.0");
    if filter.is_some() {
        out = out.header("oci-filters-applied", "artifactType");
    }
    out.body(full(body.to_string())).unwrap()
}

/// The referrer descriptor of a manifest that has a `subject`: (subject digest, descriptor).
fn referrer_descriptor(media_type: &str, digest: &str, body: &[u8]) -> Option<(String, Value)> {
    let m: Value = serde_json::from_slice(body).ok()?;
    let subject = m["subject"]["digest"].as_str()?.to_string();
    let mut d = json!({
        "mediaType": m["mediaType"].as_str().unwrap_or(media_type),
        "digest": digest,
        "size": body.len(),
    });
    if let Some(t) = m["artifactType"]
        .as_str()
        .or(m["config"]["mediaType"].as_str())
    {
        d["artifactType"] = json!(t);
    }
    if let Some(a) = m.get("annotations").filter(|a| a.is_object()) {
        d["annotations"] = a.clone();
    }
    Some((subject, d))
}
