//! The fleet's end-to-end stack: moto (SQS, DynamoDB) and two docker-registry processes on
//! 127.0.0.1, resources made by the real `ecr-sync bootstrap`, real planner and worker
//! processes.
#![allow(dead_code, unused_imports)]

use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use ecr_sync_testkit::{
    awsproxy, moto::MotoProcess, proxy, registry::RegistryOpts, registry::RegistryProcess, seed,
};

/// The planner binary, built next to this test's binary by `cargo build --workspace`.
pub fn planner_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("ecr-sync");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace` first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// One process's exit and output.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr)
        })
    }
}

/// A running worker process; killed on drop if still running.
pub struct Worker {
    pub child: Child,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Worker {
    /// Waits for the worker to exit by itself (bounded) and returns its exit code.
    pub fn wait(&mut self, limit: Duration) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                panic!(
                    "worker still running after {limit:?}\nstderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// moto, a source and a destination registry, and bootstrapped fleet resources.
pub struct Stack {
    pub moto: MotoProcess,
    pub src: RegistryProcess,
    pub dst: RegistryProcess,
    pub dir: tempfile::TempDir,
    pub queue_url: String,
    pub dlq_url: String,
    pub table: String,
    workers: std::sync::atomic::AtomicU32,
}

impl Stack {
    /// Starts everything and runs `bootstrap --name` with `max_receive_count`.
    pub async fn start(max_receive_count: u32) -> Stack {
        let moto = MotoProcess::start().await;
        let src = RegistryProcess::start(RegistryOpts::default()).await;
        let dst = RegistryProcess::start(RegistryOpts::default()).await;
        let mut stack = Stack {
            moto,
            src,
            dst,
            dir: tempfile::tempdir().unwrap(),
            queue_url: String::new(),
            dlq_url: String::new(),
            table: String::new(),
            workers: Default::default(),
        };
        let out = stack
            .planner(&[
                "bootstrap",
                "--name",
                "test",
                "--max-receive-count",
                &max_receive_count.to_string(),
                "--json",
            ])
            .ok()
            .json();
        stack.queue_url = out["queue_url"].as_str().unwrap().into();
        stack.dlq_url = out["dlq_url"].as_str().unwrap().into();
        stack.table = out["ledger_table"].as_str().unwrap().into();
        stack
    }

    /// A seeder for the source registry.
    pub fn seeder(&self) -> seed::Seeder {
        seed::Seeder::new(reqwest::Client::new(), &self.src.url(), None)
    }

    /// Environment for the binaries: moto, the resources, the config, fast registry retries.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = self.moto.env();
        env.extend([
            ("ECR_SYNC_QUEUE_URL".into(), self.queue_url.clone()),
            ("ECR_SYNC_DLQ_URL".into(), self.dlq_url.clone()),
            ("ECR_SYNC_LEDGER_TABLE".into(), self.table.clone()),
            (
                "ECR_SYNC_CONFIG".into(),
                self.dir.path().join("config.json").display().to_string(),
            ),
            ("ECR_SYNC_FAST_RETRY".into(), "1".into()),
        ]);
        env
    }

    /// Pushes `repo:tag` to the source: one layer of 5,000 bytes of noise from `noise_seed`.
    pub async fn small_image(&self, repo: &str, tag: &str, noise_seed: u64) -> seed::Pushed {
        self.seeder()
            .image(
                repo,
                Some(tag),
                vec![seed::noise(noise_seed, 5000)],
                &[],
                ("linux", "amd64"),
            )
            .await
            .unwrap()
    }

    /// Pushes `n` small images `repo:v0`… (noise seeds from `first_seed`) and returns what the
    /// destination should end up with: `(repo, tag, digest)`.
    pub async fn small_images(
        &self,
        repo: &'static str,
        n: u64,
        first_seed: u64,
    ) -> Vec<(&'static str, String, String)> {
        let mut want = Vec::new();
        for i in 0..n {
            let tag = format!("v{i}");
            let p = self.small_image(repo, &tag, first_seed + i).await;
            want.push((repo, tag, p.digest));
        }
        want
    }

    /// Waits (bounded) until every `(repo, tag, digest)` is at the destination.
    pub async fn until_copied(&self, want: &[(&str, String, String)], limit: Duration) {
        let start = Instant::now();
        loop {
            let mut missing = Vec::new();
            for (repo, tag, digest) in want {
                if self.dst_digest(repo, tag).await.as_ref() != Some(digest) {
                    missing.push(format!("{repo}:{tag}"));
                }
            }
            if missing.is_empty() {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "still not copied after {limit:?}: {missing:?}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Tags of a destination repository (empty when it does not exist).
    pub async fn tags_at(&self, repo: &str) -> Vec<String> {
        let resp = self
            .dst
            .client()
            .get(format!("{}/v2/{repo}/tags/list", self.dst.url()))
            .send()
            .await
            .unwrap();
        if resp.status().as_u16() == 404 {
            return Vec::new();
        }
        let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        v["tags"]
            .as_array()
            .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }

    /// Writes the config (`repos` from source repo → tags), plain HTTP to both registries.
    pub fn config_for(&self, source_host: &str, repos: &[(&str, &[&str])]) -> Value {
        let config = json!({
            "destination_registry": self.dst.host(),
            "repos": repos.iter().map(|(repo, tags)| json!({
                "source": format!("{source_host}/{repo}"), "tags": tags
            })).collect::<Vec<_>>(),
            "registries": {
                source_host: {"plain_http": true},
                self.dst.host(): {"plain_http": true},
            },
        });
        self.write_config(&config);
        config
    }

    /// Like [`Stack::config_for`], with the source named as the ECR registry [`ECR_SOURCE`] and
    /// served by the local source registry, as push events name it.
    pub fn ecr_source_config(&self, repos: &[(&str, &[&str])]) {
        let mut config = self.config_for(ECR_SOURCE, repos);
        config["registries"][ECR_SOURCE] =
            serde_json::json!({"endpoint": self.src.url(), "plain_http": true, "ecr_auth": false});
        self.write_config(&config);
    }

    pub fn write_config(&self, config: &Value) {
        std::fs::write(
            self.dir.path().join("config.json"),
            serde_json::to_vec_pretty(config).unwrap(),
        )
        .unwrap();
    }

    /// Runs `ecr-sync ARGS` to the end.
    pub fn planner(&self, args: &[&str]) -> Run {
        self.planner_with_env(args, &[])
    }

    /// [`Stack::planner`] with extra environment.
    pub fn planner_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let out = Command::new(planner_bin())
            .args(args)
            .envs(self.env())
            .envs(env.iter().copied())
            .env_remove("AWS_PROFILE")
            .output()
            .expect("run ecr-sync");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    }

    /// `plan --json`, asserting success.
    pub fn plan(&self) -> Value {
        self.planner(&["plan", "--json"]).ok().json()
    }

    /// Starts a worker with a short visibility, retry delay and poll (unless `extra` sets them),
    /// and `extra` args.
    pub fn worker(&self, extra: &[&str]) -> Worker {
        self.worker_with_env(extra, &[])
    }

    /// [`Stack::worker`] with extra environment (e.g. `AWS_ENDPOINT_URL` through a proxy).
    pub fn worker_with_env(&self, extra: &[&str], env: &[(&str, &str)]) -> Worker {
        let n = self
            .workers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stdout = self.dir.path().join(format!("worker{n}.out"));
        let stderr = self.dir.path().join(format!("worker{n}.err"));
        let id = format!("w{n}");
        let defaults = [
            ("--worker-id", id.as_str()),
            ("--visibility-seconds", "3"),
            ("--retry-delay-seconds", "1"),
            ("--wait-seconds", "1"),
        ];
        let child = Command::new(env!("CARGO_BIN_EXE_ecr-sync-worker"))
            .args(
                defaults
                    .iter()
                    .filter(|(flag, _)| !extra.contains(flag))
                    .flat_map(|(flag, value)| [*flag, *value]),
            )
            .args(extra)
            .envs(self.env())
            .envs(env.iter().copied())
            .env_remove("AWS_PROFILE")
            .stdout(Stdio::from(std::fs::File::create(&stdout).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(&stderr).unwrap()))
            .spawn()
            .expect("start ecr-sync-worker");
        Worker {
            child,
            stdout,
            stderr,
        }
    }

    /// `status RUN --json`.
    pub fn status(&self, run: &str) -> Value {
        self.planner(&["status", run, "--json"]).ok().json()
    }

    /// `job show ID --json`.
    pub fn job(&self, id: &str) -> Value {
        self.planner(&["job", "show", id, "--json"]).ok().json()
    }

    /// `dlq list --json`.
    pub fn dlq(&self) -> Vec<Value> {
        self.planner(&["dlq", "list", "--json"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .clone()
    }

    /// An SQS client on moto.
    pub async fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::Config::builder()
                .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
                .region(aws_sdk_sqs::config::Region::new("us-east-1"))
                .endpoint_url(self.moto.endpoint())
                .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                    "testing", "testing", None, None, "test",
                ))
                .build(),
        )
    }

    /// Puts a raw body on the jobs queue.
    pub async fn send_raw(&self, body: &str) {
        self.sqs()
            .await
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }

    /// Takes one message off the jobs queue (deleting it) and returns its body.
    pub async fn take_message(&self) -> String {
        let sqs = self.sqs().await;
        let got = sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .wait_time_seconds(2)
            .send()
            .await
            .unwrap();
        let msg = got.messages().first().expect("a message on the jobs queue");
        sqs.delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(msg.receipt_handle().unwrap())
            .send()
            .await
            .unwrap();
        msg.body().unwrap().to_string()
    }

    /// Approximate (visible + in flight) messages in a queue.
    pub async fn depth(&self, url: &str) -> u64 {
        let (visible, hidden) = self.counts(url).await;
        visible + hidden
    }

    /// Approximate (visible, in flight) messages in a queue.
    pub async fn counts(&self, url: &str) -> (u64, u64) {
        let out = self
            .sqs()
            .await
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
            .send()
            .await
            .unwrap();
        let attrs = out.attributes().unwrap();
        let get = |k: aws_sdk_sqs::types::QueueAttributeName| {
            attrs
                .get(&k)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        (
            get(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages),
            get(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        )
    }

    /// The digest a tag points at in the destination, if any.
    pub async fn dst_digest(&self, repo: &str, tag: &str) -> Option<String> {
        self.dst.digest(repo, tag).await
    }
}

/// Polls `check` every 200 ms until it returns true or `limit` passes.
pub async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub use ecr_sync_testkit::events::ECR_SOURCE;

/// An ECR "Image Action" push event from [`ECR_SOURCE`]'s account, as EventBridge delivers it
/// (each with its own event id, as EventBridge gives them; a redelivery repeats the body).
pub fn push_event(repo: &str, tag: &str, digest: &str) -> String {
    static EVENTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let id = format!(
        "event-{}-{}",
        std::process::id(),
        EVENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    ecr_sync_testkit::events::ecr_push_event(repo, tag, digest, &id)
}
