//! Where a config comes from: a local file or an S3 object (`s3://bucket/key`). This is the
//! I/O; [`crate::config`] only parses and validates the bytes.
//!
//! Relative `ca_file` paths in a file config are resolved against the file's directory; in an S3
//! config against the process's working directory.

use crate::aws::Aws;
use crate::config::{Config, ConfigError, Files};
use std::path::Path;

/// Loads and validates the config at `location`: a local path or `s3://bucket/key`.
///
/// Every failure is a [`ConfigError`]: unreadable (missing file, S3 error, not UTF-8), not JSON,
/// or invalid (every problem listed).
pub async fn load(location: &str, aws: &Aws) -> Result<Config, ConfigError> {
    load_versioned(location, aws)
        .await
        .map(|(config, _)| config)
}

/// Like [`load`], and also names the version read: the S3 object's version id (or its ETag in
/// an unversioned bucket), or `sha256:` and the first 16 hex digits of a local file's bytes.
/// Runs record it, so an operator can tell which config planned them.
pub async fn load_versioned(location: &str, aws: &Aws) -> Result<(Config, String), ConfigError> {
    if let Some(rest) = location.strip_prefix("s3://") {
        let (bucket, key) = parse_s3(rest).ok_or_else(|| {
            ConfigError::unreadable(location, "an S3 location must look like s3://bucket/key")
        })?;
        let (bytes, version) = crate::aws::read_object(aws, bucket, key)
            .await
            .map_err(|message| ConfigError::unreadable(location, message))?;
        let text = utf8(location, bytes)?;
        let files = Files {
            base_dir: None,
            readable: &readable_file,
        };
        return Ok((Config::from_json(&text, location, files)?, version));
    }
    if location.is_empty() {
        return Err(ConfigError::unreadable(
            location,
            "no config location given",
        ));
    }
    if let Some((scheme, _)) = location.split_once("://") {
        return Err(ConfigError::unreadable(
            location,
            format!("unsupported scheme {scheme:?}; use a local path or s3://bucket/key"),
        ));
    }
    let bytes = tokio::fs::read(location)
        .await
        .map_err(|err| ConfigError::unreadable(location, err.to_string()))?;
    let version = format!("sha256:{}", &crate::digest::Digest::of(&bytes).hex()[..16]);
    let text = utf8(location, bytes)?;
    let files = Files {
        base_dir: Path::new(location).parent(),
        readable: &readable_file,
    };
    Ok((Config::from_json(&text, location, files)?, version))
}

/// Whether a file a config names (a CA bundle) exists, is a file, and can be opened.
pub fn readable_file(path: &Path) -> Result<(), String> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => return Err(format!("{shown:?} is not a file")),
        Ok(_) => {}
        Err(err) => return Err(format!("cannot read CA file {shown:?}: {err}")),
    }
    std::fs::File::open(path).map_err(|err| format!("cannot read CA file {shown:?}: {err}"))?;
    Ok(())
}

/// Splits `bucket/key`; both parts must be non-empty.
fn parse_s3(rest: &str) -> Option<(&str, &str)> {
    let (bucket, key) = rest.split_once('/')?;
    (!bucket.is_empty() && !key.is_empty()).then_some((bucket, key))
}

fn utf8(location: &str, bytes: Vec<u8>) -> Result<String, ConfigError> {
    String::from_utf8(bytes).map_err(|err| {
        ConfigError::unreadable(location, format!("the config is not UTF-8 text: {err}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::Aws;
    use crate::config::ConfigErrorKind;

    #[test]
    fn s3_locations() {
        assert_eq!(parse_s3("b/k/x.json"), Some(("b", "k/x.json")));
        assert_eq!(parse_s3("b/"), None);
        assert_eq!(parse_s3("b"), None);
        assert_eq!(parse_s3("/k"), None);
    }

    #[tokio::test]
    async fn local_files_and_bad_locations() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
        let file = dir.path().join("config.json");
        std::fs::write(
            &file,
            r#"{"registries": {"reg.io": {"ca_file": "ca.pem"}}}"#,
        )
        .unwrap();
        let config = load(file.to_str().unwrap(), &Aws::new()).await.unwrap();
        assert_eq!(
            config.registry("reg.io").ca_file,
            Some(dir.path().join("ca.pem"))
        );

        let missing = dir.path().join("missing.json");
        let err = load(missing.to_str().unwrap(), &Aws::new())
            .await
            .unwrap_err();
        assert_eq!(err.kind, ConfigErrorKind::Unreadable);
        for bad in ["", "s3://bucket", "https://x/c.json"] {
            assert_eq!(
                load(bad, &Aws::new()).await.unwrap_err().kind,
                ConfigErrorKind::Unreadable,
                "{bad}"
            );
        }
        std::fs::write(&file, [0xff, 0xfe]).unwrap();
        let err = load(file.to_str().unwrap(), &Aws::new()).await.unwrap_err();
        assert!(err.to_string().contains("not UTF-8"), "{err}");
    }
}
