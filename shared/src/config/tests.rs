//! End-to-end tests of `Config::from_json`: the seed's examples, defaults, and one test per rule.

use serde_json::json;

use super::*;

/// Files resolved against `base_dir` and checked on the local disk, as `config_source` does.
pub(super) fn local_files(base_dir: Option<&Path>) -> Files<'_> {
    Files {
        base_dir,
        readable: &crate::config_source::readable_file,
    }
}

pub(super) const ECR: &str = "111122223333.dkr.ecr.us-east-1.amazonaws.com";

pub(super) fn parse(value: serde_json::Value) -> Result<Config, ConfigError> {
    Config::from_json(&value.to_string(), "test.json", local_files(None))
}

/// The problems of an invalid config as `path: message` lines.
fn problems(value: serde_json::Value) -> Vec<String> {
    let err = parse(value).expect_err("config should be invalid");
    assert_eq!(err.kind, ConfigErrorKind::Invalid);
    err.problems.iter().map(ToString::to_string).collect()
}

/// Asserts the config has exactly one problem, at `path`, whose message contains `needle`.
pub(super) fn one_problem(value: serde_json::Value, path: &str, needle: &str) {
    let err = parse(value).expect_err("config should be invalid");
    assert_eq!(err.problems.len(), 1, "{err}");
    assert_eq!(err.problems[0].path, path, "{err}");
    assert!(err.problems[0].message.contains(needle), "{err}");
}

#[test]
fn seed_example_config() {
    let config = parse(json!({
        "mode": "create",
        "repos": [
            { "source": format!("{ECR}/my-app/backend") },
            { "source": format!("{ECR}/gadgets/ui"), "destination": "my-team/ui-gadgets", "tags": ["v1.*"] },
            { "source": format!("{ECR}/project/api"), "tags": ["{latest,stable}"] },
            { "source": format!("{ECR}/team-a/shared-library"), "tags": ["v?.?.?", "v?.?"] }
        ],
        "repo_defaults": { "scan_on_push": true, "tag_immutability": true }
    }))
    .unwrap();
    let got: Vec<(&str, &str, &[String])> = config
        .repos
        .iter()
        .map(|r| {
            (
                r.source.repository.as_str(),
                r.destination.as_str(),
                r.tags.patterns(),
            )
        })
        .collect();
    let s = |v: &[&str]| v.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    assert_eq!(
        got[0],
        ("my-app/backend", "my-app/backend", &s(&["**"])[..])
    );
    assert_eq!(
        got[1],
        ("gadgets/ui", "my-team/ui-gadgets", &s(&["v1.*"])[..])
    );
    assert_eq!(
        got[2],
        ("project/api", "project/api", &s(&["{latest,stable}"])[..])
    );
    assert_eq!(got[3].1, "team-a/shared-library");
    assert!(config.repos.iter().all(|r| r.source.registry == ECR));
    assert_eq!(
        config.repos[0].source_ref(),
        format!("{ECR}/my-app/backend")
    );
    let semver = &config.repos[3].tags;
    assert!(semver.matches("v1.2.3") && semver.matches("v1.2"));
    assert!(!semver.matches("v1.2.34") && !semver.matches("v1.23"));
    assert!(config.repos[2].tags.matches("stable") && !config.repos[2].tags.matches("beta"));
}

#[test]
fn defaults() {
    let config = parse(json!({})).unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.mode, Mode::Create);
    assert!(config.repos.is_empty() && config.registries.is_empty());
    assert_eq!(config.destination_registry, None);
    let d = &config.repo_defaults;
    assert!(d.scan_on_push && d.tag_immutability && d.encryption == Encryption::Aes256);
    assert_eq!((config.concurrency.jobs, config.concurrency.blobs), (16, 8));
    let r = config.registry("anything.example.com");
    assert_eq!(r, RegistrySettings::default());
    assert!(!r.plain_http && r.endpoint.is_none());
    assert!(r.uses_ecr_auth(ECR) && !r.uses_ecr_auth("localhost:5000"));
}

