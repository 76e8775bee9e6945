//! Where a run happens: the local stack — moto behind testkit's counting AWS proxy, a source
//! registry behind a fault-injecting proxy, a destination registry, and the queue, dead-letter
//! queue and ledger table `ecr-sync bootstrap` makes, everything on 127.0.0.1 and stopped when
//! the stack is dropped — or resources given ([`Given`]): registries (ECR or any other) and,
//! for the fleet, a queue, its dead-letter queue and a ledger table, reached with the process's
//! own AWS settings (environment, profile or role).

use anyhow::{bail, Context};
use ecr_sync::aws::Aws;
use ecr_sync::config::{is_ecr_host, Config, EcrHost, Files, RegistrySettings, RepoDefaults};
use ecr_sync::ecr::EcrApi;
use ecr_sync_testkit::awsproxy::AwsProxy;
use ecr_sync_testkit::moto::MotoProcess;
use ecr_sync_testkit::proxy::{Faults, Proxy};
use ecr_sync_testkit::registry::{RegistryOpts, RegistryProcess};
use ecr_sync_testkit::seed::Seeder;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

/// The log filter of the processes a run starts, unless `RUST_LOG` says otherwise: `info`,
/// and the fleet's per-job `debug` lines (job queued by the plan, job received by a worker).
pub const FLEET_LOG: &str = "info,ecr_sync::fleet::plan=debug,ecr_sync::fleet::worker=debug";

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

/// The local stack's own parts.
pub struct Local {
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
}

/// Resources to run on instead of the local stack: a user's own AWS account, or anything
/// already running.
#[derive(Debug, Clone, Default)]
pub struct Given {
    /// The source registry, `host[:port]` as the config names it.
    pub source_registry: String,
    /// The destination registry, `host[:port]`.
    pub destination_registry: String,
    /// The config's `registries` object (endpoints, `plain_http`, credentials), if any.
    pub registries: Option<Value>,
    /// The fleet's jobs queue, dead-letter queue and ledger table (fleet mode only).
    pub queue_url: Option<String>,
    pub dlq_url: Option<String>,
    pub ledger_table: Option<String>,
}

/// One registry as the load test itself reaches it (to push the fleet, to read the
/// destination): its host as the config names it, the URL requests go to, and Basic
/// credentials — an ECR authorization token for ECR hosts, `username_env`/`password_env`
/// otherwise.
#[derive(Clone)]
pub struct Endpoint {
    /// `host[:port]` as the config names it.
    pub host: String,
    /// `scheme://host[:port]` requests go to.
    pub url: String,
    client: reqwest::Client,
    auth: Option<(String, String)>,
    ecr: Option<(Arc<EcrApi>, EcrHost)>,
}

impl Endpoint {
    /// A registry without auth at `url`, named `host` in the config.
    pub fn plain(host: String, url: String) -> Endpoint {
        Endpoint {
            host,
            url,
            client: reqwest::Client::new(),
            auth: None,
            ecr: None,
        }
    }

    /// Registry `host` with its config `settings`; ECR hosts get a token through `aws`.
    pub async fn resolve(
        host: &str,
        settings: &RegistrySettings,
        aws: &Aws,
    ) -> anyhow::Result<Endpoint> {
        let url = match &settings.endpoint {
            Some(e) => e.clone(),
            None if settings.plain_http => format!("http://{host}"),
            None => format!("https://{host}"),
        };
        let mut client = reqwest::Client::builder();
        if let Some(ca) = &settings.ca_file {
            let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
            client = client.add_root_certificate(
                reqwest::Certificate::from_pem(&pem)
                    .with_context(|| format!("{} is not a PEM certificate", ca.display()))?,
            );
        }
        let mut endpoint = Endpoint {
            client: client.build()?,
            ..Endpoint::plain(host.to_string(), url)
        };
        if settings.uses_ecr_auth(host) {
            let ecr_host = is_ecr_host(host)
                .with_context(|| format!("{host} uses ECR auth but is not an ECR host"))?;
            let api = Arc::new(EcrApi::new(aws.sdk().await));
            let (user, password, _) = api
                .token(&ecr_host)
                .await
                .with_context(|| format!("cannot get an ECR authorization token for {host}"))?;
            endpoint.auth = Some((user, password));
            endpoint.ecr = Some((api, ecr_host));
        } else if let (Some(u), Some(p)) = (&settings.username_env, &settings.password_env) {
            let var = |name: &str| {
                std::env::var(name)
                    .with_context(|| format!("{host}: environment variable {name} is not set"))
            };
            endpoint.auth = Some((var(u)?, var(p)?));
        }
        Ok(endpoint)
    }

