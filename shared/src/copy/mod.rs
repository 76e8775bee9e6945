//! The copy engine: given a source manifest already read, make the destination hold the same
//! image under the same digest. Children of an index are copied before the index; blobs go
//! through [`BlobMover`]; manifests are pushed as the exact source bytes.

mod blobs;
pub mod decide;
pub mod platforms;
mod referrers;

pub use blobs::BlobMover;
pub use decide::{decide, Decision};
pub use referrers::{lacks_referrers, ReferrerCopy, ReferrerCount, MAX_DEPTH};

use crate::job::JobError;
use crate::manifest::{self, Contents, ManifestError};
use crate::registry::{Manifest, Registry, RegistryError};
use crate::retry::Transient;
use crate::vocab::ErrorClass;
use std::time::Duration;

/// Why a copy failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A registry request failed (after retries, when retryable).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The source manifest cannot be copied.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The destination tag is immutable and holds another image.
    #[error("destination tag {tag:?} is immutable and holds {existing}, not {wanted}")]
    ImmutableTag {
        /// The tag.
        tag: String,
        /// The digest the destination holds.
        existing: String,
        /// The source digest.
        wanted: String,
    },
    /// A child manifest named by an index is missing at the source.
    #[error("index references {0}, which the source does not have")]
    MissingChild(String),
    /// The platforms wanted cannot be selected from the index.
    #[error("{0}")]
    Platforms(String),
}

impl CopyError {
    /// The failure class for the ledger and reports.
    pub fn class(&self) -> ErrorClass {
        match self {
            CopyError::Registry(e) => e.class(),
            CopyError::Manifest(_) | CopyError::Platforms(_) => ErrorClass::Unsupported,
            CopyError::ImmutableTag { .. } => ErrorClass::ImmutableTag,
            CopyError::MissingChild(_) => ErrorClass::NotFound,
        }
    }
}

impl From<CopyError> for JobError {
    fn from(e: CopyError) -> JobError {
        JobError::new(e.class(), e.to_string())
    }
}

impl From<RegistryError> for JobError {
    fn from(e: RegistryError) -> JobError {
        CopyError::from(e).into()
    }
}

impl Transient for CopyError {
    fn is_transient(&self) -> bool {
        matches!(self, CopyError::Registry(e) if e.is_retryable())
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            CopyError::Registry(e) => e.kind.retry_after(),
            _ => None,
        }
    }
}

/// One image copy between two repositories.
pub struct ImageCopy<'a> {
    /// Source registry.
    pub src: &'a Registry,
    /// Source repository.
    pub src_repo: &'a str,
    /// Destination registry.
    pub dst: &'a Registry,
    /// Destination repository.
    pub dst_repo: &'a str,
    /// Whether the destination repository may already hold some of the content (it had tags
    /// before this run): then blobs and child manifests are checked before they are sent.
    pub probe: bool,
    /// The run's blob mover for this destination.
    pub blobs: &'a BlobMover,
}

impl ImageCopy<'_> {
    /// Copies what `top` (read from the source) references, so that pushing `top` under a tag
    /// is the last step — the caller's, which may check first that the tag should still move.
    /// Returns bytes streamed.
    pub async fn content(&self, m: &Manifest) -> Result<u64, CopyError> {
        match manifest::contents(&m.media_type, &m.bytes)? {
            Contents::Image { blobs } => {
                total(blobs.iter().map(|b| {
                    self.blobs.ensure(
                        self.src,
                        self.src_repo,
                        self.dst,
                        self.dst_repo,
                        b,
                        self.probe,
                    )
                }))
                .await
            }
            Contents::Index { children } => total(children.iter().map(|c| self.child(c))).await,
        }
    }

    /// Copies one child of an index and pushes it by digest.
    async fn child(&self, child: &manifest::Descriptor) -> Result<u64, CopyError> {
        let digest = child.digest.as_str();
        if self.probe
            && self
                .dst
                .head_manifest(self.dst_repo, digest)
                .await?
                .is_some()
        {
            return Ok(0);
        }
        let m = self
            .src
            .get_manifest(self.src_repo, digest)
            .await?
            .ok_or_else(|| CopyError::MissingChild(digest.to_string()))?;
        // Nested indexes are legal (rare); recursion needs a boxed future.
        let moved = Box::pin(self.content(&m)).await?;
        self.dst.put_manifest(self.dst_repo, digest, &m).await?;
        Ok(moved)
    }
}

/// Runs the copies concurrently and adds up the bytes they moved; the first error wins.
async fn total<F>(copies: impl Iterator<Item = F>) -> Result<u64, CopyError>
where
    F: std::future::Future<Output = Result<u64, CopyError>>,
{
    let mut moved = 0;
    for r in futures_util::future::join_all(copies).await {
        moved += r?;
    }
    Ok(moved)
}
