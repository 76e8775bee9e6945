//! What to do with one tag, decided from digests alone (no I/O).

use crate::digest::Digest;

/// The decision for one tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The destination already holds the source digest under the tag.
    UpToDate,
    /// The image must be copied.
    Copy,
    /// The destination tag is immutable and holds a different image: a permanent failure.
    ImmutableConflict {
        /// What the destination tag holds.
        existing: Digest,
    },
}

/// Compares the source digest with what the destination tag holds (`None`: tag absent).
pub fn decide(source: &Digest, destination: Option<&Digest>, immutable_tags: bool) -> Decision {
    match destination {
        Some(d) if d == source => Decision::UpToDate,
        Some(d) if immutable_tags => Decision::ImmutableConflict {
            existing: d.clone(),
        },
        _ => Decision::Copy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_digests_are_up_to_date_even_when_immutable() {
        let a = Digest::of(b"a");
        assert_eq!(decide(&a, Some(&a), true), Decision::UpToDate);
        assert_eq!(decide(&a, Some(&a), false), Decision::UpToDate);
    }

    #[test]
    fn absent_or_different_tags_are_copied_unless_immutable() {
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        assert_eq!(decide(&a, None, true), Decision::Copy);
        assert_eq!(decide(&a, Some(&b), false), Decision::Copy);
        assert_eq!(
            decide(&a, Some(&b), true),
            Decision::ImmutableConflict { existing: b }
        );
    }
}
