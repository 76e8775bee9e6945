//! Validation of `registries`: per-registry endpoint, TLS, credentials and auth settings.
//!
//! Part of phase two (see `validate`): keys must be `host[:port]`; a `null` entry means default

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::names::{check_env_name, check_host, is_ecr_host, parse_endpoint};
use super::raw::{quote, Obj, Problems, Reported};
use super::{Files, RegistrySettings};

const REGISTRY_FIELDS: &[&str] = &[
    "endpoint",
    "plain_http",
    "ca_file",
    "username_env",
    "password_env",
    "ecr_auth",
    "manifest_puts_per_second",
];
/// The largest `manifest_puts_per_second` (ECR grants raised quotas in the hundreds).
const MAX_MANIFEST_PUTS_PER_SECOND: u64 = 100_000;

/// Validates the `registries` map. Entries that are not objects are left out (and reported).
pub fn registries(top: &Obj, files: Files, p: &mut Problems) -> BTreeMap<String, RegistrySettings> {
    let Ok(Some(entries)) = top.map("registries", p) else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for (host, path, value) in entries {
        if let Err(message) = check_host(host) {
            p.add(&path, format!("registry key {message}"));
        }
        let Ok(settings) = Obj::open(value, &path, REGISTRY_FIELDS, p) else {
            continue;
        };
        let settings = match settings {
            Some(o) => registry(host, &o, files, p),
            None => RegistrySettings::default(),
        };
        out.insert(host.to_owned(), settings);
    }
    out
}

/// Validates one entry, keyed by `host`.
fn registry(host: &str, o: &Obj, files: Files, p: &mut Problems) -> RegistrySettings {
    let plain_http = o.bool("plain_http", p);
    let endpoint = match o.string("endpoint", p) {
        Ok(Some(endpoint)) => match parse_endpoint(endpoint) {
            Ok((endpoint, true)) if plain_http != Err(Reported) && plain_http != Ok(Some(true)) => {
                p.add(
                    &o.path("endpoint"),
                    format!(
                        "{} is plain HTTP; set plain_http to true to allow it",
                        quote(&endpoint)
                    ),
                );
                None
            }
            Ok((endpoint, _)) => Some(endpoint),
            Err(message) => {
                p.add(&o.path("endpoint"), message);
                None
            }
        },
        Ok(None) | Err(Reported) => None,
    };
    let ca_file =
        o.string("ca_file", p)
            .ok()
            .flatten()
            .and_then(|file| match ca_file(file, files) {
                Ok(path) => Some(path),
                Err(message) => {
                    p.add(&o.path("ca_file"), message);
                    None
                }
            });
    let mut env_name = |key: &str| match o.string(key, p) {
        Ok(Some(name)) => match check_env_name(name) {
            Ok(()) => Ok(Some(name.to_owned())),
            Err(message) => {
                p.add(&o.path(key), message);
                Err(Reported)
            }
        },
        other => other.map(|_| None),
    };
    let username_env = env_name("username_env");
    let password_env = env_name("password_env");
    match (&username_env, &password_env) {
        (Ok(Some(_)), Ok(None)) => p.add(
            &o.path("password_env"),
            "required when username_env is set (set both or neither)",
        ),
        (Ok(None), Ok(Some(_))) => p.add(
            &o.path("username_env"),
            "required when password_env is set (set both or neither)",
        ),
        _ => {}
    }
    let ecr_auth = o.bool("ecr_auth", p).ok().flatten();
    if ecr_auth == Some(true) && is_ecr_host(host).is_none() {
        let message = format!(
            "true requires an ECR registry host (ACCOUNT.dkr.ecr.REGION.amazonaws.com[.cn]), not {}; \
             to send an ECR host's traffic elsewhere, key the entry by the ECR host and set endpoint",
            quote(host)
        );
        p.add(&o.path("ecr_auth"), message);
    }
    let manifest_puts_per_second = o
        .integer(
            "manifest_puts_per_second",
            0,
            MAX_MANIFEST_PUTS_PER_SECOND,
            p,
        )
        .ok()
        .flatten()
        .map(|n| n as u32);
    RegistrySettings {
        manifest_puts_per_second,
        plain_http: plain_http.ok().flatten().unwrap_or(false)
            || endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://")),
        endpoint,
        ca_file,
        username_env: username_env.ok().flatten(),
        password_env: password_env.ok().flatten(),
        ecr_auth,
    }
}

