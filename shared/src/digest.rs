//! Content digests (`sha256:<hex>`) and a streaming SHA-256 verifier.
//!
//! Only sha256 is accepted: it is what every registry we target writes, and refusing the rest keeps
//! "every byte is verified" true instead of silently skipping an algorithm we cannot check.

use std::fmt;

/// A validated `sha256:<64 lowercase hex>` digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

/// A string that is not a digest we can verify.
#[derive(Debug, thiserror::Error)]
#[error("invalid digest {value:?}: {reason}")]
pub struct DigestError {
    /// The rejected text.
    pub value: String,
    /// Why it was rejected.
    pub reason: &'static str,
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(value: &str) -> Result<Digest, DigestError> {
        let err = |reason| DigestError {
            value: value.to_string(),
            reason,
        };
        let (algorithm, hex) = value
            .split_once(':')
            .ok_or_else(|| err("missing algorithm"))?;
        if algorithm != "sha256" {
            return Err(err("only sha256 digests are supported"));
        }
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(err("expected 64 lowercase hex characters"));
        }
        Ok(Digest(value.to_string()))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        let mut hasher = Sha256Stream::new();
        hasher.update(bytes);
        hasher.finish()
    }

    /// The whole digest, `sha256:…`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex part, without the algorithm.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// A short form for humans: `sha256:0123456789ab`.
    pub fn short(&self) -> &str {
        &self.0[.."sha256:".len() + 12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Incremental SHA-256 over a byte stream (aws-lc, which uses the CPU's SHA extensions).
pub struct Sha256Stream(aws_lc_rs::digest::Context);

impl Default for Sha256Stream {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256Stream {
    /// A fresh hasher.
    pub fn new() -> Self {
        Sha256Stream(aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256))
    }

    /// Feeds more bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        let sum = self.0.finish();
        let mut out = String::with_capacity(7 + 64);
        out.push_str("sha256:");
        for b in sum.as_ref() {
            out.push_str(&format!("{b:02x}"));
        }
        Digest(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_is_the_well_known_value() {
        assert_eq!(
            Digest::of(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn parse_rejects_other_algorithms_and_bad_hex() {
        assert!(Digest::parse("sha512:abcd").is_err());
        assert!(Digest::parse("sha256:ABC").is_err());
        assert!(Digest::parse("e3b0c442").is_err());
        let d = Digest::of(b"x");
        assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
        assert_eq!(d.short().len(), 19);
    }
}
