//! Chunked blob uploads: ECR's minimum size for every layer part but the last.

use super::proxy::{registry_error, Body, State};
use super::EcrRules;
use futures_util::TryStreamExt;
use http_body_util::BodyStream;
use hyper::body::Incoming;
use hyper::{Request, Response};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The refusal of a part that follows a too-small one in upload `id` (`follows_with_bytes`:
/// the request carries bytes, so the previous part was not the last).
pub(super) fn part_too_small(
    st: &State,
    rules: &EcrRules,
    id: &str,
    follows_with_bytes: bool,
) -> Option<Response<Body>> {
    let min = rules.min_part_bytes?;
    let previous = st
        .last_parts
        .lock()
        .unwrap()
        .get(id)?
        .load(Ordering::Relaxed);
    (follows_with_bytes && previous < min).then(|| {
        registry_error(
            400,
            "LAYER_PART_TOO_SMALL",
            &format!(
                "All layer parts except the last part should be at least {min} bytes; the previous part had {previous}"
            ),
        )
    })
}

/// A PATCH: refused when the previous part was too small, else streamed on while its bytes
/// are counted (the next part checks this one's size).
pub(super) async fn upload_part(
    req: Request<Incoming>,
    st: &State,
    rules: &EcrRules,
    id: &str,
    pq: &str,
) -> Result<Response<Body>, std::io::Error> {
    if let Some(refused) = part_too_small(st, rules, id, true) {
        return Ok(refused);
    }
    let received = Arc::new(AtomicU64::new(0));
    st.last_parts
        .lock()
        .unwrap()
        .insert(id.to_string(), received.clone());
    let (parts, body) = req.into_parts();
    let body = BodyStream::new(body).try_filter_map(move |f| {
        let received = received.clone();
        async move {
            let data = f.into_data().ok();
            if let Some(d) = &data {
                received.fetch_add(d.len() as u64, Ordering::Relaxed);
            }
            Ok(data)
        }
    });
    let resp = st
        .storage_request(&parts.method, &parts.headers, pq, true)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .map_err(std::io::Error::other)?;
    Ok(st.relay(resp))
}