#[test]
fn terraform_nulls_are_absent() {
    let config = parse(json!({
        "mode": null,
        "repos": [{ "source": format!("{ECR}/a"), "destination": null, "tags": null }],
        "repo_defaults": { "scan_on_push": null, "tag_immutability": false,
                           "encryption_type": null, "kms_key_arn": null },
        "destination_registry": null,
        "registries": { "localhost:5000": { "endpoint": null, "plain_http": null, "ca_file": null,
                        "username_env": null, "password_env": null, "ecr_auth": null } },
        "concurrency": { "jobs": null, "blobs": 4 }
    }))
    .unwrap();
    assert_eq!(config.repos[0].destination, "a");
    assert!(config.repos[0].tags.is_all());
    assert!(config.repo_defaults.scan_on_push && !config.repo_defaults.tag_immutability);
    assert_eq!(
        config.registry("localhost:5000"),
        RegistrySettings::default()
    );
    assert_eq!((config.concurrency.jobs, config.concurrency.blobs), (16, 4));
    assert!(parse(json!({"repos": null, "repo_defaults": null, "registries": null})).is_ok());
}

#[test]
fn every_mistake_is_reported_at_once() {
    let got = problems(json!({
        "mode": "sync",
        "repos": [
            { "source": format!("{ECR}/app"), "tag": ["latest"] },
            { "source": format!("{ECR}/app2"), "tags": ["v{1", 7] },
            { "source": "myorg/app" },
            { "source": format!("{ECR}/other"), "destination": "app" },
            { "source": format!("{ECR}/x"), "tags": [] }
        ],
        "repo_defaults": { "scan_on_push": "yes", "encryption_type": "KMS" },
        "destination_registry": "https://reg.example.com",
        "registries": { "127.0.0.1:5000": { "endpoint": "http://127.0.0.1:5000", "username_env": "U" } },
        "concurrency": { "jobs": 0, "threads": 2 },
        "extra": true
    }));
    let host = "registries[\"127.0.0.1:5000\"]";
    assert_eq!(
        got,
        [
            "extra: unknown field (expected one of: mode, repos, repo_defaults, destination_registry, registries, concurrency, referrers, platforms)".to_owned(),
            "mode: must be \"create\" or \"refresh\", got \"sync\"".to_owned(),
            "repos[0].tag: unknown field (expected one of: source, destination, tags, referrers, platforms)".to_owned(),
            "repos[1].tags[0]: invalid glob \"v{1\": unclosed alternate group; missing '}' (maybe escape '{' with '[{]'?)".to_owned(),
            "repos[1].tags[1]: expected string, got number 7".to_owned(),
            "repos[2].source: \"myorg/app\" must start with a registry host (a name with '.' or ':', or localhost; e.g. 111122223333.dkr.ecr.us-east-1.amazonaws.com/my-app)".to_owned(),
            "repos[3].destination: destination \"app\" is already used by repos[0]".to_owned(),
            "repos[4].tags: must hold at least one pattern; omit it to sync every tag".to_owned(),
            "repo_defaults.scan_on_push: expected boolean, got string \"yes\"".to_owned(),
            "repo_defaults.kms_key_arn: required when encryption_type is \"KMS\"".to_owned(),
            "destination_registry: \"https://reg.example.com\" must be host[:port] without a scheme".to_owned(),
            format!("{host}.endpoint: \"http://127.0.0.1:5000\" is plain HTTP; set plain_http to true to allow it"),
            format!("{host}.password_env: required when username_env is set (set both or neither)"),
            "concurrency.threads: unknown field (expected one of: jobs, blobs)".to_owned(),
            "concurrency.jobs: must be between 1 and 256, got 0".to_owned(),
        ]
    );
    let err = parse(json!({"mode": 1, "concurrency": {"blobs": 65}})).unwrap_err();
    assert!(err
        .to_string()
        .starts_with("config test.json has 2 problem(s):\n  mode: expected string"));
}

