################################################################################
# IAM: execution role, planner and worker task roles (least privilege)
################################################################################

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.${local.dns_suffix}"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

locals {
  # Repository ARN of the ecr-sync image itself, when it lives in ECR.
  task_image_repo_arn = try(format(
    "arn:%s:ecr:%s:%s:repository/%s", local.partition,
    regex(local.ecr_uri_regex, var.task_image_uri)[1],
    regex(local.ecr_uri_regex, var.task_image_uri)[0],
    regex(local.ecr_uri_regex, var.task_image_uri)[2],
  ), null)

  ecr_pull_actions = [
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
    "ecr:DescribeImages",
    "ecr:ListImages",
    "ecr:BatchCheckLayerAvailability",
  ]
  ecr_push_actions = [
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:CompleteLayerUpload",
    "ecr:DescribeImages",
    "ecr:DescribeRepositories",
    "ecr:GetDownloadUrlForLayer",
    "ecr:InitiateLayerUpload",
    "ecr:ListImages",
    "ecr:PutImage",
    "ecr:UploadLayerPart",
  ]
  # Only in create mode may the planner and the worker create destination repositories.
  ecr_create_actions = var.config.mode == "create" ? ["ecr:CreateRepository", "ecr:TagResource"] : []

  ledger_actions = [
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:DeleteItem",
    "dynamodb:DescribeTable",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:Query",
    "dynamodb:UpdateItem",
  ]
  ledger_arns = [aws_dynamodb_table.ledger.arn, "${aws_dynamodb_table.ledger.arn}/index/*"]

  kms_data_actions = ["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"]

  # Secrets Manager ARNs without a JSON-key suffix (IAM resources are the secret).
  secretsmanager_arns = distinct([for arn in values(var.task_secrets) : join(":", slice(split(":", arn), 0, 7)) if split(":", arn)[2] == "secretsmanager"])
  ssm_parameter_arns  = distinct([for arn in values(var.task_secrets) : arn if split(":", arn)[2] == "ssm"])

  repo_kms_key_arn = var.config.repo_defaults.encryption_type == "KMS" ? var.config.repo_defaults.kms_key_arn : null
}

# ---------------------------------------------------------------------------
# Execution role: pull the ecr-sync image, write logs
# ---------------------------------------------------------------------------

