//! Syntax of the names a config holds: registry hosts, repository paths (the OCI distribution
//! grammar, checked by hand), source URIs, registry endpoints, ECR hosts and KMS key ARNs.
//!
//! Every checker is a pure function returning either the parsed value or a message meant to follow
//! `path: ` in a [`Problem`](super::Problem); messages quote the bad input.

/// ECR rejects repository names longer than this (`CreateRepository`: 2–256 characters).
pub const MAX_REPOSITORY_PATH_LEN: usize = 256;

/// The account and region encoded in an Amazon ECR registry host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrHost {
    /// The 12-digit AWS account id (`123456789012`).
    pub account: String,
    /// The AWS region (`us-east-1`, `cn-north-1`, `us-gov-west-1`).
    pub region: String,
}

/// Parses an ECR registry host: `ACCOUNT.dkr.ecr.REGION.amazonaws.com`, the FIPS form
/// `ACCOUNT.dkr.ecr-fips.REGION.amazonaws.com`, the China partition's `….amazonaws.com.cn`, and
/// the dual-stack (IPv6) forms `ACCOUNT.dkr-ecr.REGION.on.aws` and `ACCOUNT.dkr-ecr-fips.REGION.on.aws`.
/// Returns `None` for anything else, including an ECR host with a `:port`.
pub fn is_ecr_host(host: &str) -> Option<EcrHost> {
    let (account, region) = if let Some(rest) = host.strip_suffix(".on.aws") {
        let (account, rest) = rest.split_once('.')?;
        let region = rest
            .strip_prefix("dkr-ecr.")
            .or_else(|| rest.strip_prefix("dkr-ecr-fips."))?;
        (account, region)
    } else {
        let rest = host
            .strip_suffix(".amazonaws.com")
            .or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
        let (account, rest) = rest.split_once('.')?;
        let region = rest
            .strip_prefix("dkr.ecr.")
            .or_else(|| rest.strip_prefix("dkr.ecr-fips."))?;
        (account, region)
    };
    let account_ok = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
    let region_ok = !region.is_empty()
        && !region.starts_with('-')
        && !region.ends_with('-')
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    (account_ok && region_ok).then(|| EcrHost {
        account: account.to_owned(),
        region: region.to_owned(),
    })
}

/// Checks `host[:port]`: DNS labels (ASCII letters, digits, `-`, separated by `.`) or an IPv4
/// address, then an optional port 1–65535. IPv6 literals are not supported.
pub fn check_host(host: &str) -> Result<(), String> {
    if host.contains("://") {
        return Err(format!("{host:?} must be host[:port] without a scheme"));
    }
    if host.contains('/') {
        return Err(format!("{host:?} must be host[:port] without a path"));
    }
    let (name, port) = match host.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "{host:?} is not a valid host[:port] (host names hold letters, digits, '-' and '.')"
        ));
    }
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && matches!(port.parse::<u32>(), Ok(1..=65535));
        if !valid {
            return Err(format!(
                "{host:?} has an invalid port (expected a number 1-65535)"
            ));
        }
    }
    Ok(())
}

/// Checks a repository path: components matching `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` joined by
/// `/`, at most [`MAX_REPOSITORY_PATH_LEN`] characters. `what` names the field in messages.
pub fn check_repository_path(path: &str, what: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if let Some(c) = path.chars().find(|c| "*?[]{}".contains(*c)) {
        return Err(format!(
            "{what} {path:?} must not contain glob characters (found '{c}'); list each repository separately"
        ));
    }
    if let Some((_, digest)) = path.split_once('@') {
        return Err(format!(
            "{what} {path:?} must not include a digest (\"@{digest}\"); images are selected by tag with `tags`"
        ));
    }
    if let Some((_, tag)) = path.rsplit_once(':') {
        return Err(format!(
            "{what} {path:?} must not include a tag (\":{tag}\"); select tags with `tags`"
        ));
    }
    if path.len() > MAX_REPOSITORY_PATH_LEN {
        return Err(format!(
            "{what} is {} characters long; ECR allows at most {MAX_REPOSITORY_PATH_LEN}",
            path.len()
        ));
    }
    if let Some(bad) = path.split('/').find(|c| !is_path_component(c)) {
        return Err(if bad.is_empty() {
            format!("{what} {path:?} has an empty component (leading, trailing or double '/')")
        } else {
            format!(
                "{what} {path:?} has an invalid component {bad:?}: use lower-case letters and digits, \
                 separated by '.', '_', '__' or '-'"
            )
        });
    }
    Ok(())
}

/// Longest tag the OCI distribution spec allows.
pub const MAX_TAG_LEN: usize = 128;

/// Checks a tag against the OCI grammar `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`, so it cannot
/// change the meaning of a URL it is put in.
pub fn check_tag(tag: &str) -> Result<(), String> {
    let ok_first = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let ok_rest = |b: u8| ok_first(b) || b == b'.' || b == b'-';
    let bytes = tag.as_bytes();
    match bytes.split_first() {
        None => Err("the tag is empty".to_string()),
        Some(_) if bytes.len() > MAX_TAG_LEN => Err(format!(
            "the tag is {} characters long; at most {MAX_TAG_LEN} are allowed",
            bytes.len()
        )),
        Some((first, rest)) if ok_first(*first) && rest.iter().all(|b| ok_rest(*b)) => Ok(()),
        Some(_) => Err(format!(
            "{tag:?} is not a tag: letters, digits and '_', then also '.' and '-', at most \
             {MAX_TAG_LEN} characters"
        )),
    }
}