#[test]
fn document_must_be_a_json_object() {
    assert_eq!(
        problems(json!([])),
        ["(root): expected a JSON object, got array of 0 item(s)"]
    );
    let err = Config::from_json("{\"mode\": ", "c.json", local_files(None)).unwrap_err();
    assert!(
        matches!(err.kind, ConfigErrorKind::NotJson { line: 1, .. }),
        "{err:?}"
    );
}

#[test]
fn mode_values() {
    assert_eq!(
        parse(json!({"mode": "refresh"})).unwrap().mode,
        Mode::Refresh
    );
    one_problem(json!({"mode": "Create"}), "mode", "got \"Create\"");
}

#[test]
fn repos_shape() {
    one_problem(json!({"repos": {}}), "repos", "expected array, got object");
    one_problem(
        json!({"repos": [null]}),
        "repos[0]",
        "expected object, got null",
    );
    one_problem(
        json!({"repos": [{}]}),
        "repos[0].source",
        "required field is missing",
    );
    one_problem(
        json!({"repos": [{"source": 5}]}),
        "repos[0].source",
        "expected string",
    );
}

#[test]
fn source_rules() {
    let bad = |source: &str, needle: &str| {
        one_problem(
            json!({"repos": [{"source": source}]}),
            "repos[0].source",
            needle,
        )
    };
    bad(&format!("{ECR}/app-*"), "glob characters");
    bad(&format!("{ECR}/app{{a,b}}"), "glob characters");
    bad(&format!("https://{ECR}/app"), "scheme");
    bad(ECR, "full repository URI");
    bad(&format!("{ECR}/app:latest"), "must not include a tag");
    bad(
        &format!("{ECR}/app@sha256:0123"),
        "must not include a digest",
    );
    bad(&format!("{ECR}/My_App"), "invalid component");
    bad(&format!("{ECR}/a___b"), "invalid component");
    let ok = parse(json!({"repos": [{"source": "localhost:5000/a__b/c--d/e.f"}]})).unwrap();
    assert_eq!(ok.repos[0].source.registry, "localhost:5000");
    assert_eq!(ok.repos[0].destination, "a__b/c--d/e.f");
}

#[test]
fn destination_rules() {
    let with = |dest: &str| json!({"repos": [{"source": format!("{ECR}/a"), "destination": dest}]});
    one_problem(
        with(&format!("{ECR}/b")),
        "repos[0].destination",
        "registry host",
    );
    one_problem(with("Team/B"), "repos[0].destination", "invalid component");
    one_problem(with("b:v1"), "repos[0].destination", "tag");
    one_problem(with(""), "repos[0].destination", "must not be empty");
    assert_eq!(
        parse(with("team/b")).unwrap().repos[0].destination,
        "team/b"
    );
}

#[test]
fn duplicate_destinations_name_the_earlier_repo() {
    let got = problems(json!({"repos": [
        {"source": format!("{ECR}/a")},
        {"source": "other.example.com/b", "destination": "c"},
        {"source": "other.example.com/a"},
        {"source": "third.example.com/x", "destination": "c"}
    ]}));
    assert_eq!(
        got,
        [
            "repos[2].source: destination \"a\" is already used by repos[0]",
            "repos[3].destination: destination \"c\" is already used by repos[1]",
        ]
    );
}

#[test]
fn tag_rules() {
    let with =
        |tags: serde_json::Value| json!({"repos": [{"source": format!("{ECR}/a"), "tags": tags}]});
    one_problem(with(json!([])), "repos[0].tags", "at least one pattern");
    one_problem(
        with(json!("latest")),
        "repos[0].tags",
        "expected array, got string",
    );
    one_problem(
        with(json!(["ok", "[a"])),
        "repos[0].tags[1]",
        "invalid glob \"[a\": unclosed character class",
    );
    one_problem(with(json!([""])), "repos[0].tags[0]", "empty pattern");
    let config = parse(with(json!(["v1.*", "latest"]))).unwrap();
    assert!(config.repos[0].tags.matches("latest") && !config.repos[0].tags.matches("v2"));
}

