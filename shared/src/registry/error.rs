//! Registry errors, each saying whether trying again can help.

use crate::vocab::ErrorClass;
use std::time::Duration;

/// Something a registry operation could not do.
#[derive(Debug, thiserror::Error)]
#[error("{op} {url}: {kind}")]
pub struct RegistryError {
    /// What was being done (`GET manifest`, `PUT blob`, …).
    pub op: &'static str,
    /// The URL involved, without credentials.
    pub url: String,
    /// What went wrong.
    pub kind: ErrorKind,
}

/// The classes of registry failure.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    /// Connection refused or reset, timeout, truncated body: worth retrying.
    #[error("transport error: {0}")]
    Transport(String),
    /// An HTTP status that carries no more specific meaning below.
    #[error("HTTP {status}{}", fmt_code(code, message))]
    Status {
        /// The HTTP status.
        status: u16,
        /// The registry's error code (`MANIFEST_INVALID`, …) if it sent one.
        code: Option<String>,
        /// The registry's message, if any.
        message: Option<String>,
        /// How long the registry asked us to wait (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// 401/403: credentials missing, wrong, or without permission.
    #[error("not authorized (HTTP {status}){}", fmt_code(code, message))]
    Unauthorized {
        /// 401 or 403.
        status: u16,
        /// The registry's error code, if any.
        code: Option<String>,
        /// The registry's message, if any.
        message: Option<String>,
    },
    /// The manifest, blob or repository does not exist.
    #[error("not found{}", fmt_code(code, message))]
    NotFound {
        /// The registry's error code, if any.
        code: Option<String>,
        /// The registry's message, if any.
        message: Option<String>,
    },
    /// Bytes received do not hash to the digest they were requested by.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest asked for.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// A response we cannot use (bad token JSON, missing Location header, …).
    #[error("unexpected response: {0}")]
    Protocol(String),
}

fn fmt_code(code: &Option<String>, message: &Option<String>) -> String {
    match (code, message) {
        (Some(c), Some(m)) => format!(" {c}: {m}"),
        (Some(c), None) => format!(" {c}"),
        (None, Some(m)) => format!(": {m}"),
        (None, None) => String::new(),
    }
}

impl ErrorKind {
    /// Whether the same request may succeed later: transport failures and 408/429/5xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            ErrorKind::Transport(_) => true,
            ErrorKind::Status { status, .. } => ErrorClass::of_http_status(*status).is_transient(),
            _ => false,
        }
    }

    /// The registry's `Retry-After`, when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ErrorKind::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The failure class for reports and the ledger.
    pub fn class(&self) -> ErrorClass {
        match self {
            k if k.is_retryable() => ErrorClass::Transient,
            ErrorKind::Unauthorized { code, message, .. } if names_a_quota(code, message) => {
                ErrorClass::Quota
            }
            ErrorKind::Unauthorized { .. } => ErrorClass::Auth,
            ErrorKind::NotFound { .. } => ErrorClass::NotFound,
            ErrorKind::DigestMismatch { .. } => ErrorClass::DigestMismatch,
            ErrorKind::Status {
                status,
                code: Some(c),
                ..
            } => match c.as_str() {
                "DIGEST_INVALID" => ErrorClass::DigestMismatch,
                "TAG_INVALID" => ErrorClass::ImmutableTag,
                // Our upload broke a rule of the registry's (ECR's 5 MiB minimum part).
                "LAYER_PART_TOO_SMALL" | "BLOB_UPLOAD_INVALID" | "SIZE_INVALID" => {
                    ErrorClass::Protocol
                }
                "UNSUPPORTED" => ErrorClass::Unsupported,
                _ if names_a_quota(&Some(c.clone()), &None) => ErrorClass::Quota,
                _ => ErrorClass::of_http_status(*status),
            },
            ErrorKind::Protocol(_) => ErrorClass::Protocol,
            ErrorKind::Status { status, .. } => ErrorClass::of_http_status(*status),
            ErrorKind::Transport(_) => ErrorClass::Transient,
        }
    }
}

impl RegistryError {
    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable() || self.is_manifest_put_race()
    }

    /// A manifest PUT answered `DIGEST_INVALID`: distribution says so while another process
    /// uploads or mounts a blob the manifest references into the same repository (the load
    /// test's chaos met it with jobs sharing base layers). The blobs were verified on the way
    /// in, so the same PUT succeeds a moment later: transient, not a digest mismatch.
    fn is_manifest_put_race(&self) -> bool {
        self.op == super::MANIFEST_PUT
            && matches!(&self.kind, ErrorKind::Status { code: Some(c), .. } if c == "DIGEST_INVALID")
    }

    /// The failure class for reports and the ledger.
    pub fn class(&self) -> ErrorClass {
        if self.is_retryable() {
            return ErrorClass::Transient;
        }
        self.kind.class()
    }

    /// Whether the registry refused a manifest because content it references is missing
    /// (`MANIFEST_BLOB_UNKNOWN`) or does not match its digest (`DIGEST_INVALID`: what
    /// distribution answers while a concurrent upload or mount rewrites a blob's link — our
    /// bytes were checked on the way in, so the registry's view of the blob is what to check).
    pub fn is_manifest_content_unknown(&self) -> bool {
        matches!(&self.kind, ErrorKind::Status { code: Some(c), .. }
            if c == "MANIFEST_BLOB_UNKNOWN" || c == "DIGEST_INVALID")
    }

    /// Whether the registry throttled the request (429).
    pub fn is_throttled(&self) -> bool {
        matches!(&self.kind, ErrorKind::Status { status: 429, .. })
    }

    /// Whether the registry refused a tag because it is immutable (`TAG_INVALID`, as ECR
    /// answers a PUT to an existing immutable tag — also when it holds the same image).
    pub fn is_tag_invalid(&self) -> bool {
        matches!(&self.kind, ErrorKind::Status { code: Some(c), .. } if c == "TAG_INVALID")
    }
}

