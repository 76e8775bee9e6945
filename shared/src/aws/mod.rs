//! AWS access shared by every service module: the process's one set of SDK settings, loaded on
//! first use (so runs that touch no AWS service never read credentials), one readable line per
//! SDK error, and the S3 read of a config object.
//!
//! Each binary makes one [`Aws`] and passes it down; the ECR, SQS, DynamoDB and S3 clients are
//! all built from the same `SdkConfig`. `AWS_ENDPOINT_URL_<SERVICE>` variables point single
//! services elsewhere (moto in tests).

mod describe;
mod s3;

pub use describe::describe;
pub use s3::read_object;

use aws_config::SdkConfig;
use std::sync::Arc;
use tokio::sync::OnceCell;

/// The process's AWS settings, loaded the SDK's usual way (environment, profile, container or
/// instance role) the first time a service needs them. Cheap to clone; clones share the load.
#[derive(Clone, Default)]
pub struct Aws(Arc<OnceCell<SdkConfig>>);

impl Aws {
    /// Settings to be loaded on first use.
    pub fn new() -> Aws {
        Aws::default()
    }

    /// Settings already loaded (tests that build their own).
    pub fn from_sdk(sdk: SdkConfig) -> Aws {
        Aws(Arc::new(OnceCell::new_with(Some(sdk))))
    }

    /// The settings, loading them the first time.
    pub async fn sdk(&self) -> &SdkConfig {
        self.0
            .get_or_init(|| aws_config::defaults(aws_config::BehaviorVersion::latest()).load())
            .await
    }

    /// An SQS client.
    pub async fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(self.sdk().await)
    }

    /// A DynamoDB client.
    pub async fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(self.sdk().await)
    }
}
