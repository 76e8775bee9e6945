//! The commands, one file each. Glue only: check arguments, call the library, print a table (or
//! JSON), choose the exit code.

mod bootstrap;
mod dlq;
mod job;
mod plan;
mod status;
pub mod sync;
mod table;

pub use sync::{run_sync, run_validate};

use crate::cli::{BootstrapArgs, DlqCommand, FleetArgs, JobCommand, PlanArgs};
use anyhow::bail;
use ecr_sync::aws::Aws;
use ecr_sync::console::exit;
use ecr_sync::fleet::ledger::FleetLedger;
use ecr_sync::fleet::ops::Selection;
use ecr_sync::fleet::queue::Queue;
use ecr_sync::retry::RetryPolicy;

/// A usage problem: printed, exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// The registry retry policy: millisecond backoff under `ECR_SYNC_FAST_RETRY` (the test suite;
/// undocumented for users on purpose), else the default.
pub fn retry_policy() -> RetryPolicy {
    if std::env::var_os("ECR_SYNC_FAST_RETRY").is_some() {
        RetryPolicy::fast()
    } else {
        RetryPolicy::default()
    }
}

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
    pub async fn open(args: &FleetArgs, aws: &Aws) -> Fleet {
        let sqs = aws.sqs().await;
        let ledger = match args.ledger_table.as_deref() {
            Some(t) => Some(FleetLedger::new(aws.dynamodb().await, t)),
            None => None,
        };
        Fleet {
            ledger,
            queue: args
                .queue_url
                .as_deref()
                .map(|u| Queue::new(sqs.clone(), u)),
            dlq: args.dlq_url.as_deref().map(|u| Queue::new(sqs.clone(), u)),
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
    match dispatch(command, &Aws::new()).await {
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
    Status(Option<String>, FleetArgs, bool, std::time::Duration),
    /// `dlq …`.
    Dlq(DlqCommand),
    /// `job …`.
    Job(JobCommand),
}

async fn dispatch(command: FleetCommand, aws: &Aws) -> anyhow::Result<u8> {
    match command {
        FleetCommand::Plan(args) => plan::run(args, aws).await,
        FleetCommand::Bootstrap(args) => bootstrap::run(args, aws).await,
        FleetCommand::Status(run, fleet, json, stalled_after) => {
            status::run(run, fleet, json, stalled_after, aws).await
        }
        FleetCommand::Dlq(DlqCommand::List { fleet, json }) => dlq::list(fleet, json, aws).await,
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
                (false, true, Some(c)) => match c.parse() {
                    Ok(class) => Selection::ErrorClass(class),
                    Err(e) => bail!(Usage(format!("--error-class: {e}"))),
                },
                (false, true, None) => bail!(Usage(
                    "say what to replay: --all, --job ID or --error-class CLASS".into()
                )),
            };
            dlq::replay(fleet, selection, json, aws).await
        }
        FleetCommand::Job(JobCommand::Show { id, fleet, json }) => {
            job::show(id, fleet, json, aws).await
        }
    }
}
