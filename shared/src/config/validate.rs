//! Phase two: turning the raw JSON value into a [`Config`], collecting every problem.
//!
//! Each section has its own function; each records its problems and returns what it could build.
//! Checks that depend on a bad value are skipped, so one mistake yields one problem. Problems come
//! in document order: top-level unknown fields, then `mode`, `repos`, `repo_defaults`,
//! `destination_registry`, `registries` (validated in `registries`), `concurrency`; `referrers` and
//! `platforms` (read first, as every entry of `repos` inherits them) are reported first.

use super::Files;
use std::collections::HashMap;

use serde_json::Value;

use super::names::{check_destination, check_host, check_kms_key_arn, parse_source};
use super::platforms::{self, Platform};
use super::raw::{quote, Obj, Problems, Reported};
use super::referrers::{self, Referrers};
use super::registry_settings;
use super::{
    Concurrency, Config, Encryption, Mode, Problem, RepoDefaults, RepoSync, SourceRepo, MAX_BLOBS,
    MAX_JOBS,
};
use crate::tag_filter::TagFilter;

const TOP_FIELDS: &[&str] = &[
    "mode",
    "repos",
    "repo_defaults",
    "destination_registry",
    "registries",
    "concurrency",
    "referrers",
    "platforms",
];
const REPO_FIELDS: &[&str] = &["source", "destination", "tags", "referrers", "platforms"];
const DEFAULTS_FIELDS: &[&str] = &[
    "scan_on_push",
    "tag_immutability",
    "encryption_type",
    "kms_key_arn",
];
const CONCURRENCY_FIELDS: &[&str] = &["jobs", "blobs"];

/// Validates a whole config document.
pub fn validate(root: &Value, files: Files) -> Result<Config, Vec<Problem>> {
    let mut p = Problems::default();
    if !root.is_object() {
        p.wrong_type("", "a JSON object", root);
        return Err(p.0);
    }
    let top = Obj::open(root, "", TOP_FIELDS, &mut p)
        .ok()
        .flatten()
        .expect("checked to be an object");
    let inherited = Inherited {
        referrers: referrers::parse(&top, &Referrers::default(), &mut p),
        platforms: platforms::parse(&top, &None, &mut p),
    };
    let config = Config {
        mode: mode(&top, &mut p),
        repos: repos(&top, &inherited, &mut p),
        repo_defaults: repo_defaults(&top, &mut p),
        destination_registry: destination_registry(&top, &mut p),
        registries: registry_settings::registries(&top, files, &mut p),
        concurrency: concurrency(&top, &mut p),
        referrers: inherited.referrers,
        platforms: inherited.platforms,
    };
    if p.0.is_empty() {
        Ok(config)
    } else {
        Err(p.0)
    }
}

fn mode(top: &Obj, p: &mut Problems) -> Mode {
    match top.string("mode", p) {
        Ok(None) | Ok(Some("create")) | Err(Reported) => Mode::Create,
        Ok(Some("refresh")) => Mode::Refresh,
        Ok(Some(other)) => {
            let message = format!("must be \"create\" or \"refresh\", got {}", quote(other));
            p.add(&top.path("mode"), message);
            Mode::Create
        }
    }
}

/// What every entry of `repos` inherits from the top level.
struct Inherited {
    referrers: Referrers,
    platforms: Option<Vec<Platform>>,
}

fn repos(top: &Obj, inherited: &Inherited, p: &mut Problems) -> Vec<RepoSync> {
    let Ok(Some(items)) = top.array("repos", p) else {
        return Vec::new();
    };
    let mut repos = Vec::new();
    // Final destination path → index of the first repo writing to it.
    let mut first_use: HashMap<String, usize> = HashMap::new();
    for (index, (path, value)) in items.iter().enumerate() {
        let (sync, destination) = repo(path, value, inherited, p);
        if let Some((destination, dest_path)) = destination {
            match first_use.get(&destination) {
                Some(earlier) => p.add(
                    &dest_path,
                    format!(
                        "destination {} is already used by repos[{earlier}]",
                        quote(&destination)
                    ),
                ),
                None => {
                    first_use.insert(destination, index);
                }
            }
        }
        repos.extend(sync);
    }
    repos
}

/// One repo: the finished entry when fully valid, and its destination with the path of the field
/// that determined it (for the duplicate check) when that part is valid.
fn repo(
    path: &str,
    value: &Value,
    inherited: &Inherited,
    p: &mut Problems,
) -> (Option<RepoSync>, Option<(String, String)>) {
    if value.is_null() {
        p.wrong_type(path, "object", value);
        return (None, None);
    }
    let Ok(Some(o)) = Obj::open(value, path, REPO_FIELDS, p) else {
        return (None, None);
    };
    let source = match o.string("source", p) {
        Ok(None) => {
            p.add(&o.path("source"), "required field is missing");
            None
        }
        Ok(Some(uri)) => match parse_source(uri) {
            Ok((registry, repository)) => Some(SourceRepo {
                registry,
                repository,
            }),
            Err(message) => {
                p.add(&o.path("source"), message);
                None
            }
        },
        Err(Reported) => None,
    };
    let destination = match o.string("destination", p) {
        Ok(None) => source
            .as_ref()
            .map(|s| (s.repository.clone(), o.path("source"))),
        Ok(Some(dest)) => match check_destination(dest) {
            Ok(()) => Some((dest.to_owned(), o.path("destination"))),
            Err(message) => {
                p.add(&o.path("destination"), message);
                None
            }
        },
        Err(Reported) => None,
    };
    let tags = tags(&o, p);
    let referrers = referrers::parse(&o, &inherited.referrers, p);
    let platforms = platforms::parse(&o, &inherited.platforms, p);
    let sync = match (source, &destination, tags) {
        (Some(source), Some((destination, _)), Some(tags)) => Some(RepoSync {
            source,
            destination: destination.clone(),
            tags,
            referrers,
            platforms,
        }),
        _ => None,
    };
    (sync, destination)
}

