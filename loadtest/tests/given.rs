//! The load test on resources given to it, as it runs against a user's own AWS account: no
//! local stack of its own, the registries and the fleet's queue, dead-letter queue and table
//! named by flags, AWS reached with the process's environment. Here the "given" resources are
//! started by the test — moto, a plain registry and testkit's local ECR (auth with ECR tokens,
//! repositories that must exist, immutable tags, PutImage limits) — and the binary is run as a
//! user runs it.

use ecr_sync_testkit::ecr::{EcrRules, LocalEcr};
use ecr_sync_testkit::moto::MotoProcess;
use ecr_sync_testkit::registry::{RegistryOpts, RegistryProcess};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output};

const ACCOUNT: &str = "123456789012";

/// `ecr-sync-loadtest ARGS` with `env`, to the end.
fn loadtest(args: &[&str], env: &[(String, String)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ecr-sync-loadtest"))
        .args(args)
        .envs(env.iter().cloned())
        .env_remove("AWS_PROFILE")
        .output()
        .expect("cannot run ecr-sync-loadtest")
}

/// The "given" resources: moto, a plain registry and a local ECR in front of moto, with a
/// registries file naming both, and a directory for the load test's outputs.
struct Given {
    moto: MotoProcess,
    plain: RegistryProcess,
    ecr: LocalEcr,
    dir: tempfile::TempDir,
}

impl Given {
    async fn start() -> Given {
        let moto = MotoProcess::start().await;
        let plain = RegistryProcess::start(RegistryOpts::default()).await;
        let ecr =
            LocalEcr::start(&moto.endpoint(), ACCOUNT, "us-east-1", EcrRules::default()).await;
        let dir = tempfile::tempdir().unwrap();
        let registries = json!({
            plain.host(): { "plain_http": true },
            ecr.host(): { "endpoint": ecr.url(), "plain_http": true },
        });
        std::fs::write(dir.path().join("registries.json"), registries.to_string()).unwrap();
        Given {
            moto,
            plain,
            ecr,
            dir,
        }
    }

    /// moto's environment, with ECR's API (tokens) at the local ECR's listener.
    fn env(&self) -> Vec<(String, String)> {
        let mut env = self.moto.env();
        for (k, v) in env.iter_mut() {
            if k == "AWS_ENDPOINT_URL_ECR" {
                *v = self.ecr.api_endpoint();
            }
        }
        env
    }

    /// `ecr-sync-loadtest run ARGS --registries … --out …`, which must succeed; the runs of
    /// its result.json, and its summary.
    fn run(&self, args: &[&str]) -> (Vec<Value>, String) {
        let (registries, out) = (
            self.dir.path().join("registries.json"),
            self.dir.path().join("out"),
        );
        let registries = registries.to_str().unwrap();
        let all = [
            &[
                "run",
                "--registries",
                registries,
                "--out",
                out.to_str().unwrap(),
            ],
            args,
        ]
        .concat();
        let run = loadtest(&all, &self.env());
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "exit {}\n{stderr}", run.status);
        let text = std::fs::read(out.join("result.json")).expect("result.json");
        let summary = std::fs::read_to_string(out.join("summary.md")).expect("summary.md");
        (serde_json::from_slice(&text).unwrap(), summary)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_on_given_resources_copies_into_ecr_and_verifies_against_it() {
    let given = Given::start().await;
    let (src, ecr) = (&given.plain, &given.ecr);
    // The fleet's resources, made beforehand as a user's Terraform would.
    let boot =
        Command::new(Path::new(env!("CARGO_BIN_EXE_ecr-sync-loadtest")).with_file_name("ecr-sync"))
            .args(["bootstrap", "--name", "given", "--json"])
            .envs(given.env())
            .output()
            .expect("cannot run ecr-sync bootstrap (build the workspace first)");
    assert!(
        boot.status.success(),
        "{}",
        String::from_utf8_lossy(&boot.stderr)
    );
    let made: Value = serde_json::from_slice(&boot.stdout).unwrap();
    let (runs, summary) = given.run(&[
        "--repos",
        "2",
        "--tags",
        "6",
        "--seed",
        "11",
        "--prefix",
        "given",
        "--workers",
        "2",
        "--concurrency",
        "4",
        "--kill-every-seconds",
        "2",
        "--warm",
        "--source-registry",
        &src.host(),
        "--destination-registry",
        &ecr.host(),
        "--queue-url",
        made["queue_url"].as_str().unwrap(),
        "--dlq-url",
        made["dlq_url"].as_str().unwrap(),
        "--ledger-table",
        made["ledger_table"].as_str().unwrap(),
        "--timeout-seconds",
        "120",
    ]);
    assert_eq!(runs.len(), 2, "the run and its warm rerun");
    let (cold, warm) = (&runs[0], &runs[1]);
    assert_eq!(
        cold["resources"],
        format!("given: {} → {}", src.host(), ecr.host())
    );
    assert_eq!(cold["jobs_emitted"], 12);
    // Workers are started (and killed) here, against the given queue.
    assert!(cold["faults"]["worker_kills"].as_u64() >= Some(1), "{cold}");
    assert_eq!(cold["verdict"]["present"], 12, "{cold}");
    assert_eq!(cold["verdict"]["ledger_agrees"], true, "{cold}");
    // No counting proxy in front of given AWS: not measured rather than made up.
    assert_eq!(cold["aws_per_job"], Value::Null);
    assert_eq!(cold["verdict"]["duplicated"], Value::Null);
    assert_eq!(warm["jobs_emitted"], 0, "{warm}");
    assert_eq!(warm["verdict"]["present"], 12, "{warm}");
    // The ECR holds the source's digests (read here past the load test's own check); the
    // destination repositories were made by the plan (ECR refuses pushes to missing ones).
    for tag in ["v0", "v5"] {
        assert_eq!(
            ecr.digest("given/app1", tag).await,
            src.digest("given/app1", tag).await
        );
        assert!(ecr.digest("given/app1", tag).await.is_some());
    }
    assert!(summary.contains("- Resources: given: "), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_on_given_resources_generates_into_an_ecr_source() {
    let given = Given::start().await;
    let (dst, ecr) = (&given.plain, &given.ecr);
    let (runs, _) = given.run(&[
        "--mode",
        "sync",
        "--repos",
        "2",
        "--tags",
        "4",
        "--seed",
        "12",
        "--source-registry",
        &ecr.host(),
        "--destination-registry",
        &dst.host(),
    ]);
    let r = &runs[0];
    assert_eq!(r["verdict"]["present"], 8, "{r}");
    assert_eq!(r["jobs"]["copied"], 8, "{r}");
    // The load test made the ECR repositories and pushed with a token: the tags are there.
    assert!(ecr.digest("load/app0", "v3").await.is_some());
    // `sync` counts its own requests to the source, in its report.
    assert!(
        r["requests_per_tag"].as_f64().is_some_and(|n| n > 0.0),
        "{r}"
    );
    // A timeline drawn from when each job ended, ending with all 8 done.
    let timeline = r["timeline"].as_array().unwrap();
    assert_eq!(timeline.last().unwrap()["done"], 8, "{r}");
}

#[test]
fn faults_need_the_local_stack_and_the_fleet_needs_its_queue() {
    let given = [
        "run",
        "--source-registry",
        "src.example",
        "--destination-registry",
        "dst.example",
    ];
    let faulty = loadtest(&[&given[..], &["--aws-fault-percent", "5"]].concat(), &[]);
    assert_eq!(faulty.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&faulty.stderr);
    assert!(
        stderr.contains("--aws-fault-percent needs the local stack"),
        "{stderr}"
    );
    let fleet = loadtest(&given, &[]);
    assert_eq!(fleet.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&fleet.stderr);
    assert!(
        stderr.contains("needs --queue-url, --dlq-url and --ledger-table"),
        "{stderr}"
    );
    let half = loadtest(&["run", "--source-registry", "src.example"], &[]);
    assert_eq!(
        half.status.code(),
        Some(2),
        "clap: --destination-registry is required"
    );
}
