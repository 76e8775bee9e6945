//! The fleet commands: `plan`, `bootstrap`, `status`, `dlq list|replay`, `job show`. Glue only:
//! check arguments, call `ecr_sync::fleet`, print a table (or JSON), choose the exit code.

use crate::cli::{BootstrapArgs, DlqCommand, FleetArgs, JobCommand, PlanArgs};
use crate::exit;
use anyhow::{bail, Context as _};
use ecr_sync::config;
use ecr_sync::fleet::ledger::{bootstrap_table, FleetLedger};
use ecr_sync::fleet::ops::{self, Selection};
use ecr_sync::fleet::plan::{plan, PlanOptions};
use ecr_sync::fleet::queue::{bootstrap_queues, Queue};
use ecr_sync::fleet::{aws_config, dynamodb_client, sqs_client};
use ecr_sync::retry::RetryPolicy;
use ecr_sync::sync::human_bytes;

/// A usage problem: printed, exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// The resources a command needs, made from the flags.
pub struct Fleet {
    /// The jobs queue.
    pub queue: Option<Queue>,
    /// The dead-letter queue (given, or from the redrive policy when asked for).
    pub dlq: Option<Queue>,
    /// The ledger.
    pub ledger: Option<FleetLedger>,
}

impl Fleet {
    /// Clients for whatever `args` names.
    pub async fn open(args: &FleetArgs) -> Fleet {
        let sdk = aws_config().await;
        let sqs = sqs_client(&sdk);
        Fleet {
            queue: args
                .queue_url
                .as_deref()
                .map(|u| Queue::new(sqs.clone(), u)),
            dlq: args.dlq_url.as_deref().map(|u| Queue::new(sqs.clone(), u)),
            ledger: args
                .ledger_table
                .as_deref()
                .map(|t| FleetLedger::new(dynamodb_client(&sdk), t)),
        }
    }

    /// The jobs queue, or a usage error naming the flag.
    pub fn queue(&self) -> Result<&Queue, Usage> {
        self.queue.as_ref().ok_or_else(|| {
            Usage("the jobs queue is not set: pass --queue-url or set ECR_SYNC_QUEUE_URL".into())
        })
    }

    /// The ledger, or a usage error naming the flag.
    pub fn ledger(&self) -> Result<&FleetLedger, Usage> {
        self.ledger.as_ref().ok_or_else(|| {
            Usage(
                "the ledger table is not set: pass --ledger-table or set ECR_SYNC_LEDGER_TABLE"
                    .into(),
            )
        })
    }

    /// The dead-letter queue: given, or found through the jobs queue's redrive policy.
    pub async fn dlq(&self) -> anyhow::Result<Queue> {
        if let Some(d) = &self.dlq {
            return Ok(d.clone());
        }
        let queue = self.queue.as_ref().ok_or_else(|| {
            Usage("the dead-letter queue is not set: pass --dlq-url (or --queue-url to find it through the redrive policy), or set ECR_SYNC_DLQ_URL".into())
        })?;
        match queue.dead_letter_queue().await? {
            Some(d) => Ok(d),
            None => bail!(Usage(format!(
                "{} has no redrive policy; pass --dlq-url",
                queue.url()
            ))),
        }
    }
}

/// Runs a fleet command; usage problems become exit 2, other errors exit 1.
pub async fn run(command: FleetCommand) -> u8 {
    match dispatch(command).await {
        Ok(code) => code,
        Err(e) if e.downcast_ref::<Usage>().is_some() => {
            eprintln!("error: {e}");
            exit::USAGE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            exit::JOBS_FAILED
        }
    }
}

/// The fleet commands, as parsed.
pub enum FleetCommand {
    /// `plan`.
    Plan(PlanArgs),
    /// `bootstrap`.
    Bootstrap(BootstrapArgs),
    /// `status`.
    Status(Option<String>, FleetArgs, bool),
    /// `dlq …`.
    Dlq(DlqCommand),
    /// `job …`.
    Job(JobCommand),
}

