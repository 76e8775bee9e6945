################################################################################
# Push events by Lambda (event_driven.enabled, event_worker = "lambda")
#
# ECR push -> EventBridge rule -> events queue -> event source mapping -> the
# worker binary as a Lambda function (same image, command override). It takes
# each message the fleet worker's way (config, ledger, dead-letter queue) and
# reports what must come back as partial batch failures. Scheduled planning
# still feeds the Fargate fleet through the jobs queue.
################################################################################

locals {
  event_lambda = var.event_driven.enabled && var.event_worker == "lambda"

  # AWS: a queue feeding Lambda keeps messages invisible at least six times the
  # function timeout, so retried invocations of a batch do not see it reappear.
  events_visibility_timeout = 6 * var.event_lambda.timeout_seconds

  lambda_architecture = var.cpu_architecture == "ARM64" ? "arm64" : "x86_64"

  event_lambda_environment = {
    (local.env.config)       = local.config_s3_uri
    (local.env.queue_url)    = local.event_lambda ? aws_sqs_queue.events[0].url : null
    (local.env.dlq_url)      = aws_sqs_queue.dlq.url
    (local.env.ledger_table) = aws_dynamodb_table.ledger.name
    (local.env.log_format)   = "json"
    (local.env.job_deadline) = tostring(var.worker_job_deadline_seconds)
  }
}

resource "aws_sqs_queue" "events" {
  count = local.event_lambda ? 1 : 0

  name                              = "${var.namespace}-events"
  visibility_timeout_seconds        = local.events_visibility_timeout
  message_retention_seconds         = var.message_retention_seconds
  receive_wait_time_seconds         = 20
  kms_master_key_id                 = local.kms_key_arn
  kms_data_key_reuse_period_seconds = 300

  # The fleet's dead-letter queue: one place to inspect and replay (a replayed
  # push event goes to the jobs queue, where the fleet worker takes it too).
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dlq.arn
    maxReceiveCount     = var.max_receive_count
  })

  tags = local.tags
}

resource "aws_sqs_queue_policy" "events" {
  count = local.event_lambda ? 1 : 0

  queue_url = aws_sqs_queue.events[0].id
  policy    = data.aws_iam_policy_document.queue["events"].json # queue.tf
}

resource "aws_cloudwatch_log_group" "events" {
  count = local.event_lambda ? 1 : 0

  name              = "/ecr-sync/${var.namespace}/events"
  retention_in_days = var.log_retention_days
  kms_key_id        = local.kms_key_arn
  tags              = local.tags
}

resource "aws_lambda_function" "events" {
  count = local.event_lambda ? 1 : 0

  #checkov:skip=CKV_AWS_116:Fed by an SQS event source mapping, never invoked asynchronously; messages that fail go to the events queue's dead-letter queue.
  #checkov:skip=CKV_AWS_115:The event source mapping's maximum concurrency (event_lambda.max_concurrency) bounds it without reserving account concurrency.
  #checkov:skip=CKV_AWS_117:Runs in task_vpc_id when one is given; the default-VPC fallback has no NAT, so there the function runs outside a VPC to reach ECR, SQS and DynamoDB.
  #checkov:skip=CKV_AWS_50:X-Ray adds nothing the ledger and logs do not record per job.
  #checkov:skip=CKV_AWS_272:A container image function; code signing applies to zip packages only.
  function_name = "${var.namespace}-events"
  description   = "ecr-sync ${var.namespace}: copies pushed images (push events from the events queue)"
  role          = aws_iam_role.event_lambda[0].arn
  package_type  = "Image"
  image_uri     = local.image
  architectures = [local.lambda_architecture]
  memory_size   = var.event_lambda.memory_mb
  timeout       = var.event_lambda.timeout_seconds
  kms_key_arn   = local.kms_key_arn

  image_config {
    command = local.worker_command
  }

  environment {
    variables = local.event_lambda_environment
  }

  logging_config {
    log_format = "Text" # the worker writes JSON lines itself (ECR_SYNC_LOG_FORMAT)
    log_group  = aws_cloudwatch_log_group.events[0].name
  }

  dynamic "vpc_config" {
    for_each = var.task_vpc_id != null ? [1] : []
    content {
      subnet_ids         = local.subnet_ids
      security_group_ids = [aws_security_group.tasks.id]
    }
  }

  tags = local.tags

  lifecycle {
    precondition {
      condition     = can(regex(local.ecr_uri_regex, var.task_image_uri)) && try(regex(local.ecr_uri_regex, var.task_image_uri)[1], "") == local.region
      error_message = "event_worker = \"lambda\" runs the image as a Lambda function, which needs it in ECR in this region (task_image_uri is not); push it there, or set event_worker = \"fargate\"."
    }
  }

  depends_on = [aws_iam_role_policy.event_lambda]
}

