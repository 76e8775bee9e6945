//! Shared helpers for the planner's end-to-end tests: run the real binary against real servers.
#![allow(dead_code, unused_imports)]

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

pub use ecr_sync_testkit::{
    ecr, moto::MotoProcess, proxy, registry::RegistryOpts, registry::RegistryProcess, seed, token,
};

/// The result of one `ecr-sync` run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub report: Option<Value>,
}

/// A scratch directory with a config and a ledger.
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Workdir {
        Workdir {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write_config(&self, config: &Value) -> PathBuf {
        let p = self.path("config.json");
        std::fs::write(&p, serde_json::to_vec_pretty(config).unwrap()).unwrap();
        p
    }

    /// Runs `ecr-sync sync --config … --report … --ledger …` plus `extra` args.
    pub fn sync(&self, config: &Value, extra: &[&str], env: &[(String, String)]) -> Run {
        let cfg = self.write_config(config);
        let report = self.path("report.json");
        let _ = std::fs::remove_file(&report);
        let mut args: Vec<String> =
            vec!["sync".into(), "--config".into(), cfg.display().to_string()];
        args.extend(["--report".into(), report.display().to_string()]);
        args.extend([
            "--ledger".into(),
            self.path("ledger.db").display().to_string(),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut r = planner(&args, env);
        r.report = std::fs::read(&report)
            .ok()
            .map(|b| serde_json::from_slice(&b).unwrap());
        r
    }
}

/// Runs the planner binary with `args` and extra environment.
pub fn planner(args: &[String], env: &[(String, String)]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_ecr-sync"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("ECR_SYNC_FAST_RETRY", "1")
        .env_remove("AWS_PROFILE")
        .output()
        .expect("run ecr-sync");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
        report: None,
    }
}

impl Run {
    pub fn report(&self) -> &Value {
        self.report.as_ref().unwrap_or_else(|| {
            panic!(
                "no report; exit {}\nstdout:{}\nstderr:{}",
                self.code, self.stdout, self.stderr
            )
        })
    }

    pub fn count(&self, key: &str) -> u64 {
        self.report()[key].as_u64().unwrap()
    }

    /// Jobs with a given outcome.
    pub fn jobs(&self, outcome: &str) -> Vec<Value> {
        self.report()["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["outcome"] == outcome)
            .cloned()
            .collect()
    }

    pub fn assert_code(&self, code: i32) {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
    }
}

/// A plain-HTTP registry settings entry.
pub fn plain(host: &str) -> (String, Value) {
    (host.to_string(), serde_json::json!({ "plain_http": true }))
}

/// Tags of a repository, sorted, read straight from the registry.
pub async fn tags(reg: &RegistryProcess, repo: &str) -> Vec<String> {
    let v: Value = reg
        .client()
        .get(format!("{}/v2/{repo}/tags/list", reg.url()))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap();
    let mut t: Vec<String> = v["tags"]
        .as_array()
        .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    t.sort();
    t
}

/// `skopeo inspect --raw` of an image on a plain-HTTP registry.
pub fn skopeo_raw(host: &str, repo: &str, reference: &str) -> Vec<u8> {
    let sep = if reference.starts_with("sha256:") {
        "@"
    } else {
        ":"
    };
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{host}/{repo}{sep}{reference}"),
        ])
        .output()
        .expect("skopeo is installed");
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
