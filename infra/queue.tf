################################################################################
# Jobs queue and dead-letter queue
################################################################################

locals {
  # A job stays invisible for its whole deadline plus the worker's stop
  # timeout, so a job taken just before SIGTERM is not redelivered while the
  # draining worker still owns it.
  jobs_visibility_timeout = var.worker_job_deadline_seconds + var.worker_stop_timeout
}

resource "aws_sqs_queue" "dlq" {
  name                              = "${var.namespace}-jobs-dlq"
  message_retention_seconds         = 1209600 # SQS maximum: 14 days to inspect and replay
  kms_master_key_id                 = local.kms_key_arn
  kms_data_key_reuse_period_seconds = 300
  tags                              = local.tags
}

resource "aws_sqs_queue" "jobs" {
  name                              = "${var.namespace}-jobs"
  visibility_timeout_seconds        = local.jobs_visibility_timeout
  message_retention_seconds         = var.message_retention_seconds
  receive_wait_time_seconds         = 20 # long polling, SQS maximum
  kms_master_key_id                 = local.kms_key_arn
  kms_data_key_reuse_period_seconds = 300

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dlq.arn
    maxReceiveCount     = var.max_receive_count
  })

  tags = local.tags
}

# The queues' policies: TLS only, and the ECR push rule may send to the queue it targets (the
# events queue of lambda.tf, or the jobs queue with event_worker = "fargate").
locals {
  queue_policies = merge(
    { jobs = { arn = aws_sqs_queue.jobs.arn, rule_sends = var.event_driven.enabled && !local.event_lambda } },
    local.event_lambda ? { events = { arn = aws_sqs_queue.events[0].arn, rule_sends = true } } : {},
  )
}

data "aws_iam_policy_document" "queue" {
  for_each = local.queue_policies

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["sqs:*"]
    resources = [each.value.arn]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  dynamic "statement" {
    for_each = each.value.rule_sends ? [1] : []
    content {
      sid       = "EcrPushRuleSends"
      actions   = ["sqs:SendMessage"]
      resources = [each.value.arn]
      principals {
        type        = "Service"
        identifiers = ["events.${local.dns_suffix}"]
      }
      condition {
        test     = "ArnEquals"
        variable = "aws:SourceArn"
        values   = [aws_cloudwatch_event_rule.ecr_push[0].arn]
      }
    }
  }
}

resource "aws_sqs_queue_policy" "jobs" {
  queue_url = aws_sqs_queue.jobs.id
  policy    = data.aws_iam_policy_document.queue["jobs"].json
}