resource "aws_lambda_event_source_mapping" "events" {
  count = local.event_lambda ? 1 : 0

  event_source_arn                   = aws_sqs_queue.events[0].arn
  function_name                      = aws_lambda_function.events[0].arn
  batch_size                         = var.event_lambda.batch_size
  maximum_batching_window_in_seconds = 0 # a push is copied now, not when a batch fills
  function_response_types            = ["ReportBatchItemFailures"]

  scaling_config {
    maximum_concurrency = var.event_lambda.max_concurrency
  }

  tags = local.tags
}

# ---------------------------------------------------------------------------
# The function's role: the worker's copy rights, the events queue, the DLQ
# ---------------------------------------------------------------------------

data "aws_iam_policy_document" "lambda_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.${local.dns_suffix}"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "event_lambda" {
  count = local.event_lambda ? 1 : 0

  name_prefix        = "${var.namespace}-events-"
  description        = "ecr-sync ${var.namespace}: push-event Lambda function"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "event_lambda" {
  count = local.event_lambda ? 1 : 0

  source_policy_documents = [data.aws_iam_policy_document.task_common.json, data.aws_iam_policy_document.copy.json]

  statement {
    sid = "ConsumeEvents"
    # The event source mapping receives, deletes and reads the queue with the function's role;
    # the function hands messages back (ChangeMessageVisibility) and sends retries and the jobs
    # of a push event covered by several config entries (SendMessage).
    actions   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"]
    resources = [aws_sqs_queue.events[0].arn]
  }

  statement {
    sid       = "DeadLetterPermanentFailures"
    actions   = ["sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"]
    resources = [aws_sqs_queue.dlq.arn]
  }

  statement {
    sid       = "WriteLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.events[0].arn}:*"]
  }

  dynamic "statement" {
    for_each = var.task_vpc_id != null ? [1] : []
    content {
      sid = "VpcNetworkInterfaces" # what AWSLambdaVPCAccessExecutionRole grants; EC2 scopes none of it
      actions = [
        "ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DeleteNetworkInterface",
        "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses", "ec2:DescribeSubnets", "ec2:DescribeVpcs",
      ]
      resources = ["*"]
    }
  }
}

resource "aws_iam_role_policy" "event_lambda" {
  count = local.event_lambda ? 1 : 0

  name   = "events"
  role   = aws_iam_role.event_lambda[0].id
  policy = data.aws_iam_policy_document.event_lambda[0].json
}

# ---------------------------------------------------------------------------
# Alarms: the function failing or throttled, push events waiting
# ---------------------------------------------------------------------------

locals {
  event_lambda_alarms = local.event_lambda ? {
    errors = {
      metric      = "Errors"
      description = "the push-event function failed whole invocations (crash, timeout, init error); its batches come back and end in the DLQ after max_receive_count. See ${aws_cloudwatch_log_group.events[0].name}."
    }
    throttles = {
      metric      = "Throttles"
      description = "invocations of the push-event function were throttled (account concurrency used up); push events wait on the events queue."
    }
  } : {}
}

resource "aws_cloudwatch_metric_alarm" "event_lambda" {
  for_each = local.event_lambda_alarms

  alarm_name          = "${var.namespace}-events-function-${each.key}"
  alarm_description   = "ecr-sync ${var.namespace}: ${each.value.description}"
  namespace           = "AWS/Lambda"
  metric_name         = each.value.metric
  dimensions          = { FunctionName = aws_lambda_function.events[0].function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "oldest_event" {
  count = local.event_lambda ? 1 : 0

  alarm_name          = "${var.namespace}-oldest-event-age"
  alarm_description   = "ecr-sync ${var.namespace}: push events wait on the events queue longer than 15 minutes; the function is failing, throttled or at max_concurrency."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateAgeOfOldestMessage"
  dimensions          = { QueueName = aws_sqs_queue.events[0].name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 900
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = local.tags
}