resource "aws_iam_role" "execution" {
  name_prefix        = "${var.namespace}-exec-"
  description        = "ecr-sync ${var.namespace}: ECS task execution (image pull, logs)"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "EcrAuth"
    actions   = ["ecr:GetAuthorizationToken"] # account-level action, no resource scope exists
    resources = ["*"]
  }

  dynamic "statement" {
    for_each = local.task_image_repo_arn != null ? [local.task_image_repo_arn] : []
    content {
      sid       = "PullTaskImage"
      actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = length(local.secretsmanager_arns) > 0 ? [1] : []
    content {
      sid       = "ReadTaskSecrets"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = local.secretsmanager_arns
    }
  }

  dynamic "statement" {
    for_each = length(local.ssm_parameter_arns) > 0 ? [1] : []
    content {
      sid       = "ReadTaskParameters"
      actions   = ["ssm:GetParameters"]
      resources = local.ssm_parameter_arns
    }
  }

  statement {
    sid       = "WriteLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.planner.arn}:*", "${aws_cloudwatch_log_group.worker.arn}:*"]
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "execution"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

# ---------------------------------------------------------------------------
# What both task roles need: the config (the worker matches push events
# against it), ECR auth, the ledger and the module's key
# ---------------------------------------------------------------------------

data "aws_iam_policy_document" "task_common" {
  statement {
    sid       = "ReadConfig"
    actions   = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = ["arn:${local.partition}:s3:::${local.config_bucket}/${var.config_object_key}"]
  }

  statement {
    sid       = "EcrAuth"
    actions   = ["ecr:GetAuthorizationToken"] # account-level action, no resource scope exists
    resources = ["*"]
  }

  statement {
    sid       = "Ledger"
    actions   = local.ledger_actions
    resources = local.ledger_arns
  }

  statement {
    sid       = "ModuleKey"
    actions   = local.kms_data_actions
    resources = [local.kms_key_arn]
  }
}

# ---------------------------------------------------------------------------
# Planner: read config, list source tags, check destinations, enqueue, ledger
# ---------------------------------------------------------------------------

resource "aws_iam_role" "planner" {
  name_prefix        = "${var.namespace}-planner-"
  description        = "ecr-sync ${var.namespace}: planner task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "planner" {
  source_policy_documents = [data.aws_iam_policy_document.task_common.json]

  dynamic "statement" {
    for_each = length(local.source_repo_arns) > 0 ? [1] : []
    content {
      sid       = "ListSourceTags"
      actions   = ["ecr:ListImages", "ecr:DescribeImages", "ecr:BatchGetImage"]
      resources = local.source_repo_arns
    }
  }

  dynamic "statement" {
    for_each = length(local.destination_repo_arns) > 0 ? [1] : []
    content {
      sid       = "InspectDestinations"
      actions   = ["ecr:DescribeRepositories", "ecr:DescribeImages", "ecr:ListImages", "ecr:BatchGetImage"]
      resources = local.destination_repo_arns
    }
  }

  # In create mode the planner creates missing destination repositories before it lists them.
  dynamic "statement" {
    for_each = length(local.ecr_create_actions) > 0 && length(local.destination_repo_arns) > 0 ? [1] : []
    content {
      sid       = "CreateDestinations"
      actions   = local.ecr_create_actions
      resources = local.destination_repo_arns
    }
  }

  dynamic "statement" {
    for_each = length(local.ecr_create_actions) > 0 && local.repo_kms_key_arn != null ? [local.repo_kms_key_arn] : []
    content {
      sid       = "RepositoryKey" # ECR creates grants on it for KMS-encrypted repositories
      actions   = ["kms:CreateGrant", "kms:DescribeKey", "kms:Decrypt", "kms:GenerateDataKey*", "kms:RetireGrant"]
      resources = [statement.value]
    }
  }

  statement {
    sid       = "Enqueue"
    actions   = ["sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"]
    resources = [aws_sqs_queue.jobs.arn]
  }
}

resource "aws_iam_role_policy" "planner" {
  name   = "planner"
  role   = aws_iam_role.planner.id
  policy = data.aws_iam_policy_document.planner.json
}

# ---------------------------------------------------------------------------
# Worker: consume jobs, pull sources, push/create destinations, ledger
# ---------------------------------------------------------------------------

resource "aws_iam_role" "worker" {
  name_prefix        = "${var.namespace}-worker-"
  description        = "ecr-sync ${var.namespace}: worker tasks"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = local.tags
}

# What copying takes, for the worker tasks and the push-event function alike.
data "aws_iam_policy_document" "copy" {
  dynamic "statement" {
    for_each = length(local.source_repo_arns) > 0 ? [1] : []
    content {
      sid       = "PullSources"
      actions   = local.ecr_pull_actions
      resources = local.source_repo_arns
    }
  }

  dynamic "statement" {
    for_each = length(local.destination_repo_arns) > 0 ? [1] : []
    content {
      sid       = "PushDestinations"
      actions   = concat(local.ecr_push_actions, local.ecr_create_actions)
      resources = local.destination_repo_arns
    }
  }

  dynamic "statement" {
    for_each = local.repo_kms_key_arn != null ? [local.repo_kms_key_arn] : []
    content {
      sid       = "RepositoryKey" # ECR creates grants on it for KMS-encrypted repositories
      actions   = ["kms:CreateGrant", "kms:DescribeKey", "kms:Decrypt", "kms:GenerateDataKey*", "kms:RetireGrant"]
      resources = [statement.value]
    }
  }
}

data "aws_iam_policy_document" "worker" {
  source_policy_documents = [data.aws_iam_policy_document.task_common.json, data.aws_iam_policy_document.copy.json]

  statement {
    sid = "ConsumeJobs"
    # SendMessage: a job that failed transiently comes back as a fresh delayed copy, and a push
    # event covered by several config entries is fanned out as job messages. The batch calls
    # (DeleteMessageBatch, ChangeMessageVisibilityBatch) are authorized by the single actions.
    actions   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"]
    resources = [aws_sqs_queue.jobs.arn]
  }

  statement {
    sid       = "DeadLetterPermanentFailures"
    actions   = ["sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"]
    resources = [aws_sqs_queue.dlq.arn]
  }
}

resource "aws_iam_role_policy" "worker" {
  name   = "worker"
  role   = aws_iam_role.worker.id
  policy = data.aws_iam_policy_document.worker.json
}
