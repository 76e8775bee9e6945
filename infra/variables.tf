################################################################################
# Required (the seed's interface)
################################################################################

variable "namespace" {
  description = "Prefix for every resource name (queue, table, cluster, roles, log groups). Lowercase letters, digits and hyphens, at most 28 characters (IAM role name prefixes are limited to 38 and S3 bucket prefixes to 37)."
  type        = string
  default     = "ecr-sync"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,27}$", var.namespace))
    error_message = "namespace must start with a lowercase letter and contain only lowercase letters, digits and hyphens (at most 28 characters)."
  }
}

variable "task_image_uri" {
  description = "Image repository URI of the ecr-sync container (holds both ecr-sync and ecr-sync-worker), without the tag, e.g. 111122223333.dkr.ecr.us-east-1.amazonaws.com/ecr-sync."
  type        = string
  default     = null

  validation {
    condition     = var.task_image_uri != null && length(var.task_image_uri) > 0 && !can(regex("[:@][^/]*$", var.task_image_uri))
    error_message = "task_image_uri is required and must not carry a tag or digest (use task_image_tag)."
  }
}

variable "task_image_tag" {
  description = "Tag of the ecr-sync image to run."
  type        = string
  default     = "latest"
}

variable "config" {
  description = "The sync configuration, written as JSON to S3 and read by the planner (see README: Configuration). Unset optional attributes are written as null."
  type = object({
    mode = optional(string, "create")
    repos = optional(list(object({
      source      = string
      destination = optional(string)
      tags        = optional(list(string))
      # Overrides the top-level referrers, field by field, for this repository.
      referrers = optional(object({
        enabled        = optional(bool)
        artifact_types = optional(list(string))
      }))
      # Replaces the top-level platforms for this repository.
      platforms = optional(list(string))
    })), [])
    repo_defaults = optional(object({
      scan_on_push     = optional(bool, true)
      tag_immutability = optional(bool, true)
      encryption_type  = optional(string, "AES256")
      kms_key_arn      = optional(string)
    }), {})
    destination_registry = optional(string)
    registries = optional(map(object({
      endpoint     = optional(string)
      plain_http   = optional(bool)
      ca_file      = optional(string)
      username_env = optional(string)
      password_env = optional(string)
      ecr_auth     = optional(bool)
      # Manifest PUTs per second all writers share (ECR: the PutImage quota; default 10 for ECR hosts, 0 = none).
      manifest_puts_per_second = optional(number)
    })), {})
    concurrency = optional(object({
      jobs  = optional(number)
      blobs = optional(number)
    }))
    # OCI referrers (signatures, attestations, SBOMs) copied with each image: enabled (default
    # true) and artifact_types (default: every type).
    referrers = optional(object({
      enabled        = optional(bool)
      artifact_types = optional(list(string))
    }))
    # Platforms of multi-arch images copied (os/architecture[/variant]); default: all.
    platforms = optional(list(string))
  })
  default = {}

  validation {
    condition     = contains(["create", "refresh"], var.config.mode)
    error_message = "config.mode must be \"create\" or \"refresh\"."
  }

  validation {
    condition     = contains(["AES256", "KMS"], var.config.repo_defaults.encryption_type)
    error_message = "config.repo_defaults.encryption_type must be \"AES256\" or \"KMS\"."
  }

  validation {
    condition     = var.config.repo_defaults.encryption_type != "KMS" || var.config.repo_defaults.kms_key_arn != null
    error_message = "config.repo_defaults.kms_key_arn is required when encryption_type is \"KMS\"."
  }

  validation {
    condition     = alltrue([for r in var.config.repos : can(regex("^[^/*?{}\\[\\]]+/[^*?{}\\[\\]]+$", r.source))])
    error_message = "config.repos[*].source must be a full repository URI (registry host/path) without glob characters."
  }

  validation {
    condition     = alltrue([for r in var.config.repos : r.tags == null ? true : length(r.tags) > 0 && alltrue([for t in r.tags : length(t) > 0])])
    error_message = "config.repos[*].tags, when set, must be a non-empty list of non-empty glob patterns (omit it to sync all tags)."
  }

  validation {
    condition = alltrue([
      for r in concat([var.config.referrers], [for repo in var.config.repos : repo.referrers]) :
      r == null ? true : r.artifact_types == null ? true : length(r.artifact_types) > 0 && alltrue([for t in r.artifact_types : can(regex("^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$", t))])
    ])
    error_message = "config.referrers.artifact_types and config.repos[*].referrers.artifact_types, when set, must be non-empty lists of media types (type/subtype, such as application/vnd.dev.cosign.artifact.sig.v1+json)."
  }

  validation {
    condition = alltrue([
      for list in concat([var.config.platforms], [for repo in var.config.repos : repo.platforms]) :
      list == null ? true : length(list) > 0 && alltrue([for p in list : can(regex("^[a-z0-9_-]+/[a-z0-9_-]+(/[a-z0-9_-]+)?$", p))])
    ])
    error_message = "config.platforms and config.repos[*].platforms, when set, must be non-empty lists of os/architecture[/variant] (such as linux/amd64 or linux/arm/v7)."
  }

  validation {
    condition = var.config.concurrency == null ? true : alltrue([
      for n in [var.config.concurrency.jobs, var.config.concurrency.blobs] : n == null ? true : n >= 1 && floor(n) == n
    ])
    error_message = "config.concurrency.jobs and .blobs must be positive integers."
  }
}