#[test]
fn encryption_rules() {
    let arn = "arn:aws:kms:us-east-1:111122223333:key/abc";
    let with = |d: serde_json::Value| json!({"repo_defaults": d});
    let kms = parse(with(json!({"encryption_type": "KMS", "kms_key_arn": arn}))).unwrap();
    assert_eq!(
        kms.repo_defaults.encryption,
        Encryption::Kms {
            key_arn: arn.to_owned()
        }
    );
    one_problem(
        with(json!({"encryption_type": "KMS"})),
        "repo_defaults.kms_key_arn",
        "required",
    );
    one_problem(
        with(json!({"kms_key_arn": arn})),
        "repo_defaults.kms_key_arn",
        "encryption_type defaults to \"AES256\"",
    );
    one_problem(
        with(json!({"encryption_type": "AES256", "kms_key_arn": arn})),
        "repo_defaults.kms_key_arn",
        "only allowed",
    );
    one_problem(
        with(json!({"encryption_type": "KMS", "kms_key_arn": "key/abc"})),
        "repo_defaults.kms_key_arn",
        "not a KMS key ARN",
    );
    one_problem(
        with(json!({"encryption_type": "aes256"})),
        "repo_defaults.encryption_type",
        "must be \"AES256\" or \"KMS\"",
    );
    one_problem(
        with(json!({"tag_immutability": 1})),
        "repo_defaults.tag_immutability",
        "expected boolean",
    );
}

#[test]
fn destination_registry_rules() {
    let ok = parse(json!({"destination_registry": "localhost:5001"})).unwrap();
    assert_eq!(ok.destination_registry.as_deref(), Some("localhost:5001"));
    one_problem(
        json!({"destination_registry": "reg.io/path"}),
        "destination_registry",
        "without a path",
    );
    one_problem(
        json!({"destination_registry": "reg.io:0"}),
        "destination_registry",
        "invalid port",
    );
}

#[test]
fn concurrency_rules() {
    let c = parse(json!({"concurrency": {"jobs": 256, "blobs": 1}}))
        .unwrap()
        .concurrency;
    assert_eq!((c.jobs, c.blobs), (256, 1));
    one_problem(
        json!({"concurrency": {"jobs": 257}}),
        "concurrency.jobs",
        "between 1 and 256, got 257",
    );
    one_problem(
        json!({"concurrency": {"blobs": 0}}),
        "concurrency.blobs",
        "between 1 and 64, got 0",
    );
    one_problem(
        json!({"concurrency": {"blobs": 2.0}}),
        "concurrency.blobs",
        "expected integer, got number 2.0",
    );
    one_problem(
        json!({"concurrency": 8}),
        "concurrency",
        "expected object, got number 8",
    );
}

#[test]
fn manifest_put_budget_rules() {
    const ECR: &str = "111122223333.dkr.ecr.us-east-1.amazonaws.com";
    let config = parse(json!({"registries": {
        "localhost:5000": { "manifest_puts_per_second": 40 },
        "localhost:5001": { "manifest_puts_per_second": 0 },
        "111122223333.dkr.ecr.eu-west-1.amazonaws.com": { "manifest_puts_per_second": 0 },
    }}))
    .unwrap();
    let budget = |host: &str| config.registry(host).manifest_put_budget(host);
    // ECR's default PutImage quota for ECR hosts; none for other registries unless set.
    assert_eq!(budget(ECR), Some(10.0));
    assert_eq!(budget("registry.example.com"), None);
    assert_eq!(budget("localhost:5000"), Some(40.0));
    // 0 turns the budget off, for an ECR host too.
    assert_eq!(budget("localhost:5001"), None);
    assert_eq!(budget("111122223333.dkr.ecr.eu-west-1.amazonaws.com"), None);
    one_problem(
        json!({"registries": {"localhost:5000": {"manifest_puts_per_second": -1}}}),
        "registries[\"localhost:5000\"].manifest_puts_per_second",
        "between 0 and 100000, got -1",
    );
    one_problem(
        json!({"registries": {"localhost:5000": {"manifest_puts_per_second": 2.5}}}),
        "registries[\"localhost:5000\"].manifest_puts_per_second",
        "expected integer, got number 2.5",
    );
}