    /// A pusher into this registry.
    pub fn seeder(&self) -> Seeder {
        Seeder::new(self.client.clone(), &self.url, self.auth.clone())
    }

    /// Creates `repos` when this is an ECR registry (a push to a missing ECR repository is
    /// refused); an existing repository is left as it is. Other registries make repositories
    /// on push.
    pub async fn create_repositories(&self, repos: &[String]) -> anyhow::Result<()> {
        let Some((api, host)) = &self.ecr else {
            return Ok(());
        };
        let defaults = RepoDefaults {
            scan_on_push: false,
            // Mutable: the same fleet can be generated again into the same repositories.
            tag_immutability: false,
            ..RepoDefaults::default()
        };
        for repo in repos {
            api.create_repository(host, repo, &defaults)
                .await
                .with_context(|| format!("cannot create {repo} in {}", self.host))?;
        }
        Ok(())
    }

    /// The digest `repo:tag` holds (`None`: no such tag).
    pub async fn digest(&self, repo: &str, tag: &str) -> anyhow::Result<Option<String>> {
        let mut req = self
            .client
            .head(format!("{}/v2/{repo}/manifests/{tag}", self.url))
            .header("Accept", ecr_sync_testkit::seed::MANIFEST_ACCEPT);
        if let Some((u, p)) = &self.auth {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot read {repo}:{tag} at {}", self.host))?;
        match resp.status() {
            s if s.is_success() => Ok(resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)),
            reqwest::StatusCode::NOT_FOUND => Ok(None),
            s => bail!("{repo}:{tag} at {} answered {s}", self.host),
        }
    }
}

/// Where a run happens, and its working directory.
pub struct Stack {
    /// The local stack's parts; `None` on given resources.
    local: Option<Local>,
    /// The source registry.
    pub source: Endpoint,
    /// The destination registry.
    pub destination: Endpoint,
    /// The config's `registries` object.
    registries: Value,
    /// The AWS settings the load test itself uses (ledger reads, ECR tokens).
    aws: Aws,
    /// Config, reports, ledgers and logs.
    pub dir: tempfile::TempDir,
    /// The planner and worker binaries' directory.
    pub bins: PathBuf,
    /// Jobs queue, dead-letter queue and ledger table (given, or after
    /// [`Stack::bootstrap`]).
    pub queue_url: String,
    pub dlq_url: String,
    pub table: String,
}