async fn dispatch(command: FleetCommand) -> anyhow::Result<u8> {
    match command {
        FleetCommand::Plan(args) => plan_cmd(args).await,
        FleetCommand::Bootstrap(args) => bootstrap(args).await,
        FleetCommand::Status(run, fleet, json) => status(run, fleet, json).await,
        FleetCommand::Dlq(DlqCommand::List { fleet, json }) => dlq_list(fleet, json).await,
        FleetCommand::Dlq(DlqCommand::Replay {
            fleet,
            all,
            job,
            error_class,
            json,
        }) => {
            let selection = match (all, job.is_empty(), error_class) {
                (true, _, _) => Selection::All,
                (false, false, _) => Selection::Jobs(job),
                (false, true, Some(c)) => Selection::ErrorClass(c),
                (false, true, None) => bail!(Usage(
                    "say what to replay: --all, --job ID or --error-class CLASS".into()
                )),
            };
            dlq_replay(fleet, selection, json).await
        }
        FleetCommand::Job(JobCommand::Show { id, fleet, json }) => job_show(id, fleet, json).await,
    }
}

async fn plan_cmd(args: PlanArgs) -> anyhow::Result<u8> {
    let fleet = Fleet::open(&args.fleet).await;
    let (queue, ledger) = (fleet.queue()?, fleet.ledger()?);
    let (cfg, version) = match config::load_versioned(&args.config).await {
        Ok(c) => c,
        Err(e) => bail!(Usage(e.to_string())),
    };
    let opts = PlanOptions {
        config_source: args.config.clone(),
        config_version: version,
        retry: if std::env::var_os("ECR_SYNC_FAST_RETRY").is_some() {
            RetryPolicy::fast()
        } else {
            RetryPolicy::default()
        },
    };
    let report = match plan(&cfg, &opts, queue, ledger).await {
        Ok(r) => r,
        Err(ecr_sync::fleet::plan::PlanError::Setup(e)) => bail!(Usage(e.to_string())),
        Err(e) => return Err(e).context("planning stopped"),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for r in report.repositories.iter().filter(|r| r.reason.is_some()) {
            println!(
                "{:<8} {} -> {}: {}",
                r.event,
                r.source,
                r.destination,
                r.reason.as_deref().unwrap_or("")
            );
        }
        println!(
            "run {}: {} jobs queued, {} tags up to date, {} repositories failed, {} skipped ({:.1} s)",
            report.run_id,
            report.planned,
            report.up_to_date,
            report.failed_repos,
            report.skipped_repos,
            report.duration_ms as f64 / 1000.0
        );
    }
    Ok(if report.failed_repos > 0 {
        exit::JOBS_FAILED
    } else {
        exit::OK
    })
}

async fn bootstrap(args: BootstrapArgs) -> anyhow::Result<u8> {
    let name = &args.name;
    if name.is_empty()
        || name.len() > 70
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!(Usage(format!(
            "--name {name:?}: use 1 to 70 letters, digits, '-' or '_' (it prefixes queue and table names)"
        )));
    }
    let sdk = aws_config().await;
    let (queue_url, dlq_url) = bootstrap_queues(
        &sqs_client(&sdk),
        name,
        args.max_receive_count,
        args.visibility_seconds,
    )
    .await?;
    let table = format!("{name}-ledger");
    bootstrap_table(&dynamodb_client(&sdk), &table).await?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"queue_url": queue_url, "dlq_url": dlq_url, "ledger_table": table})
        );
    } else {
        println!("ECR_SYNC_QUEUE_URL={queue_url}");
        println!("ECR_SYNC_DLQ_URL={dlq_url}");
        println!("ECR_SYNC_LEDGER_TABLE={table}");
    }
    Ok(exit::OK)
}

async fn status(run: Option<String>, args: FleetArgs, json: bool) -> anyhow::Result<u8> {
    let fleet = Fleet::open(&args).await;
    let s = ops::status(fleet.ledger()?, run.as_deref()).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(exit::OK);
    }
    let r = &s.run;
    println!("run        {} ({})", r.run_id, r.state);
    println!("started    {}", r.started_at);
    println!("config     {} @ {}", r.config_source, r.config_version);
    println!(
        "planned    {} jobs, {} tags already up to date, {} repositories failed",
        r.planned, r.up_to_date, r.failed_repos
    );
    let states: Vec<String> = s.states.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("jobs       {}", states.join(", "));
    println!("copied     {}", human_bytes(s.bytes));
    if !s.slowest.is_empty() {
        println!("\nslowest jobs");
        table(
            &["JOB", "DESTINATION", "SECONDS", "BYTES"],
            s.slowest
                .iter()
                .map(|j| {
                    vec![
                        j.job_id.clone(),
                        j.destination.clone(),
                        format!("{:.1}", j.duration_ms as f64 / 1000.0),
                        human_bytes(j.bytes),
                    ]
                })
                .collect(),
        );
    }
    if !s.failed.is_empty() {
        println!("\nfailed jobs");
        table(
            &["JOB", "STATE", "ATTEMPTS", "CLASS", "DESTINATION", "REASON"],
            s.failed
                .iter()
                .map(|j| {
                    vec![
                        j.job_id.clone(),
                        j.state.clone(),
                        j.attempts.to_string(),
                        j.error_class.clone().unwrap_or_default(),
                        j.destination.clone(),
                        j.error.clone().unwrap_or_default(),
                    ]
                })
                .collect(),
        );
    }
    if !s.repositories.is_empty() {
        println!("\nrepositories not planned");
        table(
            &["EVENT", "SOURCE", "REASON"],
            s.repositories
                .iter()
                .map(|r| {
                    vec![
                        r.event.clone(),
                        r.source.clone(),
                        r.reason.clone().unwrap_or_default(),
                    ]
                })
                .collect(),
        );
    }
    Ok(exit::OK)
}