fn tags(o: &Obj, p: &mut Problems) -> Option<TagFilter> {
    let items = match o.array("tags", p) {
        Ok(None) => return Some(TagFilter::all()),
        Ok(Some(items)) => items,
        Err(Reported) => return None,
    };
    if items.is_empty() {
        p.add(
            &o.path("tags"),
            "must hold at least one pattern; omit it to sync every tag",
        );
        return None;
    }
    let mut patterns = Vec::new();
    let mut valid = true;
    for (path, value) in &items {
        let Value::String(pattern) = value else {
            p.wrong_type(path, "string", value);
            valid = false;
            continue;
        };
        if let Some(err) = TagFilter::validate(&[pattern]).into_iter().next() {
            p.add(path, err.to_string());
            valid = false;
        }
        patterns.push(pattern.as_str());
    }
    if !valid {
        return None;
    }
    TagFilter::new(&patterns)
        .map_err(|err| p.add(&o.path("tags"), err.to_string()))
        .ok()
}

fn repo_defaults(top: &Obj, p: &mut Problems) -> RepoDefaults {
    let defaults = RepoDefaults::default();
    let Ok(Some(o)) = Obj::open(
        top.value("repo_defaults"),
        &top.path("repo_defaults"),
        DEFAULTS_FIELDS,
        p,
    ) else {
        return defaults;
    };
    let scan_on_push = o.bool("scan_on_push", p).ok().flatten();
    let tag_immutability = o.bool("tag_immutability", p).ok().flatten();
    let type_path = o.path("encryption_type");
    // Some(true) = KMS, Some(false) = AES256, None = unknown (already reported).
    let (kms, type_given) = match o.string("encryption_type", p) {
        Ok(None) => (Some(false), false),
        Ok(Some("AES256")) => (Some(false), true),
        Ok(Some("KMS")) => (Some(true), true),
        Ok(Some(other)) => {
            p.add(
                &type_path,
                format!("must be \"AES256\" or \"KMS\", got {}", quote(other)),
            );
            (None, true)
        }
        Err(Reported) => (None, true),
    };
    let arn_path = o.path("kms_key_arn");
    let arn = o.string("kms_key_arn", p);
    let encryption = match (kms, arn) {
        (Some(true), Ok(None)) => {
            p.add(&arn_path, "required when encryption_type is \"KMS\"");
            None
        }
        (Some(false), Ok(Some(_))) => {
            let why = if type_given { "is" } else { "defaults to" };
            p.add(
                &arn_path,
                format!("only allowed when encryption_type is \"KMS\" (encryption_type {why} \"AES256\")"),
            );
            None
        }
        (Some(true) | None, Ok(Some(arn))) => match check_kms_key_arn(arn) {
            Ok(()) => kms.map(|_| Encryption::Kms {
                key_arn: arn.to_owned(),
            }),
            Err(message) => {
                p.add(&arn_path, message);
                None
            }
        },
        (Some(false), Ok(None)) => Some(Encryption::Aes256),
        (_, Err(Reported)) | (None, Ok(None)) => None,
    };
    RepoDefaults {
        scan_on_push: scan_on_push.unwrap_or(defaults.scan_on_push),
        tag_immutability: tag_immutability.unwrap_or(defaults.tag_immutability),
        encryption: encryption.unwrap_or(defaults.encryption),
    }
}

fn destination_registry(top: &Obj, p: &mut Problems) -> Option<String> {
    let host = top.string("destination_registry", p).ok().flatten()?;
    match check_host(host) {
        Ok(()) => Some(host.to_owned()),
        Err(message) => {
            p.add(&top.path("destination_registry"), message);
            None
        }
    }
}

fn concurrency(top: &Obj, p: &mut Problems) -> Concurrency {
    let defaults = Concurrency::default();
    let Ok(Some(o)) = Obj::open(
        top.value("concurrency"),
        &top.path("concurrency"),
        CONCURRENCY_FIELDS,
        p,
    ) else {
        return defaults;
    };
    let limit = |key: &str, max: usize, default: usize, p: &mut Problems| {
        o.integer(key, 1, max as u64, p)
            .ok()
            .flatten()
            .map_or(default, |v| v as usize)
    };
    Concurrency {
        jobs: limit("jobs", MAX_JOBS, defaults.jobs, p),
        blobs: limit("blobs", MAX_BLOBS, defaults.blobs, p),
    }
}
