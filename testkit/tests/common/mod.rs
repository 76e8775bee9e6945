//! Helpers shared by the local ECR's tests.
#![allow(dead_code, unused_imports)]

pub use base64::Engine as _;
pub use ecr_sync_testkit::ecr::{EcrAction, EcrRules, LocalEcr, RateLimits};
pub use ecr_sync_testkit::moto::MotoProcess;
pub use ecr_sync_testkit::seed::{self, Seeder};
pub use serde_json::{json, Value};
pub use std::time::Duration;

pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "us-east-1";

pub async fn start(rules: EcrRules) -> (MotoProcess, LocalEcr) {
    let moto = MotoProcess::start().await;
    let ecr = LocalEcr::start(&moto.endpoint(), ACCOUNT, REGION, rules).await;
    (moto, ecr)
}

/// Creates a repository in moto with a tag mutability and WILDCARD exclusion filters.
pub async fn create_repo(ecr: &LocalEcr, name: &str, mutability: &str, filters: &[&str]) {
    let mut input = json!({"repositoryName": name, "imageTagMutability": mutability});
    if !filters.is_empty() {
        input["imageTagMutabilityExclusionFilters"] = filters
            .iter()
            .map(|f| json!({"filterType": "WILDCARD", "filter": f}))
            .collect();
    }
    ecr.control_plane("CreateRepository", input).await.unwrap();
}

pub fn seeder(ecr: &LocalEcr) -> Seeder {
    Seeder::new(
        reqwest::Client::new(),
        &ecr.url(),
        Some(("AWS".into(), ecr.password())),
    )
}

/// A client that does not follow redirects, and a request through it with the right auth.
pub fn request(ecr: &LocalEcr, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .request(method, format!("{}{path}", ecr.url()))
        .basic_auth("AWS", Some(ecr.password()))
}

pub async fn put_manifest(
    ecr: &LocalEcr,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> reqwest::Response {
    request(
        ecr,
        reqwest::Method::PUT,
        &format!("/v2/{repo}/manifests/{reference}"),
    )
    .header("content-type", media_type)
    .body(bytes.to_vec())
    .send()
    .await
    .unwrap()
}

/// Status, first error code and message of a registry answer.
pub async fn error_of(resp: reqwest::Response) -> (u16, String, String) {
    let status = resp.status().as_u16();
    let body = json_of(resp).await;
    let e = &body["errors"][0];
    (
        status,
        e["code"].as_str().unwrap_or_default().to_string(),
        e["message"].as_str().unwrap_or_default().to_string(),
    )
}

/// The JSON body of an answer (`null` when it is not JSON).
pub async fn json_of(resp: reqwest::Response) -> Value {
    serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or(Value::Null)
}

/// A Docker image with one layer from `seed`, pushed by digest only (nothing tagged).
pub async fn untagged_image(s: &Seeder, repo: &str, seed: u64) -> seed::Pushed {
    s.image(
        repo,
        None,
        vec![seed::noise(seed, 1000)],
        &[],
        ("linux", "amd64"),
    )
    .await
    .unwrap()
}

/// The digest moto's `DescribeImages` gives `repo:tag`.
pub async fn moto_digest(ecr: &LocalEcr, repo: &str, tag: &str) -> Option<String> {
    ecr.control_plane(
        "DescribeImages",
        json!({"repositoryName": repo, "imageIds": [{"imageTag": tag}]}),
    )
    .await
    .ok()
    .and_then(|v| {
        v["imageDetails"][0]["imageDigest"]
            .as_str()
            .map(String::from)
    })
}

/// Calls `action` on the stand-in's API listener as the AWS SDK would: AWS JSON 1.1, a SigV4
/// header naming the service and the stand-in's region (moto routes by them; it checks no
/// signature), no account header.
pub async fn api_call(ecr: &LocalEcr, action: &str, input: Value) -> reqwest::Response {
    let host = ecr.host();
    let region = host.split('.').nth(3).unwrap();
    reqwest::Client::new()
        .post(ecr.api_endpoint())
        .header(
            "x-amz-target",
            format!("AmazonEC2ContainerRegistry_V20150921.{action}"),
        )
        .header("content-type", "application/x-amz-json-1.1")
        .header(
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential=testing/20260101/{region}/ecr/aws4_request, SignedHeaders=host, Signature=00"
            ),
        )
        .body(input.to_string())
        .send()
        .await
        .unwrap()
}

/// `GetAuthorizationToken` on the API listener: the first `authorizationData` entry.
pub async fn get_authorization_token(ecr: &LocalEcr) -> Value {
    let resp = api_call(ecr, "GetAuthorizationToken", json!({})).await;
    assert_eq!(resp.status(), 200);
    json_of(resp).await["authorizationData"][0].clone()
}

/// The password of an `authorizationData` entry's token (`AWS:<password>`, base64).
pub fn password_of(data: &Value) -> String {
    let token = data["authorizationToken"].as_str().unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token)
        .unwrap();
    let decoded = String::from_utf8(decoded).unwrap();
    decoded.strip_prefix("AWS:").unwrap().to_string()
}

/// `GET /v2/` on the stand-in with Basic `AWS:<password>`.
pub async fn ping_with(ecr: &LocalEcr, password: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}/v2/", ecr.url()))
        .basic_auth("AWS", Some(password))
        .send()
        .await
        .unwrap()
}

/// Seconds since the Unix epoch, as `expiresAt` counts them.
pub fn epoch_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}
