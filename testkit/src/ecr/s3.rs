//! The S3 stand-in: blob GETs redirect to pre-signed URLs on a second listener, which serves
//! the bytes from storage.

use super::proxy::{full, query_pairs, Body, State};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use std::sync::Arc;

impl State {
    /// The S3 stand-in's signature for one blob.
    fn signature(&self, repo: &str, digest: &str) -> String {
        let signed = crate::seed::sha256(format!("{}\n{repo}\n{digest}", self.secret).as_bytes());
        signed.trim_start_matches("sha256:").to_string()
    }
}

/// A blob GET: 307 to the S3 stand-in when storage has the blob, else storage's own answer.
pub(super) async fn blob_redirect(
    req: Request<Incoming>,
    st: &State,
    repo: &str,
    digest: &str,
    pq: &str,
) -> Result<Response<Body>, std::io::Error> {
    let head = st
        .http
        .head(format!("{}/v2/{repo}/blobs/{digest}", st.storage))
        .send()
        .await
        .map_err(std::io::Error::other)?;
    if !head.status().is_success() {
        return st.forward(req, pq).await;
    }
    let location = format!(
        "{}/layers/{repo}/{digest}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=3600&X-Amz-Signature={}",
        st.s3,
        st.signature(repo, digest)
    );
    Ok(Response::builder()
        .status(307)
        .header("location", location)
        .header("docker-distribution-api-version", "registry/2.0")
        .body(full(Bytes::new()))
        .unwrap())
}

/// The S3 stand-in: serves `/layers/<repo>/<digest>?…&X-Amz-Signature=…` from storage, and,
/// as S3 does for a pre-signed URL, refuses a request that also carries an `Authorization`
/// header.
pub(super) async fn handle_s3(
    req: Request<Incoming>,
    st: Arc<State>,
) -> Result<Response<Body>, std::io::Error> {
    let s3_error = |status: u16, code: &str, message: &str| {
        Response::builder()
            .status(status)
            .header("content-type", "application/xml")
            .body(full(format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
            )))
            .unwrap()
    };
    if req.headers().contains_key("authorization") {
        return Ok(s3_error(
            400,
            "InvalidArgument",
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified",
        ));
    }
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let blob = req
        .uri()
        .path()
        .strip_prefix("/layers/")
        .and_then(|p| p.rsplit_once('/'))
        .map(|(repo, digest)| (repo.to_string(), digest.to_string()));
    let signature = query_pairs(&pq)
        .into_iter()
        .find(|(k, _)| k == "X-Amz-Signature")
        .map(|(_, v)| v);
    let Some((repo, digest)) = blob else {
        return Ok(s3_error(
            404,
            "NoSuchKey",
            "The specified key does not exist.",
        ));
    };
    if signature != Some(st.signature(&repo, &digest)) {
        return Ok(s3_error(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        ));
    }
    let mut rb = st.http.request(
        req.method().clone(),
        format!("{}/v2/{repo}/blobs/{digest}", st.storage),
    );
    if let Some(range) = req.headers().get("range") {
        rb = rb.header("range", range);
    }
    let resp = rb.send().await.map_err(std::io::Error::other)?;
    let mut out = Response::builder()
        .status(resp.status().as_u16())
        .header("content-type", "application/octet-stream");
    for (k, v) in resp.headers() {
        if matches!(
            k.as_str(),
            "content-length" | "content-range" | "accept-ranges" | "etag"
        ) {
            out = out.header(k, v);
        }
    }
    let stream = resp
        .bytes_stream()
        .map(|chunk| chunk.map(Frame::data).map_err(std::io::Error::other));
    Ok(out.body(BodyExt::boxed(StreamBody::new(stream))).unwrap())
}
