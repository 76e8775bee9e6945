//! `ecr-sync-worker`: copies the jobs on the SQS queue and records them in the DynamoDB ledger.
//! Glue only: arguments → `ecr_sync::fleet::worker::run(…, shutdown)`; SIGTERM or Ctrl-C is the
//! shutdown. Exit 0 after a clean stop (drained or released), 2 when it cannot start. Started
//! by the Lambda runtime, it serves SQS event batches instead (see [`lambda`]).

mod lambda;

use clap::Parser;
use ecr_sync::aws::Aws;
use ecr_sync::console::{exit, init_logging, shutdown_signal, LogFormat};
use ecr_sync::fleet::ledger::FleetLedger;
use ecr_sync::fleet::queue::Queue;
use ecr_sync::fleet::worker::{self, EventWorker, WorkerOptions};
use ecr_sync::retry::RetryPolicy;
use std::process::ExitCode;
use std::time::Duration;

/// ecr-sync worker: long-polls the jobs queue and copies images, any number of them in parallel.
#[derive(Debug, Parser)]
#[command(name = "ecr-sync-worker", version, about)]
struct Args {
    /// Config file or s3://bucket/key (reloaded every --config-refresh-seconds).
    #[arg(long, env = "ECR_SYNC_CONFIG")]
    config: String,
    /// URL of the jobs queue (under Lambda: the events queue the function is fed from).
    #[arg(long, env = "ECR_SYNC_QUEUE_URL")]
    queue_url: String,
    /// URL of the dead-letter queue [default: from the jobs queue's redrive policy].
    #[arg(long, env = "ECR_SYNC_DLQ_URL")]
    dlq_url: Option<String>,
    /// Name of the DynamoDB ledger table.
    #[arg(long, env = "ECR_SYNC_LEDGER_TABLE")]
    ledger_table: String,
    /// Jobs at once [default: the config's concurrency.jobs].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    concurrency: Option<u16>,
    /// After SIGTERM, seconds to let in-flight jobs finish before releasing them (keep it below
    /// the ECS stopTimeout).
    #[arg(long, env = "ECR_SYNC_DRAIN_SECONDS", default_value_t = worker::DEFAULT_DRAIN.as_secs())]
    drain_seconds: u64,
    /// Seconds a job may run before it counts as a (transient) failure (the module sets it from
    /// worker_job_deadline_seconds; the queue's visibility timeout covers it).
    #[arg(long, env = "ECR_SYNC_JOB_DEADLINE_SECONDS", default_value_t = worker::DEFAULT_JOB_DEADLINE.as_secs())]
    job_deadline_seconds: u64,
    /// Seconds a received message stays invisible; a heartbeat extends it every third of that.
    #[arg(long, default_value_t = worker::DEFAULT_VISIBILITY_SECONDS, value_parser = clap::value_parser!(u32).range(3..=43200))]
    visibility_seconds: u32,
    /// Seconds between config reloads.
    #[arg(long, default_value_t = worker::DEFAULT_CONFIG_REFRESH.as_secs())]
    config_refresh_seconds: u64,
    /// Delay in seconds before a transiently failed job's first retry (doubles per retry, at
    /// most 900).
    #[arg(long, default_value_t = worker::DEFAULT_REQUEUE_DELAY.as_secs())]
    retry_delay_seconds: u64,
    /// Seconds a transiently failing job keeps being retried before it is dead-lettered.
    #[arg(long, default_value_t = worker::DEFAULT_GIVE_UP_AFTER.as_secs())]
    give_up_after_seconds: u64,
    /// Long-poll wait in seconds.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(i32).range(0..=20))]
    wait_seconds: i32,
    /// This worker's name in the ledger [default: the ECS task id, else host-pid].
    #[arg(long)]
    worker_id: Option<String>,
    /// Stop after the queue has been empty this many seconds (batch use; default: run until
    /// SIGTERM).
    #[arg(long)]
    exit_when_idle: Option<u64>,
    /// Log format on stderr: text or json.
    #[arg(long, env = "ECR_SYNC_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format, false);
    let fast = std::env::var_os("ECR_SYNC_FAST_RETRY").is_some();
    let opts = WorkerOptions {
        config: args.config,
        worker_id: args.worker_id.unwrap_or_else(worker::default_worker_id),
        concurrency: args.concurrency.map(usize::from),
        visibility_seconds: args.visibility_seconds,
        job_deadline: Duration::from_secs(args.job_deadline_seconds),
        drain: Duration::from_secs(args.drain_seconds),
        config_refresh: Duration::from_secs(args.config_refresh_seconds.max(1)),
        requeue_delay: Duration::from_secs(args.retry_delay_seconds),
        give_up_after: Duration::from_secs(args.give_up_after_seconds),
        wait_seconds: args.wait_seconds,
        retry: if fast {
            RetryPolicy::fast()
        } else {
            RetryPolicy::default()
        },
        max_messages: None,
        exit_when_idle: args.exit_when_idle.map(Duration::from_secs),
    };
    let aws = Aws::new();
    let sqs = aws.sqs().await;
    let queue = Queue::new(sqs.clone(), &args.queue_url);
    let dlq = args.dlq_url.as_deref().map(|u| Queue::new(sqs, u));
    let ledger = FleetLedger::new(aws.dynamodb().await, &args.ledger_table);
    if lambda::under_lambda() {
        return lambda::serve(EventWorker::start(opts, aws, queue, dlq, ledger)).await;
    }
    match worker::run(opts, aws, queue, dlq, ledger, shutdown_signal()).await {
        Ok(_) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(exit::USAGE)
        }
    }
}