/// Whether an error code or message says an account or repository quota is used up (ECR's
/// images per repository answers 403, which must not read as a credentials problem).
fn names_a_quota(code: &Option<String>, message: &Option<String>) -> bool {
    [code, message].into_iter().flatten().any(|t| {
        let t = t.to_ascii_lowercase();
        t.contains("limit") || t.contains("quota")
    })
}

/// Builds the error for a non-success response, reading the registry's error body
/// (`{"errors":[{"code":…,"message":…}]}`) when there is one.
pub(crate) async fn from_response(
    op: &'static str,
    url: &str,
    resp: reqwest::Response,
) -> RegistryError {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = resp.bytes().await.unwrap_or_default();
    let (code, message) = parse_error_body(&body);
    let kind = match status {
        401 | 403 => ErrorKind::Unauthorized {
            status,
            code,
            message,
        },
        404 => ErrorKind::NotFound { code, message },
        _ => ErrorKind::Status {
            status,
            code,
            message,
            retry_after,
        },
    };
    RegistryError {
        op,
        url: url.to_string(),
        kind,
    }
}

fn parse_error_body(body: &[u8]) -> (Option<String>, Option<String>) {
    #[derive(serde::Deserialize)]
    struct Body {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        code: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(Body { errors }) if !errors.is_empty() => {
            (errors[0].code.clone(), errors[0].message.clone())
        }
        _ => {
            let text = String::from_utf8_lossy(body)
                .trim()
                .chars()
                .take(200)
                .collect::<String>();
            (None, (!text.is_empty()).then_some(text))
        }
    }
}

pub(crate) fn transport(op: &'static str, url: &str, err: reqwest::Error) -> RegistryError {
    // The error chain carries the useful part ("connection reset by peer").
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    RegistryError {
        op,
        url: url.to_string(),
        kind: ErrorKind::Transport(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_matches_the_failure_classes() {
        let status = |status| ErrorKind::Status {
            status,
            code: None,
            message: None,
            retry_after: None,
        };
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(status(s).is_retryable(), "{s}");
        }
        for s in [400, 405, 409] {
            assert!(!status(s).is_retryable(), "{s}");
        }
        assert!(!ErrorKind::Unauthorized {
            status: 401,
            code: None,
            message: None
        }
        .is_retryable());
        assert_eq!(
            ErrorKind::DigestMismatch {
                expected: "a".into(),
                actual: "b".into()
            }
            .class(),
            ErrorClass::DigestMismatch
        );
        assert_eq!(
            ErrorKind::Transport("reset".into()).class(),
            ErrorClass::Transient
        );
    }

    #[test]
    fn ecr_answers_get_their_own_classes() {
        let coded = |status, code: &str, message: &str| ErrorKind::Status {
            status,
            code: Some(code.into()),
            message: Some(message.into()),
            retry_after: None,
        };
        assert_eq!(
            coded(400, "TAG_INVALID", "tag is immutable").class(),
            ErrorClass::ImmutableTag
        );
        assert_eq!(
            coded(400, "LAYER_PART_TOO_SMALL", "part too small").class(),
            ErrorClass::Protocol
        );
        assert_eq!(
            coded(400, "MANIFEST_INVALID", "manifest invalid").class(),
            ErrorClass::Rejected
        );
        // No Retry-After: still throttling.
        assert_eq!(
            coded(429, "TOOMANYREQUESTS", "Rate exceeded").class(),
            ErrorClass::Transient
        );
        // The images-per-repository quota answers 403: not a credentials problem.
        let quota = ErrorKind::Unauthorized {
            status: 403,
            code: Some("DENIED".into()),
            message: Some("the repository has exceeded its limit of images".into()),
        };
        assert_eq!(quota.class(), ErrorClass::Quota);
        let denied = ErrorKind::Unauthorized {
            status: 403,
            code: Some("DENIED".into()),
            message: Some("not authorized to perform ecr:PutImage".into()),
        };
        assert_eq!(denied.class(), ErrorClass::Auth);
        let tag_invalid = RegistryError {
            op: "PUT manifest",
            url: "u".into(),
            kind: coded(400, "TAG_INVALID", "immutable"),
        };
        assert!(tag_invalid.is_tag_invalid());
    }

    #[test]
    fn error_body_code_and_message_are_read() {
        let (c, m) = parse_error_body(
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
        );
        assert_eq!(c.as_deref(), Some("MANIFEST_UNKNOWN"));
        assert_eq!(m.as_deref(), Some("manifest unknown"));
        let (c, m) = parse_error_body(b"upstream overloaded");
        assert_eq!((c, m.as_deref()), (None, Some("upstream overloaded")));
    }
}