/// One component of the OCI distribution name grammar: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_path_component(component: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = component.as_bytes();
    let mut i = 0;
    loop {
        // A run of at least one [a-z0-9].
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        // A separator: '.', '_', '__' or one or more '-'; it must be followed by another run.
        let sep = i;
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += if bytes.get(i + 1) == Some(&b'_') {
                    2
                } else {
                    1
                }
            }
            b'-' => {
                while i < bytes.len() && bytes[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        debug_assert!(i > sep);
    }
}

/// Splits a source URI `host[:port]/path` into host and repository path, checking both.
pub fn parse_source(uri: &str) -> Result<(String, String), String> {
    if let Some(c) = uri.chars().find(|c| "*?[]{}".contains(*c)) {
        return Err(format!(
            "{uri:?} must not contain glob characters (found '{c}'); list each repository separately"
        ));
    }
    if let Some((scheme, _)) = uri.split_once("://") {
        return Err(format!(
            "{uri:?} must not include a scheme (remove \"{scheme}://\")"
        ));
    }
    let example = "e.g. 111122223333.dkr.ecr.us-east-1.amazonaws.com/my-app";
    let Some((host, path)) = uri.split_once('/') else {
        return Err(format!(
            "{uri:?} must be a full repository URI host/path ({example})"
        ));
    };
    if !(host.contains('.') || host.contains(':') || host == "localhost") {
        return Err(format!(
            "{uri:?} must start with a registry host (a name with '.' or ':', or localhost; {example})"
        ));
    }
    check_host(host).map_err(|e| format!("registry host {e}"))?;
    if path.is_empty() {
        return Err(format!(
            "{uri:?} names no repository after the host ({example})"
        ));
    }
    check_repository_path(path, "repository path")?;
    Ok((host.to_owned(), path.to_owned()))
}

/// Checks a destination repository path, which must not start with a registry host.
pub fn check_destination(path: &str) -> Result<(), String> {
    if let Some((first, _)) = path.split_once('/') {
        if first.contains('.') || first.contains(':') || first == "localhost" {
            return Err(format!(
                "{path:?} starts with a registry host ({first:?}); give only the repository path \
                 and set `destination_registry` to choose the registry"
            ));
        }
    }
    check_repository_path(path, "destination")
}

/// Parses a registry endpoint `http(s)://host[:port][/]`, returning it without the trailing `/`
/// and whether it is plain HTTP.
pub fn parse_endpoint(endpoint: &str) -> Result<(String, bool), String> {
    let (rest, plain) = if let Some(rest) = endpoint.strip_prefix("https://") {
        (rest, false)
    } else if let Some(rest) = endpoint.strip_prefix("http://") {
        (rest, true)
    } else {
        return Err(format!(
            "{endpoint:?} must start with https:// or http:// (e.g. https://127.0.0.1:5443)"
        ));
    };
    let host = rest.strip_suffix('/').unwrap_or(rest);
    if host.contains(['/', '?', '#']) {
        return Err(format!(
            "{endpoint:?} must be scheme://host[:port] without a path, query or fragment"
        ));
    }
    if host.contains('@') {
        return Err(format!(
            "{endpoint:?} must not hold credentials; use username_env and password_env"
        ));
    }
    check_host(host).map_err(|e| format!("endpoint host {e}"))?;
    Ok((
        endpoint.strip_suffix('/').unwrap_or(endpoint).to_owned(),
        plain,
    ))
}

/// Checks a KMS key ARN loosely: `arn:aws…` (any partition) containing `:kms:`.
pub fn check_kms_key_arn(arn: &str) -> Result<(), String> {
    if arn.starts_with("arn:aws") && arn.contains(":kms:") {
        Ok(())
    } else {
        Err(format!(
            "{arn:?} is not a KMS key ARN (expected arn:aws:kms:REGION:ACCOUNT:key/ID)"
        ))
    }
}

