//! The local stack a run uses: moto behind testkit's counting AWS proxy, a source registry
//! behind a fault-injecting proxy, a destination registry, and the queue, dead-letter queue
//! and ledger table `ecr-sync bootstrap` makes. Everything listens on 127.0.0.1 and stops
//! when the stack is dropped.

use anyhow::{bail, Context};
use ecr_sync_testkit::awsproxy::AwsProxy;
use ecr_sync_testkit::moto::MotoProcess;
use ecr_sync_testkit::proxy::{Faults, Proxy};
use ecr_sync_testkit::registry::{RegistryOpts, RegistryProcess};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where the planner and worker binaries are: `dir` (given), else next to this executable
/// (cargo puts every workspace binary in one `target/<profile>` directory; tests run from its
/// `deps/`).
pub fn bin_dir(dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(d) = dir {
        return Ok(d);
    }
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let mut d = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if d.ends_with("deps") {
        d.pop();
    }
    for bin in ["ecr-sync", "ecr-sync-worker"] {
        if !d.join(bin).is_file() {
            bail!(
                "{bin} is not in {} (build the workspace first: cargo build --workspace, or pass --bin-dir)",
                d.display()
            );
        }
    }
    Ok(d)
}

/// The running stack.
pub struct LocalStack {
    /// moto: SQS, DynamoDB (and ECR, S3) for the fleet.
    pub moto: MotoProcess,
    /// Counts (and can fail) every AWS call on its way to moto; the binaries use it.
    pub aws: AwsProxy,
    /// The source registry.
    pub src: RegistryProcess,
    /// Faults on the way to the source registry; the config names it as the source.
    pub src_proxy: Proxy,
    /// The destination registry.
    pub dst: RegistryProcess,
    /// Counts the requests on their way to the destination (no faults); the config names it
    /// as the destination, so manifest PUTs per tag can be counted (duplicated copies).
    pub dst_proxy: Proxy,
    /// Config, reports, ledgers and logs.
    pub dir: tempfile::TempDir,
    /// The planner and worker binaries' directory.
    pub bins: PathBuf,
    /// Jobs queue, dead-letter queue and ledger table (after [`LocalStack::bootstrap`]).
    pub queue_url: String,
    pub dlq_url: String,
    pub table: String,
}

impl LocalStack {
    /// Starts moto, the two registries and the proxies.
    pub async fn start(bins: PathBuf) -> anyhow::Result<LocalStack> {
        let moto = MotoProcess::start().await;
        let aws = AwsProxy::start(&moto.endpoint()).await;
        let src = RegistryProcess::start(RegistryOpts::default()).await;
        let src_proxy = Proxy::start(&src.url(), Faults::default()).await;
        let dst = RegistryProcess::start(RegistryOpts::default()).await;
        let dst_proxy = Proxy::start(&dst.url(), Faults::default()).await;
        Ok(LocalStack {
            moto,
            aws,
            src,
            src_proxy,
            dst,
            dst_proxy,
            dir: tempfile::tempdir()?,
            bins,
            queue_url: String::new(),
            dlq_url: String::new(),
            table: String::new(),
        })
    }

    /// Makes the queue, its dead-letter queue (redrive after `max_receive_count` receives)
    /// and the ledger table.
    pub fn bootstrap(&mut self, max_receive_count: u32) -> anyhow::Result<()> {
        let out = self.planner(&[
            "bootstrap",
            "--name",
            "loadtest",
            "--max-receive-count",
            &max_receive_count.to_string(),
            "--json",
        ])?;
        let v: Value = json_of(&out, "bootstrap")?;
        let field = |k: &str| v[k].as_str().map(str::to_string);
        let (Some(q), Some(d), Some(t)) =
            (field("queue_url"), field("dlq_url"), field("ledger_table"))
        else {
            bail!("bootstrap printed no queue, DLQ and table: {v}");
        };
        (self.queue_url, self.dlq_url, self.table) = (q, d, t);
        Ok(())
    }

