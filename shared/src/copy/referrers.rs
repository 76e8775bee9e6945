//! Referrers follow their image: the OCI 1.1 manifests whose `subject` is a copied image —
//! cosign signatures and attestations, Notation signatures, SBOMs — are copied with it, under
//! the same digests, so a destination that verifies signatures accepts the copy.
//!
//! For one subject: list its referrers at the source (the referrers API, else the tag-schema
//! index `sha256-<hex>`) and at the destination (the same way); copy each one the destination
//! does not list (its blobs, then the manifest by digest); when the destination did not answer
//! a push with `OCI-Subject` (it has no referrers API), list the referrer in the destination's
//! tag-schema index. Then the same for each referrer's own referrers (a signature on an SBOM),
//! down to [`MAX_DEPTH`] levels. A subject without referrers costs one request (two where the
//! source has no referrers API, none when planning's tag listing shows it has no tag-schema
//! index: [`ReferrerCopy::source_schema_tags`]).
//!
//! The tag-schema index is read, extended and written back: two copies adding referrers to one
//! subject at the same moment can lose one entry (the OCI spec's own caveat); the next copy of
//! that image lists it again.

use super::{CopyError, ImageCopy};
use crate::digest::Digest;
use crate::manifest::OCI_INDEX;
use crate::registry::{schema_tag, Listing, Manifest, Referrer, Registry, RegistryError};
use crate::retry::Transient;
use std::collections::HashSet;

/// Levels of referrers copied below an image: its referrers, theirs (a signature on an SBOM),
/// and one more.
pub const MAX_DEPTH: usize = 3;

/// What copying an image's referrers did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReferrerCount {
    /// Referrers copied.
    pub copied: u32,
    /// Referrers the destination listed already.
    pub present: u32,
    /// Referrers left out: gone from the source since it listed them, of a manifest type this
    /// tool does not copy, or refused by the destination (each logged as a warning).
    pub skipped: u32,
    /// Bytes of blobs streamed for them.
    pub bytes: u64,
}

impl std::ops::AddAssign for ReferrerCount {
    fn add_assign(&mut self, o: ReferrerCount) {
        self.copied += o.copied;
        self.present += o.present;
        self.skipped += o.skipped;
        self.bytes += o.bytes;
    }
}

/// The referrers of images copied by one [`ImageCopy`].
pub struct ReferrerCopy<'a> {
    /// The copy between the two repositories.
    pub image: &'a ImageCopy<'a>,
    /// Artifact types of an image's own referrers to copy; empty: every type. The referrers of
    /// a copied referrer are copied whatever their type: they vouch for what was copied.
    pub artifact_types: &'a [String],
    /// When the source repository has no referrers API: the tag-schema tags its listing
    /// showed, so a subject without one is known to have no referrers without asking.
    pub source_schema_tags: Option<&'a HashSet<String>>,
}

/// The referrers of `subject` in the source repository `repo` whose type `artifact_types`
/// selects (at `depth` 0; below, every type): none without a request when `schema_tags` (the
/// repository has no referrers API) lacks the subject's tag.
async fn at_source(
    src: &Registry,
    repo: &str,
    subject: &Digest,
    depth: usize,
    artifact_types: &[String],
    schema_tags: Option<&HashSet<String>>,
) -> Result<Vec<Referrer>, RegistryError> {
    if schema_tags.is_some_and(|tags| !tags.contains(&schema_tag(subject))) {
        return Ok(Vec::new());
    }
    let wants = |r: &Referrer| {
        depth > 0
            || artifact_types.is_empty()
            || r.artifact_type
                .as_ref()
                .is_some_and(|t| artifact_types.contains(t))
    };
    let mut listed = src.referrers(repo, subject).await?.referrers().to_vec();
    listed.retain(wants);
    Ok(listed)
}

/// Whether the destination lacks any referrer of `subject` (at the top level, of the selected
/// types) that the source has: the warm run's check for a signature added after the image was
/// copied. One source request (none for a subject without a tag-schema tag on a source without
/// the referrers API), plus one at the destination when the source has some.
pub async fn lacks_referrers(
    (src, src_repo): (&Registry, &str),
    (dst, dst_repo): (&Registry, &str),
    subject: &Digest,
    artifact_types: &[String],
    source_schema_tags: Option<&HashSet<String>>,
) -> Result<bool, RegistryError> {
    let wanted = at_source(
        src,
        src_repo,
        subject,
        0,
        artifact_types,
        source_schema_tags,
    )
    .await?;
    if wanted.is_empty() {
        return Ok(false);
    }
    let at_dst = dst.referrers(dst_repo, subject).await?;
    let present: HashSet<&Digest> = at_dst.referrers().iter().map(|r| &r.digest).collect();
    Ok(wanted.iter().any(|r| !present.contains(&r.digest)))
}

