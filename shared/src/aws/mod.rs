//! AWS access shared by every service module: the process's one set of SDK settings, loaded on
//! first use (so runs that touch no AWS service never read credentials), one readable line per
//! SDK error, and the S3 read of a config object.
//!
//! Each binary makes one [`Aws`] and passes it down; the ECR, SQS, DynamoDB and S3 clients are
//! all built from the same `SdkConfig`, which bounds every call ([`OPERATION_TIMEOUT`]). `AWS_ENDPOINT_URL_<SERVICE>` variables point single
//! services elsewhere (moto in tests).

mod describe;
mod s3;

pub use describe::describe;
pub use s3::read_object;

use aws_config::timeout::TimeoutConfig;
use aws_config::SdkConfig;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

/// Longest wait for a connection to an AWS endpoint.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest one attempt of an AWS call may take (a stalled response is cut off and retried by
/// the SDK's own retry; long polls get their wait on top, see [`long_poll_attempt_timeout`]).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest an AWS call may take with the SDK's retries ([`MAX_ATTEMPTS`]): a worker never
/// waits on a stalled connection for longer, so it neither idles alive nor holds a job slot
/// forever.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts per AWS call (the SDK's standard retry mode, with its backoff and retry quota).
/// Not the SDK's default of 3: a call that fails for good costs a whole `plan` or a job's
/// retry, and at 5 % of calls failing (the load test's chaos, half 500s and half lost
/// answers) one plan in about fifteen failed on three failures in a row; five bring that to
/// about one call in three million. [`OPERATION_TIMEOUT`] still bounds the total.
pub const MAX_ATTEMPTS: u32 = 5;

/// The attempt timeout of a call that waits `wait` on purpose (an SQS long poll).
pub fn long_poll_attempt_timeout(wait: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .operation_attempt_timeout(wait + ATTEMPT_TIMEOUT)
        .operation_timeout(wait + OPERATION_TIMEOUT)
        .build()
}

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
            .get_or_init(|| {
                aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .retry_config(
                        aws_config::retry::RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS),
                    )
                    .timeout_config(
                        TimeoutConfig::builder()
                            .connect_timeout(CONNECT_TIMEOUT)
                            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                            .operation_timeout(OPERATION_TIMEOUT)
                            .build(),
                    )
                    .load()
            })
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
