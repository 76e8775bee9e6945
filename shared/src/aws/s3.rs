//! S3: reading one small object (the config) whole, with its version.

use super::Aws;

/// Fetches `s3://bucket/key` whole (configs are small) with its version id, or its ETag in an
/// unversioned bucket. Path-style addressing, so `AWS_ENDPOINT_URL_S3` can point at moto or
/// MinIO. The error is one line: `S3 GetObject failed: Code: message`.
pub async fn read_object(aws: &Aws, bucket: &str, key: &str) -> Result<(Vec<u8>, String), String> {
    let conf = aws_sdk_s3::config::Builder::from(aws.sdk().await)
        .force_path_style(true)
        .build();
    let client = aws_sdk_s3::Client::from_conf(conf);
    let object = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|err| format!("S3 GetObject failed: {}", super::describe(&err)))?;
    let version = object
        .version_id()
        .filter(|v| !v.is_empty() && *v != "null")
        .or(object.e_tag())
        .unwrap_or("")
        .trim_matches('"')
        .to_string();
    let body = object
        .body
        .collect()
        .await
        .map_err(|err| format!("reading the S3 object body failed: {err}"))?;
    Ok((body.into_bytes().to_vec(), version))
}