impl ReferrerCopy<'_> {
    /// Copies the referrers of `subject` (already at the destination, or about to be), and
    /// theirs, down to [`MAX_DEPTH`] levels.
    pub async fn copy(&self, subject: &Digest) -> Result<ReferrerCount, CopyError> {
        let mut count = ReferrerCount::default();
        self.level(subject, 0, &mut count).await?;
        Ok(count)
    }

    async fn level(
        &self,
        subject: &Digest,
        depth: usize,
        count: &mut ReferrerCount,
    ) -> Result<(), CopyError> {
        let img = self.image;
        let wanted = at_source(
            img.src,
            img.src_repo,
            subject,
            depth,
            self.artifact_types,
            self.source_schema_tags,
        )
        .await?;
        if wanted.is_empty() {
            return Ok(());
        }
        let at_dst = img.dst.referrers(img.dst_repo, subject).await?;
        let present: HashSet<&Digest> = at_dst.referrers().iter().map(|r| &r.digest).collect();
        let mut unlisted = Vec::new();
        for r in &wanted {
            if present.contains(&r.digest) {
                count.present += 1;
            } else {
                match self.push(subject, r, count).await? {
                    Some((true, _)) => count.copied += 1,
                    Some((false, listed)) => {
                        count.copied += 1;
                        unlisted.push(listed);
                    }
                    None => {
                        count.skipped += 1;
                        continue;
                    }
                }
            }
            if depth + 1 < MAX_DEPTH {
                Box::pin(self.level(&r.digest, depth + 1, count)).await?;
            }
        }
        if !unlisted.is_empty() {
            self.list_in_schema(subject, &at_dst, &unlisted).await?;
        }
        Ok(())
    }

    /// Copies one referrer of `subject` and pushes it by digest: `Some((indexed, listed))` —
    /// whether the destination answered `OCI-Subject`, and the referrer as a tag-schema index
    /// lists it (from its manifest, as the spec asks) — or `None` when it is left out (see
    /// [`ReferrerCount::skipped`]).
    async fn push(
        &self,
        subject: &Digest,
        r: &Referrer,
        count: &mut ReferrerCount,
    ) -> Result<Option<(bool, Referrer)>, CopyError> {
        let img = self.image;
        let Some(m) = img
            .src
            .get_manifest(img.src_repo, r.digest.as_str())
            .await?
        else {
            tracing::warn!(referrer = %r.digest, "a listed referrer is gone from the source; left out");
            return Ok(None);
        };
        // A referrer that cannot be copied for good (a manifest type this tool does not copy,
        // content the source lacks, a destination that refuses it) is that referrer's problem,
        // not the image's: it is left out and said so. A transient failure fails the job, whose
        // retry copies the referrers again.
        let copied = match img.content(&m).await {
            Ok(bytes) => img
                .dst
                .put_referrer(img.dst_repo, subject, &m)
                .await
                .map(|indexed| (bytes, indexed))
                .map_err(CopyError::from),
            Err(e) => Err(e),
        };
        match copied {
            Ok((bytes, indexed)) => {
                count.bytes += bytes;
                Ok(Some((indexed, Referrer::of_manifest(&m))))
            }
            Err(e) if !e.is_transient() => {
                tracing::warn!(referrer = %r.digest, error = %e, "a referrer that cannot be copied; left out");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Adds `add` to the destination's tag-schema index of `subject`.
    async fn list_in_schema(
        &self,
        subject: &Digest,
        at_dst: &Listing,
        add: &[Referrer],
    ) -> Result<(), CopyError> {
        let img = self.image;
        let mut listed = match at_dst {
            Listing::TagSchema(listed) => listed.clone(),
            // An API that did not index a push (no OCI-Subject): the spec sends the pusher to
            // the tag schema all the same.
            Listing::Api(_) => img.dst.schema_referrers(img.dst_repo, subject).await?,
        };
        for r in add {
            if !listed.iter().any(|l| l.digest == r.digest) {
                listed.push(r.clone());
            }
        }
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": listed.iter().map(|r| &r.descriptor).collect::<Vec<_>>(),
        });
        let bytes = bytes::Bytes::from(serde_json::to_vec(&index).expect("JSON values serialise"));
        let m = Manifest {
            media_type: OCI_INDEX.to_string(),
            digest: Digest::of(&bytes),
            bytes,
        };
        img.dst
            .put_manifest(img.dst_repo, &schema_tag(subject), &m)
            .await?;
        Ok(())
    }
}