/// Resolves `file` against the base directory when relative and asks the caller's check
/// whether it can be read.
fn ca_file(file: &str, files: Files) -> Result<PathBuf, String> {
    if file.is_empty() {
        return Err("must not be empty".to_owned());
    }
    let path = match files.base_dir {
        Some(base) if Path::new(file).is_relative() => base.join(file),
        _ => PathBuf::from(file),
    };
    (files.readable)(&path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use crate::config::tests::{local_files, one_problem, parse, ECR};
    use crate::config::Config;

    #[test]
    fn registry_rules() {
        let config = parse(json!({"registries": {
            ECR: {"endpoint": "https://127.0.0.1:5443/", "ecr_auth": true},
            "127.0.0.1:5000": {"endpoint": "http://127.0.0.1:5000", "plain_http": true, "ecr_auth": false,
                               "username_env": "REG_USER", "password_env": "REG_PASS"}
        }}))
        .unwrap();
        let ecr = config.registry(ECR);
        assert_eq!(ecr.endpoint.as_deref(), Some("https://127.0.0.1:5443"));
        assert!(ecr.uses_ecr_auth(ECR) && !ecr.plain_http);
        let local = config.registry("127.0.0.1:5000");
        assert!(local.plain_http && !local.uses_ecr_auth("127.0.0.1:5000"));
        assert_eq!(local.username_env.as_deref(), Some("REG_USER"));

        let reg = |settings: serde_json::Value| json!({"registries": {"reg.io": settings}});
        let at = |field: &str| format!("registries[\"reg.io\"].{field}");
        one_problem(
            reg(json!({"endpoint": "https://x/v2"})),
            &at("endpoint"),
            "without a path",
        );
        one_problem(
            reg(json!({"endpoint": "x:5000"})),
            &at("endpoint"),
            "https://",
        );
        one_problem(
            reg(json!({"password_env": "P"})),
            &at("username_env"),
            "both or neither",
        );
        one_problem(
            reg(json!({"username_env": "", "password_env": "P"})),
            &at("username_env"),
            "not an environment variable name",
        );
        one_problem(
            reg(json!({"ecr_auth": true})),
            &at("ecr_auth"),
            "requires an ECR registry host",
        );
        one_problem(
            reg(json!({"plain_http": "yes"})),
            &at("plain_http"),
            "expected boolean",
        );
        one_problem(
            reg(json!({"ca_file": "/nonexistent/ca.pem"})),
            &at("ca_file"),
            "No such file",
        );
        one_problem(
            reg(json!({"ca_file": "/"})),
            &at("ca_file"),
            "is not a file",
        );
        one_problem(reg(json!({"token": "x"})), &at("token"), "unknown field");
        one_problem(
            json!({"registries": {"https://reg.io": {}}}),
            "registries[\"https://reg.io\"]",
            "without a scheme",
        );
        one_problem(json!({"registries": []}), "registries", "expected object");
    }

    #[test]
    fn ca_file_is_resolved_against_base_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("certs")).unwrap();
        std::fs::write(dir.path().join("certs/ca.pem"), "pem").unwrap();
        let text = json!({"registries": {"reg.io": {"ca_file": "certs/ca.pem"}}}).to_string();
        let config = Config::from_json(&text, "c.json", local_files(Some(dir.path()))).unwrap();
        assert_eq!(
            config.registry("reg.io").ca_file,
            Some(dir.path().join("certs/ca.pem"))
        );
        // Absolute paths are kept; relative ones without a base stay relative to the working directory.
        let abs = dir.path().join("certs/ca.pem");
        let text = json!({"registries": {"reg.io": {"ca_file": abs}}}).to_string();
        let config =
            Config::from_json(&text, "c.json", local_files(Some(Path::new("/elsewhere")))).unwrap();
        assert_eq!(config.registry("reg.io").ca_file, Some(abs));
        let text = json!({"registries": {"reg.io": {"ca_file": "certs/ca.pem"}}}).to_string();
        assert!(Config::from_json(&text, "c.json", local_files(None)).is_err());
    }
}
