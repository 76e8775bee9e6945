//! The ECR control plane: moto's ECR API (AWS JSON 1.1) for one account and region.

use serde_json::{json, Value};

/// The `X-Amz-Target` prefix of ECR's control-plane API (AWS JSON 1.1).
pub(super) const ECR_TARGET: &str = "AmazonEC2ContainerRegistry_V20150921";

/// An error from moto's ECR control plane (AWS JSON protocol).
#[derive(Debug, Clone)]
pub struct ControlPlaneError {
    /// HTTP status (0 when moto could not be reached).
    pub status: u16,
    /// The AWS error code (`RepositoryNotFoundException`, …).
    pub code: String,
    /// The error message.
    pub message: String,
}

impl std::fmt::Display for ControlPlaneError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.message)
    }
}

impl std::error::Error for ControlPlaneError {}

/// Calls moto's ECR API for one account and region.
pub(super) struct ControlPlane {
    pub(super) endpoint: String,
    pub(super) account: String,
    pub(super) region: String,
    pub(super) http: reqwest::Client,
}

impl ControlPlane {
    pub(super) async fn call(
        &self,
        action: &str,
        input: &Value,
    ) -> Result<Value, ControlPlaneError> {
        let unreachable = |e: reqwest::Error| ControlPlaneError {
            status: 0,
            code: "Unreachable".into(),
            message: e.to_string(),
        };
        let resp = self
            .http
            .post(&self.endpoint)
            .header("x-amz-target", format!("{ECR_TARGET}.{action}"))
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-moto-account-id", &self.account)
            .header(
                "authorization",
                format!(
                    "AWS4-HMAC-SHA256 Credential=testing/20260101/{}/ecr/aws4_request, SignedHeaders=host, Signature=00",
                    self.region
                ),
            )
            .body(input.to_string())
            .send()
            .await
            .map_err(unreachable)?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(unreachable)?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let code = body["__type"].as_str().unwrap_or("InternalFailure");
        Err(ControlPlaneError {
            status,
            code: code.rsplit('#').next().unwrap_or(code).to_string(),
            message: body["message"].as_str().unwrap_or(&text).to_string(),
        })
    }

    /// The repository as `DescribeRepositories` lists it; `None` when moto has no such
    /// repository.
    pub(super) async fn repository(&self, repo: &str) -> Result<Option<Value>, ControlPlaneError> {
        match self
            .call("DescribeRepositories", &json!({"repositoryNames": [repo]}))
            .await
        {
            Ok(v) => Ok(Some(v["repositories"][0].clone())),
            Err(e) if e.code == "RepositoryNotFoundException" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The repository's tag-mutability exclusion filters. moto keeps them but its
    /// `DescribeRepositories` does not return them (its botocore model predates them), so they
    /// are read from moto's model dump, `/moto-api/data.json` — the newest repository instance
    /// of that account, region and name.
    pub(super) async fn exclusion_filters(
        &self,
        repo: &str,
    ) -> Result<Vec<String>, ControlPlaneError> {
        let url = format!("{}/moto-api/data.json", self.endpoint);
        let unreachable = |e: reqwest::Error| ControlPlaneError {
            status: 0,
            code: "Unreachable".into(),
            message: e.to_string(),
        };
        let text = self
            .http
            .get(url)
            .send()
            .await
            .map_err(unreachable)?
            .text()
            .await
            .map_err(unreachable)?;
        let dump: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        // moto lists every instance ever made, oldest first (deleted repositories too).
        let newest = dump["ecr"]["Repository"]
            .as_array()
            .into_iter()
            .flatten()
            .rev()
            .find(|r| {
                r["account_id"] == self.account.as_str()
                    && r["region_name"] == self.region.as_str()
                    && r["name"] == repo
            });
        let found = newest.map(|r| {
            r["image_tag_mutability_exclusion_filters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f["filter"].as_str().map(str::to_string))
                .collect()
        });
        Ok(found.unwrap_or_default())
    }

    /// The digest moto's tag points at (`None`: no such tag).
    pub(super) async fn tagged_digest(
        &self,
        repo: &str,
        tag: &str,
    ) -> Result<Option<String>, ControlPlaneError> {
        self.image_digest(repo, json!({"imageTag": tag})).await
    }

    pub(super) async fn image_digest(
        &self,
        repo: &str,
        id: Value,
    ) -> Result<Option<String>, ControlPlaneError> {
        match self
            .call(
                "DescribeImages",
                &json!({"repositoryName": repo, "imageIds": [id]}),
            )
            .await
        {
            Ok(v) => Ok(v["imageDetails"][0]["imageDigest"]
                .as_str()
                .map(str::to_string)),
            Err(e) if e.code == "ImageNotFoundException" => Ok(None),
            Err(e) => Err(e),
        }
    }
}