impl Stack {
    /// Starts the local stack: moto, the two registries and the proxies.
    pub async fn start_local(bins: PathBuf) -> anyhow::Result<Stack> {
        let moto = MotoProcess::start().await;
        let aws = AwsProxy::start(&moto.endpoint()).await;
        let src = RegistryProcess::start(RegistryOpts::default()).await;
        let src_proxy = Proxy::start(&src.url(), Faults::default()).await;
        let dst = RegistryProcess::start(RegistryOpts::default()).await;
        let dst_proxy = Proxy::start(&dst.url(), Faults::default()).await;
        // The fleet is pushed and checked directly, not through the proxies: their counts and
        // faults are the run's.
        let source = Endpoint::plain(src_proxy.host(), src.url());
        let destination = Endpoint::plain(dst_proxy.host(), dst.url());
        let registries = serde_json::json!({
            src_proxy.host(): { "plain_http": true },
            dst_proxy.host(): { "plain_http": true },
        });
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(moto.endpoint())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "testing", "testing", None, None, "loadtest",
            ))
            .load()
            .await;
        Ok(Stack {
            local: Some(Local {
                moto,
                aws,
                src,
                src_proxy,
                dst,
                dst_proxy,
            }),
            source,
            destination,
            registries,
            aws: Aws::from_sdk(sdk),
            dir: tempfile::tempdir()?,
            bins,
            queue_url: String::new(),
            dlq_url: String::new(),
            table: String::new(),
        })
    }

    /// Resources given: checks the registries settings as the config would (errors name the
    /// field), and reaches both registries (an ECR host's token is fetched here).
    pub async fn given(bins: PathBuf, given: Given) -> anyhow::Result<Stack> {
        let registries = given
            .registries
            .clone()
            .unwrap_or_else(|| serde_json::json!({}));
        let probe = serde_json::json!({
            "destination_registry": given.destination_registry,
            "repos": [{ "source": format!("{}/probe", given.source_registry) }],
            "registries": registries,
        });
        let config = Config::from_json(
            &probe.to_string(),
            "--source-registry, --destination-registry and --registries",
            Files {
                base_dir: None,
                readable: &ecr_sync::config_source::readable_file,
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let aws = Aws::new();
        let source = Endpoint::resolve(
            &given.source_registry,
            &config.registry(&given.source_registry),
            &aws,
        )
        .await?;
        let destination = Endpoint::resolve(
            &given.destination_registry,
            &config.registry(&given.destination_registry),
            &aws,
        )
        .await?;
        let fleet = [&given.queue_url, &given.dlq_url, &given.ledger_table];
        let named = fleet.iter().filter(|v| v.is_some()).count();
        if named != 0 && named != 3 {
            bail!("--queue-url, --dlq-url and --ledger-table go together: give all three or none");
        }
        Ok(Stack {
            local: None,
            source,
            destination,
            registries,
            aws,
            dir: tempfile::tempdir()?,
            bins,
            queue_url: given.queue_url.unwrap_or_default(),
            dlq_url: given.dlq_url.unwrap_or_default(),
            table: given.ledger_table.unwrap_or_default(),
        })
    }

    /// The local stack's parts (faults, counts), if this is the local stack.
    pub fn local(&self) -> Option<&Local> {
        self.local.as_ref()
    }

    /// The AWS settings the load test itself uses.
    pub fn aws(&self) -> &Aws {
        &self.aws
    }

    /// Pushes the fleet `spec` describes into the source (making its repositories first where
    /// the registry needs that, as ECR does).
    pub async fn generate(
        &self,
        spec: &crate::generate::FleetSpec,
    ) -> anyhow::Result<crate::generate::Generated> {
        self.source
            .create_repositories(&crate::generate::repo_names(spec))
            .await?;
        crate::generate::generate_with(self.source.seeder(), spec).await
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

    /// Writes a config copying `repos` from the source to the same names at the destination
    /// (local stack: through the proxies, plain HTTP).
    pub fn write_config(&self, repos: &[String], concurrency: usize) -> anyhow::Result<()> {
        let src = &self.source.host;
        let config = serde_json::json!({
            "destination_registry": self.destination.host,
            "repos": repos.iter().map(|r| serde_json::json!({ "source": format!("{src}/{r}") }))
                .collect::<Vec<_>>(),
            "registries": self.registries,
            "concurrency": { "jobs": concurrency },
        });
        std::fs::write(self.config_path(), serde_json::to_vec_pretty(&config)?)?;
        Ok(())
    }

    /// Environment for the binaries: the resources and the config; on the local stack, AWS
    /// through the counting proxy (given resources: the process's own AWS settings).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if let Some(local) = &self.local {
            env = local.moto.env();
            let aws = local.aws.endpoint();
            for (k, v) in env.iter_mut() {
                if k.starts_with("AWS_ENDPOINT_URL") {
                    *v = aws.clone();
                }
            }
        }
        // Every job's queueing and each receive of it are logged, so a run that loses a tag
        // can say whether its message was sent and received.
        let log = std::env::var("RUST_LOG").unwrap_or_else(|_| FLEET_LOG.to_string());
        env.extend([
            ("RUST_LOG".into(), log),
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
        c.envs(self.env());
        if self.local.is_some() {
            c.env_remove("AWS_PROFILE");
        }
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