variable "schedule" {
  description = "EventBridge Scheduler expression that runs the planner (cron(...), rate(...) or at(...))."
  type        = string
  default     = "rate(1 day)"

  validation {
    condition     = can(regex("^(cron|rate|at)\\(.+\\)$", var.schedule))
    error_message = "schedule must be a cron(...), rate(...) or at(...) expression."
  }
}

variable "schedule_timezone" {
  description = "Time zone the schedule expression is evaluated in."
  type        = string
  default     = "UTC"
}

variable "schedule_enabled" {
  description = "Whether the planner schedule is ENABLED (false: DISABLED, e.g. while migrating)."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags added to every resource the module creates."
  type        = map(string)
  default     = {}
}

################################################################################
# Networking (the seed's interface)
################################################################################

variable "task_vpc_id" {
  description = "VPC for the planner and worker tasks. null: the account's default VPC and its default subnets."
  type        = string
  default     = null
}

variable "task_subnet_ids" {
  description = "Subnets for the tasks. Required when task_vpc_id is set; ignored otherwise (the default VPC's default subnets are used)."
  type        = list(string)
  default     = []
}

variable "task_assign_public_ip" {
  description = "Assign a public IP to the tasks. Needed in a default VPC (no NAT); set false in a private VPC with NAT or VPC endpoints."
  type        = bool
  default     = true
}

variable "task_egress_cidr_blocks" {
  description = "Destinations the task security group allows (TCP on task_egress_ports)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "task_egress_prefix_list_ids" {
  description = "Managed prefix lists the task security group allows (TCP on task_egress_ports), e.g. the S3 and DynamoDB gateway endpoints' prefix lists when task_egress_cidr_blocks is narrowed to the VPC."
  type        = list(string)
  default     = []
}

variable "task_egress_ports" {
  description = "TCP ports the task security group allows out. 443 covers AWS APIs and ECR; add a port for a registry on another one."
  type        = list(number)
  default     = [443]

  validation {
    condition     = alltrue([for p in var.task_egress_ports : p >= 1 && p <= 65535])
    error_message = "task_egress_ports must be TCP ports (1-65535)."
  }
}

################################################################################
# Tasks
################################################################################

variable "task_secrets" {
  description = "Extra environment variables of both tasks filled by ECS from Secrets Manager secrets or SSM parameters: name => ARN (a Secrets Manager ARN may end in a JSON key, `…:secret:name-AbCdEf:password::`). Use it for the `username_env`/`password_env` names in config.registries. The execution role may read exactly these."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k, arn in var.task_secrets : can(regex("^[A-Z_][A-Z0-9_]*$", k)) && can(regex("^arn:[a-z-]+:(secretsmanager|ssm):", arn))])
    error_message = "task_secrets: names must be environment variable names and values Secrets Manager or SSM parameter ARNs."
  }
}

variable "planner_cpu" {
  description = "Fargate CPU units for the planner task."
  type        = number
  default     = 512
}

variable "planner_memory" {
  description = "Fargate memory (MiB) for the planner task."
  type        = number
  default     = 1024
}

