//! What a registry request names: its route, and the ECR API action it costs.

use super::EcrAction;
use hyper::Method;

/// What a `/v2/…` path names. Repository names may hold slashes, so paths are read from the end.
#[derive(Debug, Clone)]
pub(super) enum Route {
    /// `/v2/`.
    Base,
    Manifest {
        repo: String,
        reference: String,
    },
    Blob {
        repo: String,
        digest: String,
    },
    /// `/v2/<name>/blobs/uploads/`.
    UploadStart {
        repo: String,
    },
    /// `/v2/<name>/blobs/uploads/<id>`.
    Upload {
        repo: String,
        id: String,
    },
    Referrers {
        repo: String,
        digest: String,
    },
    Tags {
        repo: String,
    },
    Other,
}

impl Route {
    pub(super) fn parse(rest: &str) -> Route {
        if rest.is_empty() {
            return Route::Base;
        }
        let segs: Vec<&str> = rest.split('/').collect();
        let n = segs.len();
        let name = |k: usize| segs[..n - k].join("/");
        let last = segs[n - 1].to_string();
        if n >= 4 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
            return if last.is_empty() {
                Route::UploadStart { repo: name(3) }
            } else {
                Route::Upload {
                    repo: name(3),
                    id: last,
                }
            };
        }
        if n < 3 {
            return Route::Other;
        }
        match segs[n - 2] {
            "blobs" if last == "uploads" => Route::UploadStart { repo: name(2) },
            "manifests" => Route::Manifest {
                repo: name(2),
                reference: last,
            },
            "blobs" => Route::Blob {
                repo: name(2),
                digest: last,
            },
            "referrers" => Route::Referrers {
                repo: name(2),
                digest: last,
            },
            "tags" if last == "list" => Route::Tags { repo: name(2) },
            _ => Route::Other,
        }
    }

    pub(super) fn repo(&self) -> Option<&str> {
        match self {
            Route::Manifest { repo, .. }
            | Route::Blob { repo, .. }
            | Route::UploadStart { repo }
            | Route::Upload { repo, .. }
            | Route::Referrers { repo, .. }
            | Route::Tags { repo } => Some(repo),
            Route::Base | Route::Other => None,
        }
    }

    pub(super) fn action(&self, method: &Method) -> Option<EcrAction> {
        Some(match (self, method) {
            (Route::Manifest { .. }, &Method::PUT) => EcrAction::PutImage,
            (Route::Manifest { .. }, &Method::GET | &Method::HEAD) => EcrAction::BatchGetImage,
            (Route::UploadStart { .. }, &Method::POST) => EcrAction::InitiateLayerUpload,
            (Route::Upload { .. }, &Method::PATCH) => EcrAction::UploadLayerPart,
            (Route::Upload { .. }, &Method::PUT) => EcrAction::CompleteLayerUpload,
            (Route::Blob { .. }, &Method::HEAD) => EcrAction::BatchCheckLayerAvailability,
            (Route::Blob { .. }, &Method::GET) => EcrAction::GetDownloadUrlForLayer,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_route_from_the_end() {
        let r = Route::parse("team/api/manifests/v1");
        assert!(
            matches!(r, Route::Manifest { ref repo, ref reference } if repo == "team/api" && reference == "v1")
        );
        let r = Route::parse("team/api/blobs/uploads/");
        assert!(matches!(r, Route::UploadStart { ref repo } if repo == "team/api"));
        let r = Route::parse("a/blobs/uploads/123");
        assert!(matches!(r, Route::Upload { ref repo, ref id } if repo == "a" && id == "123"));
        let r = Route::parse("a/b/c/blobs/sha256:00");
        assert!(matches!(r, Route::Blob { ref repo, .. } if repo == "a/b/c"));
        assert!(matches!(Route::parse(""), Route::Base));
        assert!(matches!(Route::parse("_catalog"), Route::Other));
    }
}