async fn dlq_list(args: FleetArgs, json: bool) -> anyhow::Result<u8> {
    let fleet = Fleet::open(&args).await;
    let dlq = fleet.dlq().await?;
    let list = ops::dlq_list(&dlq, fleet.ledger()?).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(exit::OK);
    }
    println!("{} messages in {}", list.len(), dlq.url());
    table(
        &["JOB", "STATE", "ATTEMPTS", "CLASS", "SOURCE", "REASON"],
        list.iter()
            .map(|d| {
                vec![
                    d.job_id.clone().unwrap_or_else(|| "-".into()),
                    d.state.clone().unwrap_or_default(),
                    d.attempts.to_string(),
                    d.error_class.clone().unwrap_or_default(),
                    d.source.clone().unwrap_or_default(),
                    d.parse_error
                        .clone()
                        .or(d.reason.clone())
                        .unwrap_or_default(),
                ]
            })
            .collect(),
    );
    Ok(exit::OK)
}

async fn dlq_replay(args: FleetArgs, selection: Selection, json: bool) -> anyhow::Result<u8> {
    let fleet = Fleet::open(&args).await;
    let dlq = fleet.dlq().await?;
    let report = ops::dlq_replay(
        &dlq,
        fleet.queue()?,
        fleet.ledger()?,
        &selection,
        "operator",
    )
    .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for id in &report.replayed {
            println!("replayed {id}");
        }
        println!(
            "{} replayed, {} left in the dead-letter queue, {} not job messages (left)",
            report.replayed.len(),
            report.kept,
            report.not_jobs
        );
    }
    Ok(exit::OK)
}

async fn job_show(id: String, args: FleetArgs, json: bool) -> anyhow::Result<u8> {
    let fleet = Fleet::open(&args).await;
    let (runs, history) = ops::job_show(fleet.ledger()?, &id).await?;
    if runs.is_empty() && history.is_empty() {
        bail!("no job {id} in the ledger");
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"runs": runs, "history": history}))?
        );
        return Ok(exit::OK);
    }
    if let Some(j) = runs.first() {
        println!("job     {}", j.job_id);
        println!("source  {} ({})", j.source, j.digest);
        println!("dest    {}", j.destination);
    }
    table(
        &[
            "RUN", "STATE", "ATTEMPTS", "REPLAYS", "WORKER", "UPDATED", "REASON",
        ],
        runs.iter()
            .map(|j| {
                vec![
                    j.run_id.clone(),
                    j.state.clone(),
                    j.attempts.to_string(),
                    j.replays.to_string(),
                    j.worker.clone().unwrap_or_default(),
                    j.updated_at.clone(),
                    j.error.clone().unwrap_or_default(),
                ]
            })
            .collect(),
    );
    println!("\nhistory");
    table(
        &[
            "AT", "RUN", "EVENT", "ATTEMPT", "WORKER", "BYTES", "CLASS", "REASON",
        ],
        history
            .iter()
            .map(|e| {
                vec![
                    e.at.clone(),
                    e.run_id.clone(),
                    e.event.clone(),
                    e.attempt.to_string(),
                    e.worker.clone().unwrap_or_default(),
                    e.bytes.to_string(),
                    e.error_class.clone().unwrap_or_default(),
                    e.error.clone().unwrap_or_default(),
                ]
            })
            .collect(),
    );
    Ok(exit::OK)
}

/// Prints rows under headers, columns padded to their widest cell (the last one unpadded).
fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let text: Vec<String> = cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}