variable "worker_cpu" {
  description = "Fargate CPU units for one worker task."
  type        = number
  default     = 1024
}

variable "worker_memory" {
  description = "Fargate memory (MiB) for one worker task. Blobs stream through; memory grows with config.concurrency.blobs, not with image size."
  type        = number
  default     = 2048
}

variable "cpu_architecture" {
  description = "CPU architecture of the image: X86_64 or ARM64."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture must be X86_64 or ARM64."
  }
}

variable "worker_stop_timeout" {
  description = "ECS stopTimeout (seconds) of the worker container: time between SIGTERM and SIGKILL. Fargate allows at most 120."
  type        = number
  default     = 120

  validation {
    condition     = var.worker_stop_timeout >= 10 && var.worker_stop_timeout <= 120
    error_message = "worker_stop_timeout must be between 10 and 120 seconds (Fargate maximum)."
  }
}

variable "worker_drain_seconds" {
  description = "Worker drain deadline after SIGTERM (ECR_SYNC_DRAIN_SECONDS): in-flight jobs not finished by then are released. Must be below worker_stop_timeout so releasing and flushing fit before SIGKILL."
  type        = number
  default     = 100

  validation {
    condition     = var.worker_drain_seconds >= 1
    error_message = "worker_drain_seconds must be at least 1."
  }
}

variable "worker_job_deadline_seconds" {
  description = "Longest a single copy job is expected to run. The jobs queue's visibility timeout is this plus worker_stop_timeout, so a job is not redelivered while a worker still owns it."
  type        = number
  default     = 900

  validation {
    condition     = var.worker_job_deadline_seconds >= 30 && var.worker_job_deadline_seconds <= 43000
    error_message = "worker_job_deadline_seconds must be between 30 and 43000 (SQS visibility is at most 12 h)."
  }
}

variable "min_workers" {
  description = "Minimum number of worker tasks. 0 lets the service scale to zero when the queue is empty."
  type        = number
  default     = 0

  validation {
    condition     = var.min_workers >= 0
    error_message = "min_workers must be >= 0."
  }
}

variable "max_workers" {
  description = "Maximum number of worker tasks. ECR PutImage is limited to 10 TPS per account and region; more workers help with blob throughput, not with manifest pushes."
  type        = number
  default     = 10

  validation {
    condition     = var.max_workers >= 1
    error_message = "max_workers must be >= 1."
  }
}

variable "enable_autoscaling" {
  description = "Create Application Auto Scaling for the worker service (step scaling on queue backlog, scale to min_workers when empty). false: the service keeps its desired count (set it yourself). The moto apply test turns this off."
  type        = bool
  default     = true
}

variable "worker_backlog_per_task" {
  description = "Visible messages one worker is expected to work through per scaling step: backlog below this adds 1 task, up to 10x adds a quarter of max_workers, more goes to max_workers."
  type        = number
  default     = 100

  validation {
    condition     = var.worker_backlog_per_task >= 1
    error_message = "worker_backlog_per_task must be >= 1."
  }
}

variable "scale_in_after_minutes" {
  description = "Minutes the queue must be completely empty (visible + in flight) before workers scale in to min_workers."
  type        = number
  default     = 10

  validation {
    condition     = var.scale_in_after_minutes >= 1
    error_message = "scale_in_after_minutes must be >= 1."
  }
}

################################################################################
# Queue, ledger, config storage
################################################################################

variable "max_receive_count" {
  description = "Receives of one message before SQS moves it to the DLQ: catches jobs that crash or stall workers (transient failures are retried as fresh delayed messages until the worker's give-up window of 3 h, so they use no receives). Receives a worker never acknowledges (it died holding the message, a receive answer was lost) count too: 10 outlasts a run of those."
  type        = number
  default     = 10

  validation {
    condition     = var.max_receive_count >= 1 && var.max_receive_count <= 1000
    error_message = "max_receive_count must be between 1 and 1000."
  }
}

variable "message_retention_seconds" {
  description = "How long jobs stay on the jobs queue. The DLQ keeps messages for the SQS maximum (14 days)."
  type        = number
  default     = 345600

  validation {
    condition     = var.message_retention_seconds >= 60 && var.message_retention_seconds <= 1209600
    error_message = "message_retention_seconds must be between 60 and 1209600."
  }
}

