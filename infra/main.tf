################################################################################
# Contracts with the Rust binaries — change them here and nowhere else
################################################################################

locals {
  # Environment variable names the binaries read (test/env-names.txt lists the
  # same names; the apply test compares both with the task definitions).
  env = {
    config       = "ECR_SYNC_CONFIG"               # s3://bucket/key of the config JSON
    queue_url    = "ECR_SYNC_QUEUE_URL"            # jobs queue
    dlq_url      = "ECR_SYNC_DLQ_URL"              # dead-letter queue
    ledger_table = "ECR_SYNC_LEDGER_TABLE"         # DynamoDB ledger table name
    log_format   = "ECR_SYNC_LOG_FORMAT"           # "json" in ECS
    drain        = "ECR_SYNC_DRAIN_SECONDS"        # worker drain deadline, < stopTimeout
    job_deadline = "ECR_SYNC_JOB_DEADLINE_SECONDS" # longest job; visibility covers it
  }

  planner_command = ["ecr-sync", "plan"]
  worker_command  = ["ecr-sync-worker"]

  # DynamoDB ledger schema the code uses.
  ledger = {
    hash_key       = "pk"
    range_key      = "sk"
    gsi_name       = "gsi1"
    gsi_hash_key   = "gsi1pk"
    gsi_range_key  = "gsi1sk"
    ttl_attribute  = "expires_at"
    attribute_type = "S"
  }
}

################################################################################
# Context
################################################################################

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
  account_id = data.aws_caller_identity.current.account_id
  dns_suffix = data.aws_partition.current.dns_suffix

  tags = merge({ "ecr-sync:namespace" = var.namespace }, var.tags)

  kms_key_arn = var.kms_key_arn != null ? var.kms_key_arn : aws_kms_key.this[0].arn

  # Config object location (bucket created here or given).
  config_bucket = var.config_bucket_name != null ? var.config_bucket_name : aws_s3_bucket.config[0].id
  config_s3_uri = "s3://${local.config_bucket}/${var.config_object_key}"
  config_json   = jsonencode(var.config)

  # ECR repositories named by the config, as ARNs, for least-privilege IAM.
  # An ECR URI is <account>.dkr.ecr.<region>.amazonaws.com[.cn]/<path>; sources
  # on other registries get no IAM statement (their credentials come from
  # config.registries).
  ecr_uri_regex = "^([0-9]{12})\\.dkr\\.ecr(?:-fips)?\\.([a-z0-9-]+)\\.amazonaws\\.com(?:\\.cn)?/(.+)$"

  source_repo_arns = distinct([
    for r in var.config.repos :
    format("arn:%s:ecr:%s:%s:repository/%s", local.partition, regex(local.ecr_uri_regex, r.source)[1], regex(local.ecr_uri_regex, r.source)[0], regex(local.ecr_uri_regex, r.source)[2])
    if can(regex(local.ecr_uri_regex, r.source))
  ])
  source_account_ids = distinct([
    for r in var.config.repos : regex(local.ecr_uri_regex, r.source)[0]
    if can(regex(local.ecr_uri_regex, r.source))
  ])
  source_repo_names = distinct([
    for r in var.config.repos : regex(local.ecr_uri_regex, r.source)[2]
    if can(regex(local.ecr_uri_regex, r.source))
  ])

  # Destination: config.destination_registry when it is an ECR host, else this
  # account and region. Repository name: `destination`, else the source path.
  destination_ecr = try(
    regex("^([0-9]{12})\\.dkr\\.ecr(?:-fips)?\\.([a-z0-9-]+)\\.", var.config.destination_registry),
    [local.account_id, local.region]
  )
  destination_repo_arns = distinct([
    for r in var.config.repos : format(
      "arn:%s:ecr:%s:%s:repository/%s", local.partition, local.destination_ecr[1], local.destination_ecr[0],
      r.destination != null ? r.destination : replace(r.source, "/^[^/]+//", "")
    )
  ])

  # Networking: the given VPC, or the default VPC and its default subnets.
  vpc_id     = var.task_vpc_id != null ? var.task_vpc_id : data.aws_vpc.default[0].id
  subnet_ids = var.task_vpc_id != null ? var.task_subnet_ids : data.aws_subnets.default[0].ids

  network_configuration = {
    subnets          = local.subnet_ids
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = var.task_assign_public_ip
  }
}

################################################################################
# KMS key for the module's own data (unless one is given)
################################################################################

data "aws_iam_policy_document" "kms" {
  count = var.kms_key_arn == null ? 1 : 0

  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"] # in a key policy "*" means this key
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  statement {
    sid       = "CloudWatchLogsEncrypts"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.${local.dns_suffix}"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:/ecr-sync/${var.namespace}/*"]
    }
  }

  statement {
    sid       = "EventBridgeSendsToEncryptedQueue"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["events.${local.dns_suffix}"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_kms_key" "this" {
  count = var.kms_key_arn == null ? 1 : 0

  description             = "ecr-sync ${var.namespace}: queues, ledger, config, logs"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms[0].json
  tags                    = local.tags
}

resource "aws_kms_alias" "this" {
  count = var.kms_key_arn == null ? 1 : 0

  name          = "alias/ecr-sync/${var.namespace}"
  target_key_id = aws_kms_key.this[0].key_id
}
