//! ECR's rules as data: which ones apply ([`EcrRules`], [`RateLimits`]), the API action each
//! registry request (or token request) costs ([`EcrAction`], [`EcrCounts`]), the token buckets
//! that throttle them, and tag immutability with ECR's wildcard exclusion filters.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// ECR's smallest layer part except the last: 5 MiB (S3 multipart's minimum; ECR's
/// `UploadLayerPart` answers `LayerPartTooSmallException` below it).
pub const MIN_PART_BYTES: u64 = 5 * 1024 * 1024;

/// Requests per second, per account and region, before ECR throttles an API action. The
/// defaults are ECR's default service quotas; a bucket holds one second's worth of requests
/// (GetAuthorizationToken's: ten seconds' worth, see [`RateLimits::burst`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    /// Manifest PUTs (`PutImage`): 10/s.
    pub put_image: u32,
    /// Upload starts, mounts included (`InitiateLayerUpload`): 100/s.
    pub initiate_layer_upload: u32,
    /// Upload PATCHes (`UploadLayerPart`): 500/s.
    pub upload_layer_part: u32,
    /// Upload-finishing PUTs (`CompleteLayerUpload`): 100/s.
    pub complete_layer_upload: u32,
    /// Blob HEADs (`BatchCheckLayerAvailability`): 1000/s.
    pub batch_check_layer_availability: u32,
    /// Blob GETs (`GetDownloadUrlForLayer`): 3000/s.
    pub get_download_url_for_layer: u32,
    /// Manifest GETs and HEADs (`BatchGetImage`): 2000/s.
    pub batch_get_image: u32,
    /// `GetAuthorizationToken` on the API listener: 20/s, after a burst of up to 200 (ECR's
    /// documented bucket: 200 credits, refilled at 20 a second).
    pub get_authorization_token: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            put_image: 10,
            initiate_layer_upload: 100,
            upload_layer_part: 500,
            complete_layer_upload: 100,
            batch_check_layer_availability: 1000,
            get_download_url_for_layer: 3000,
            batch_get_image: 2000,
            get_authorization_token: 20,
        }
    }
}

impl RateLimits {
    /// The rate of one action.
    pub fn rate(&self, action: EcrAction) -> u32 {
        match action {
            EcrAction::PutImage => self.put_image,
            EcrAction::InitiateLayerUpload => self.initiate_layer_upload,
            EcrAction::UploadLayerPart => self.upload_layer_part,
            EcrAction::CompleteLayerUpload => self.complete_layer_upload,
            EcrAction::BatchCheckLayerAvailability => self.batch_check_layer_availability,
            EcrAction::GetDownloadUrlForLayer => self.get_download_url_for_layer,
            EcrAction::BatchGetImage => self.batch_get_image,
            EcrAction::GetAuthorizationToken => self.get_authorization_token,
        }
    }

    /// How many calls of `action` a full bucket holds: one second's worth, except
    /// `GetAuthorizationToken`'s ten (ECR: 200 credits at 20 a second).
    pub fn burst(&self, action: EcrAction) -> u32 {
        match action {
            EcrAction::GetAuthorizationToken => self.rate(action).saturating_mul(10),
            _ => self.rate(action),
        }
    }
}

/// Which ECR behaviours the stand-in applies. The default is real ECR with an account's
/// default settings: every rule on, blob mounting off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrRules {
    /// Refuse manifest PUTs to existing tags in immutable positions (rule 3).
    pub immutability: bool,
    /// Throttle per action (rule 5); `None` never throttles.
    pub rate_limits: Option<RateLimits>,
    /// Refuse non-final upload parts smaller than this (rule 6); `None` accepts any size.
    pub min_part_bytes: Option<u64>,
    /// Redirect blob GETs to the S3 stand-in (rule 7); off serves them directly.
    pub redirect_blob_gets: bool,
    /// Honour `?mount=&from=` as ECR's blob mounting does (rule 8). Off (ECR's default)
    /// starts a fresh upload instead.
    pub blob_mounting: bool,
    /// Require an ECR token as Basic auth (rule 1).
    pub require_auth: bool,
    /// Enforce ECR's token expiry (rule 1). `Some(lifetime)`: only tokens the API listener
    /// issued ([`LocalEcr::api_endpoint`](super::LocalEcr::api_endpoint)) are accepted, and
    /// each only until `lifetime` after it was issued (ECR: 12 hours); moto's fixed password,
    /// which moto itself says expired in 2015, is refused. `None` (the default): moto's fixed
    /// password ([`LocalEcr::password`](super::LocalEcr::password)) and every issued token are
    /// accepted, expired or not. A token's lifetime is fixed when it is issued, so a change
    /// here applies to tokens issued afterwards.
    pub token_lifetime: Option<Duration>,
}

