//! A config with many mistakes is rejected with every problem named, exit code 2, nothing copied.

mod common;
use common::*;
use serde_json::json;

#[test]
fn every_problem_is_reported_at_once_with_its_path() {
    let w = Workdir::new();
    let cfg = json!({
        "mode": "mirror",
        "repos": [
            { "source": "111122223333.dkr.ecr.us-east-1.amazonaws.com/app/*" },
            { "source": "registry.example.com/ok", "tags": ["v{1"] },
            { "source": "registry.example.com/a", "destination": "same" },
            { "source": "registry.example.com/b", "destination": "same" },
            { "source": "registry.example.com/c", "tag": ["x"] }
        ],
        "repo_defaults": { "encryption_type": "KMS" },
        "unknown_top": 1
    });
    let run = w.sync(&cfg, &[], &[]);
    run.assert_code(2);
    for needle in [
        "mode",
        "repos[0].source",
        "repos[1].tags[0]",
        "v{1",
        "repos[3].destination",
        "repos[4].tag",
        "repo_defaults",
        "kms_key_arn",
        "unknown_top",
    ] {
        assert!(
            run.stderr.contains(needle),
            "missing {needle:?} in:\n{}",
            run.stderr
        );
    }
    assert!(run.report.is_none(), "no run happens on a bad config");

    let v = planner(
        &[
            "validate".into(),
            "--config".into(),
            w.path("config.json").display().to_string(),
        ],
        &[],
    );
    v.assert_code(2);
    assert!(v.stderr.contains("repos[1].tags[0]"));
}

#[test]
fn a_config_that_is_not_json_names_the_line() {
    let w = Workdir::new();
    let p = w.path("broken.json");
    std::fs::write(&p, "{\n  \"repos\": [\n").unwrap();
    let v = planner(
        &[
            "validate".into(),
            "--config".into(),
            p.display().to_string(),
        ],
        &[],
    );
    v.assert_code(2);
    assert!(v.stderr.contains("line"), "{}", v.stderr);
}