/// Checks an environment variable name: non-empty, without `=` or NUL.
pub fn check_env_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains(['=', '\0']) {
        Err(format!(
            "{name:?} is not an environment variable name (non-empty, no '=' or NUL)"
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_follow_the_oci_grammar() {
        for ok in [
            "v1",
            "latest",
            "_x",
            "1.2.3-rc.1",
            "A_b-C.d",
            &"a".repeat(MAX_TAG_LEN),
        ] {
            assert_eq!(check_tag(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ".v1",
            "-v1",
            "v1/../x",
            "../../other/manifests/v1",
            "v1?x=1",
            "v1#x",
            "v 1",
            "sha256:abc",
            "é",
            &"a".repeat(MAX_TAG_LEN + 1),
        ] {
            assert!(check_tag(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ecr_hosts() {
        let h = is_ecr_host("123456789012.dkr.ecr.us-east-1.amazonaws.com").unwrap();
        assert_eq!(
            (h.account.as_str(), h.region.as_str()),
            ("123456789012", "us-east-1")
        );
        let h = is_ecr_host("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com").unwrap();
        assert_eq!(h.region, "us-gov-west-1");
        let h = is_ecr_host("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn").unwrap();
        assert_eq!(h.region, "cn-north-1");
        let h = is_ecr_host("123456789012.dkr-ecr.eu-west-1.on.aws").unwrap();
        assert_eq!(
            (h.account.as_str(), h.region.as_str()),
            ("123456789012", "eu-west-1")
        );
        let h = is_ecr_host("123456789012.dkr-ecr-fips.us-east-1.on.aws").unwrap();
        assert_eq!(h.region, "us-east-1");
        assert!(is_ecr_host("123456789012.dkr.ecr.us-east-1.on.aws").is_none());
        for not in [
            "123456789012.dkr.ecr.us-east-1.amazonaws.com:443",
            "12345678901.dkr.ecr.us-east-1.amazonaws.com",
            "12345678901a.dkr.ecr.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr..amazonaws.com",
            "123456789012.ecr.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr.us-east-1.example.com",
            "public.ecr.aws",
            "localhost:5000",
        ] {
            assert_eq!(is_ecr_host(not), None, "{not}");
        }
    }

    #[test]
    fn path_components() {
        for ok in [
            "a",
            "my-app",
            "a--b",
            "a__b",
            "a_b",
            "a.b",
            "0",
            "x1.y2-z3__w",
        ] {
            assert!(is_path_component(ok), "{ok}");
        }
        for bad in [
            "", "A", "-a", "a-", "a___b", "a..b", "a._b", "a_", ".a", "a b", "ü",
        ] {
            assert!(!is_path_component(bad), "{bad}");
        }
    }

    #[test]
    fn repository_paths() {
        assert!(check_repository_path("my-app/backend", "x").is_ok());
        assert!(check_repository_path(&"a".repeat(257), "x").is_err());
        let e = check_repository_path("my-app//x", "x").unwrap_err();
        assert!(e.contains("empty component"), "{e}");
        let e = check_repository_path("My-App", "x").unwrap_err();
        assert!(e.contains("invalid component \"My-App\""), "{e}");
    }

    #[test]
    fn sources() {
        let host = "111122223333.dkr.ecr.us-east-1.amazonaws.com";
        let (h, p) = parse_source(&format!("{host}/my-app/backend")).unwrap();
        assert_eq!((h.as_str(), p.as_str()), (host, "my-app/backend"));
        assert!(parse_source("localhost/a").is_ok());
        assert!(parse_source("127.0.0.1:5000/a/b").is_ok());
        for (bad, needle) in [
            ("reg.io/app*", "glob characters (found '*')"),
            ("https://reg.io/app", "scheme (remove \"https://\")"),
            ("reg.io", "full repository URI"),
            ("reg.io/", "names no repository"),
            ("myorg/app", "must start with a registry host"),
            ("reg.io/app:v1", "must not include a tag (\":v1\")"),
            ("reg.io/app@sha256:abc", "must not include a digest"),
            ("reg.io:99999/app", "invalid port"),
            ("reg.io/App", "invalid component \"App\""),
        ] {
            let e = parse_source(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn destinations_hosts_endpoints() {
        assert!(check_destination("foo.bar").is_ok());
        assert!(check_destination("team/app").is_ok());
        assert!(check_destination("reg.io/app")
            .unwrap_err()
            .contains("registry host"));
        assert!(check_destination("localhost/app").is_err());
        assert!(check_host("reg.io:5000").is_ok());
        assert!(check_host("https://reg.io").unwrap_err().contains("scheme"));
        assert!(check_host("reg.io/x").unwrap_err().contains("path"));
        assert!(check_host("reg_io").is_err());
        assert_eq!(
            parse_endpoint("https://127.0.0.1:5443/").unwrap(),
            ("https://127.0.0.1:5443".to_owned(), false)
        );
        assert!(parse_endpoint("http://localhost:5000").unwrap().1);
        assert!(parse_endpoint("ftp://x").unwrap_err().contains("https://"));
        assert!(parse_endpoint("https://x/v2/")
            .unwrap_err()
            .contains("without a path"));
        assert!(parse_endpoint("https://u:p@x")
            .unwrap_err()
            .contains("credentials"));
    }

    #[test]
    fn arns_and_env_names() {
        assert!(check_kms_key_arn("arn:aws:kms:us-east-1:111122223333:key/abc").is_ok());
        assert!(check_kms_key_arn("arn:aws-cn:kms:cn-north-1:111122223333:key/abc").is_ok());
        assert!(check_kms_key_arn("arn:aws:s3:::bucket").is_err());
        assert!(check_kms_key_arn("key/abc").is_err());
        assert!(check_env_name("REG_USER").is_ok());
        assert!(check_env_name("").is_err());
        assert!(check_env_name("A=B").is_err());
    }
}