    /// The stack's process logs (workers, planner, sync), copied into `dir`; returns how many.
    pub fn save_logs(&self, dir: &Path) -> anyhow::Result<usize> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut saved = 0;
        for file in self.log_files() {
            let name = file.file_name().unwrap_or_default();
            std::fs::copy(&file, dir.join(name))
                .with_context(|| format!("cannot copy {}", file.display()))?;
            saved += 1;
        }
        Ok(saved)
    }

    /// The stack's process log files, by name.
    fn log_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|f| f.extension().is_some_and(|e| e == "err" || e == "log"));
        files.sort();
        files
    }

    /// Every line of the stack's process logs (workers, planner) about `image`
    /// (`repository:tag`), and any panic, prefixed with its file's name: what a failed run
    /// shows about a lost tag.
    pub fn log_lines_about(&self, image: &str) -> String {
        let (repo, tag) = image.rsplit_once(':').unwrap_or((image, ""));
        let tag_field = format!("tag={tag}");
        let about = |line: &str| {
            line.contains("panicked")
                || (line.contains(repo)
                    && line.match_indices(&tag_field).any(|(i, _)| {
                        !line[i + tag_field.len()..].starts_with(|c: char| c.is_alphanumeric())
                    }))
        };
        let mut out = String::new();
        for file in self.log_files() {
            let name = file.file_name().unwrap_or_default().to_string_lossy();
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            for line in text.lines().filter(|l| about(l)) {
                out.push_str(&format!("{name}: {line}\n"));
            }
        }
        out
    }

    /// The config file's path.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.json")
    }

    /// Writes a config copying `repos` from the source (through its proxy) to the same names
    /// at the destination, plain HTTP.
    pub fn write_config(&self, repos: &[String], concurrency: usize) -> anyhow::Result<()> {
        let src = self.src_proxy.host();
        let config = serde_json::json!({
            "destination_registry": self.dst_proxy.host(),
            "repos": repos.iter().map(|r| serde_json::json!({ "source": format!("{src}/{r}") }))
                .collect::<Vec<_>>(),
            "registries": {
                src: { "plain_http": true },
                self.dst_proxy.host(): { "plain_http": true },
            },
            "concurrency": { "jobs": concurrency },
        });
        std::fs::write(self.config_path(), serde_json::to_vec_pretty(&config)?)?;
        Ok(())
    }

    /// Environment for the binaries: AWS through the counting proxy, the resources, the
    /// config.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = self.moto.env();
        let aws = self.aws.endpoint();
        for (k, v) in env.iter_mut() {
            if k.starts_with("AWS_ENDPOINT_URL") {
                *v = aws.clone();
            }
        }
        env.extend([
            ("ECR_SYNC_QUEUE_URL".into(), self.queue_url.clone()),
            ("ECR_SYNC_DLQ_URL".into(), self.dlq_url.clone()),
            ("ECR_SYNC_LEDGER_TABLE".into(), self.table.clone()),
            (
                "ECR_SYNC_CONFIG".into(),
                self.config_path().display().to_string(),
            ),
        ]);
        env
    }

    /// A command for binary `name` with the stack's environment.
    pub fn command(&self, name: &str) -> Command {
        let mut c = Command::new(self.bins.join(name));
        c.envs(self.env()).env_remove("AWS_PROFILE");
        c
    }

    /// Runs `ecr-sync ARGS` to the end.
    pub fn planner(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.command("ecr-sync")
            .args(args)
            .output()
            .with_context(|| format!("cannot run ecr-sync {}", args.join(" ")))
    }

    /// `ecr-sync ARGS --json`'s output as JSON, failing on a non-zero exit.
    pub fn planner_json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let out = self.planner(args)?;
        json_of(&out, &args.join(" "))
    }
}

/// The JSON a successful command printed.
pub fn json_of(out: &Output, what: &str) -> anyhow::Result<Value> {
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("{what} failed ({}): {}", out.status, tail.join("\n"));
    }
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "{what} printed no JSON: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The peak resident memory of a live process (`VmHWM`), MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// CPU seconds a live process has used (user + system).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}