impl Default for EcrRules {
    fn default() -> Self {
        EcrRules {
            immutability: true,
            rate_limits: Some(RateLimits::default()),
            min_part_bytes: Some(MIN_PART_BYTES),
            redirect_blob_gets: true,
            blob_mounting: false,
            require_auth: true,
            token_lifetime: None,
        }
    }
}

/// The ECR API action a request costs, for rate limits and counts: a registry request's, or a
/// token request to the API listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EcrAction {
    /// Manifest PUT.
    PutImage,
    /// `POST /v2/<name>/blobs/uploads/` (with or without a mount or a digest).
    InitiateLayerUpload,
    /// PATCH on an upload.
    UploadLayerPart,
    /// PUT on an upload (`?digest=`).
    CompleteLayerUpload,
    /// Blob HEAD.
    BatchCheckLayerAvailability,
    /// Blob GET.
    GetDownloadUrlForLayer,
    /// Manifest GET or HEAD.
    BatchGetImage,
    /// A token request to the API listener (the only control-plane call counted).
    GetAuthorizationToken,
}

/// Calls per action since start, and how many of them were throttled (answered 429).
#[derive(Debug, Clone, Default)]
pub struct EcrCounts {
    calls: HashMap<EcrAction, u64>,
    throttled: HashMap<EcrAction, u64>,
}

impl EcrCounts {
    /// Calls of `action`, throttled ones included.
    pub fn calls(&self, action: EcrAction) -> u64 {
        self.calls.get(&action).copied().unwrap_or(0)
    }

    /// Calls of `action` answered 429.
    pub fn throttled(&self, action: EcrAction) -> u64 {
        self.throttled.get(&action).copied().unwrap_or(0)
    }

    /// Counts a call of `action`, and whether it was throttled.
    pub(super) fn record(&mut self, action: EcrAction, throttled: bool) {
        *self.calls.entry(action).or_insert(0) += 1;
        if throttled {
            *self.throttled.entry(action).or_insert(0) += 1;
        }
    }
}

/// A token bucket: `rate` tokens a second, holding at most `burst`.
pub(super) struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket at `now`.
    pub(super) fn full(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            last: now,
        }
    }

    /// Refills the bucket for the time since it was last used, then takes a token: false when
    /// there is none.
    pub(super) fn take(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * rate).min(burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A repository's `imageTagMutability`, as moto stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TagMutability {
    Mutable,
    Immutable,
    /// Mutable, except tags matching an exclusion filter.
    MutableWithExclusion,
    /// Immutable, except tags matching an exclusion filter.
    ImmutableWithExclusion,
}

impl TagMutability {
    pub(super) fn from_wire(s: &str) -> TagMutability {
        match s {
            "IMMUTABLE" => TagMutability::Immutable,
            "MUTABLE_WITH_EXCLUSION" => TagMutability::MutableWithExclusion,
            "IMMUTABLE_WITH_EXCLUSION" => TagMutability::ImmutableWithExclusion,
            _ => TagMutability::Mutable,
        }
    }

    pub(super) fn has_exclusions(self) -> bool {
        matches!(
            self,
            TagMutability::MutableWithExclusion | TagMutability::ImmutableWithExclusion
        )
    }

    /// Whether `tag` cannot be overwritten, given the exclusion filters.
    pub(super) fn is_immutable(self, filters: &[String], tag: &str) -> bool {
        let excluded = filters.iter().any(|f| wildcard_match(f, tag));
        match self {
            TagMutability::Mutable => false,
            TagMutability::Immutable => true,
            TagMutability::MutableWithExclusion => excluded,
            TagMutability::ImmutableWithExclusion => !excluded,
        }
    }
}

/// ECR's exclusion-filter match: the whole tag against a pattern where `*` is any run of
/// characters.
fn wildcard_match(pattern: &str, tag: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), tag.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_whole_tags() {
        assert!(wildcard_match("latest*", "latest"));
        assert!(wildcard_match("latest*", "latest-arm64"));
        assert!(!wildcard_match("latest*", "v1-latest"));
        assert!(wildcard_match("*-dev", "feature-dev"));
        assert!(!wildcard_match("*-dev", "feature-dev2"));
        assert!(wildcard_match("v*.*", "v1.2"));
        assert!(!wildcard_match("v1", "v10"));
        assert!(wildcard_match("*", ""));
    }
}
