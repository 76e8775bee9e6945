################################################################################
# Event-driven path (seed 001): ECR push events -> events queue and Lambda
# function (event_worker = "lambda", lambda.tf) or jobs queue (fargate)
#
# The message is the EventBridge event itself (detail-type "ECR Image Action");
# the worker recognises it, matches it against the config and copies that tag.
# The source account forwards its ECR events to `event_bus_name` in this account
# (examples/source-account shows that side). Push events are best effort: the
# schedule stays the safety net.
################################################################################

locals {
  ecr_event_source_accounts = coalesce(var.event_driven.source_account_ids, local.source_account_ids)

}

resource "aws_cloudwatch_event_permission" "source_accounts" {
  for_each = var.event_driven.enabled && var.event_driven.allow_source_accounts ? toset(local.ecr_event_source_accounts) : toset([])

  principal      = each.value
  statement_id   = "${var.namespace}-ecr-events-${each.value}"
  action         = "events:PutEvents"
  event_bus_name = var.event_driven.event_bus_name
}

resource "aws_cloudwatch_event_rule" "ecr_push" {
  count = var.event_driven.enabled ? 1 : 0

  name           = "${var.namespace}-ecr-push"
  description    = "ecr-sync ${var.namespace}: successful pushes to configured source repositories"
  event_bus_name = var.event_driven.event_bus_name

  event_pattern = jsonencode({
    source        = ["aws.ecr"]
    "detail-type" = ["ECR Image Action"]
    account       = local.ecr_event_source_accounts
    detail = {
      "action-type"     = ["PUSH"]
      result            = ["SUCCESS"]
      "repository-name" = local.source_repo_names
    }
  })

  tags = local.tags

  lifecycle {
    precondition {
      condition     = length(local.ecr_event_source_accounts) > 0 && length(local.source_repo_names) > 0
      error_message = "event_driven.enabled needs at least one ECR source repository in config.repos."
    }
  }
}

# To the push-event function's events queue (lambda.tf), or to the jobs queue
# for the worker service (event_worker = "fargate").
resource "aws_cloudwatch_event_target" "ecr_push_to_jobs" {
  count = var.event_driven.enabled ? 1 : 0

  rule           = aws_cloudwatch_event_rule.ecr_push[0].name
  event_bus_name = var.event_driven.event_bus_name
  target_id      = local.event_lambda ? "events-queue" : "jobs-queue"
  arn            = local.event_lambda ? aws_sqs_queue.events[0].arn : aws_sqs_queue.jobs.arn

  retry_policy {
    maximum_retry_attempts       = 24
    maximum_event_age_in_seconds = 86400
  }
}
