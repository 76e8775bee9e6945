//! One line of text for an AWS SDK error, the same for every service: `Code: message` when AWS
//! answered, else the dispatch error and its causes — never the SDK's debug dump of the raw
//! response.

use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};

/// `Code: message` for a service error; the error and its sources otherwise.
pub fn describe<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if let Some(s) = e.as_service_error() {
        match (s.code(), s.message()) {
            (Some(code), Some(message)) => return format!("{code}: {message}"),
            (Some(code), None) => return code.to_string(),
            (None, Some(message)) => return message.to_string(),
            (None, None) => {}
        }
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