variable "ledger_deletion_protection" {
  description = "DynamoDB deletion protection on the ledger table. Turn off only to destroy it."
  type        = bool
  default     = true
}

variable "config_bucket_name" {
  description = "Existing S3 bucket to hold the config object. null: the module creates a private, versioned, encrypted bucket."
  type        = string
  default     = null
}

variable "config_object_key" {
  description = "S3 key of the config JSON."
  type        = string
  default     = "ecr-sync/config.json"
}

variable "config_bucket_force_destroy" {
  description = "Allow destroying the module-created config bucket while it still holds objects (tests, sandboxes)."
  type        = bool
  default     = false
}

variable "config_bucket_enforce_tls" {
  description = "Attach a bucket policy denying non-TLS requests to the module-created config bucket. Only the moto apply test turns this off (moto treats every Deny with a condition as matching)."
  type        = bool
  default     = true
}

variable "kms_key_arn" {
  description = "KMS key for the module's own data: queues, ledger, config object, log groups, schedule. null: the module creates one (with rotation). A given key's policy must allow CloudWatch Logs and, with the event-driven path, EventBridge."
  type        = string
  default     = null
}

variable "log_retention_days" {
  description = "Retention of the planner and worker log groups."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a value CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, ..., 365, ..., 3653)."
  }
}

################################################################################
# Event-driven path (seed 001) and alarms
################################################################################

variable "event_driven" {
  description = "Push-event path: an EventBridge rule on `event_bus_name` matching successful ECR pushes from the source accounts (defaults to the accounts in config.repos) forwards the event to the events queue of the Lambda function or to the jobs queue (see event_worker). The source account forwards its ECR events to this bus (see examples/source-account); `allow_source_accounts` adds the bus permission for that."
  type = object({
    enabled               = optional(bool, false)
    event_bus_name        = optional(string, "default")
    source_account_ids    = optional(list(string))
    allow_source_accounts = optional(bool, true)
  })
  default = {}
}

variable "event_worker" {
  description = "What copies push events when event_driven is enabled. \"lambda\" (default): the rule targets an events queue feeding a Lambda function from the same image, so a push is copied within seconds at no idle cost; the image must be in ECR in this region (Lambda's rule). \"fargate\": the rule targets the jobs queue and the worker service copies them, within minutes when it is scaled to zero (SQS backlog metrics and a task start)."
  type        = string
  default     = "lambda"

  validation {
    condition     = contains(["lambda", "fargate"], var.event_worker)
    error_message = "event_worker must be \"lambda\" or \"fargate\"."
  }
}

variable "event_lambda" {
  description = "The push-event function (event_worker = \"lambda\"): memory (MB; CPU and network bandwidth grow with it), timeout (seconds; a job still running 5 s before it is released to the next invocation), max_concurrency (the event source mapping's maximum concurrency: environments at once, each running up to batch_size jobs; with the ledger-shared manifest PUT budget it keeps PutImage within the account's quota) and batch_size (messages per invocation)."
  type = object({
    memory_mb       = optional(number, 1024)
    timeout_seconds = optional(number, 900)
    max_concurrency = optional(number, 2)
    batch_size      = optional(number, 10)
  })
  default = {}

  validation {
    condition = (var.event_lambda.memory_mb >= 256 && var.event_lambda.memory_mb <= 10240 &&
      var.event_lambda.timeout_seconds >= 30 && var.event_lambda.timeout_seconds <= 900 &&
      var.event_lambda.max_concurrency >= 2 && var.event_lambda.max_concurrency <= 1000 &&
    var.event_lambda.batch_size >= 1 && var.event_lambda.batch_size <= 10)
    error_message = "event_lambda: memory_mb 256-10240, timeout_seconds 30-900 (Lambda's limit), max_concurrency 2-1000 (the event source mapping's range), batch_size 1-10."
  }
}

variable "alarm_actions" {
  description = "ARNs (e.g. SNS topics) notified by the alarms: DLQ not empty, oldest job too old, worker tasks not staying up, and the push-event function failing, throttled or leaving events waiting."
  type        = list(string)
  default     = []
}

variable "oldest_message_alarm_seconds" {
  description = "Alarm when the oldest job on the queue is older than this."
  type        = number
  default     = 3600
}
