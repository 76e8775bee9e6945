################################################################################
# Source account side: what the owner of the source repositories applies.
# - a repository policy letting the consumer account pull (nothing else);
# - optionally, a rule forwarding ECR push events to the consumer's event bus
#   (the module's event_driven path). Pull stays pull: the consumer's tasks
#   start every connection, the source account never calls into the consumer
#   except for this optional event delivery.
################################################################################

provider "aws" {
  region = var.region
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

data "aws_iam_policy_document" "pull" {
  statement {
    sid = "EcrSyncPull"
    actions = [
      "ecr:BatchGetImage",
      "ecr:GetDownloadUrlForLayer",
      "ecr:BatchCheckLayerAvailability",
      "ecr:DescribeImages",
      "ecr:ListImages",
    ]
    principals {
      type        = "AWS"
      identifiers = [for id in var.consumer_account_ids : "arn:${data.aws_partition.current.partition}:iam::${id}:root"]
    }
  }
}

resource "aws_ecr_repository_policy" "pull" {
  for_each = toset(var.repository_names)

  repository = each.value
  policy     = data.aws_iam_policy_document.pull.json
}

################################################################################
# Optional: forward push events to the consumer's bus
################################################################################

locals {
  forward = var.consumer_event_bus_arn != null
}

resource "aws_cloudwatch_event_rule" "forward_pushes" {
  count = local.forward ? 1 : 0

  name        = "ecr-sync-forward-pushes"
  description = "Forward successful pushes of the shared repositories to the ecr-sync consumer"
  event_pattern = jsonencode({
    source        = ["aws.ecr"]
    "detail-type" = ["ECR Image Action"]
    detail = {
      "action-type"     = ["PUSH"]
      result            = ["SUCCESS"]
      "repository-name" = var.repository_names
    }
  })
}

data "aws_iam_policy_document" "events_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_iam_role" "forward_pushes" {
  count = local.forward ? 1 : 0

  name_prefix        = "ecr-sync-forward-"
  assume_role_policy = data.aws_iam_policy_document.events_assume.json
}

data "aws_iam_policy_document" "forward_pushes" {
  count = local.forward ? 1 : 0

  statement {
    actions   = ["events:PutEvents"]
    resources = [var.consumer_event_bus_arn]
  }
}

resource "aws_iam_role_policy" "forward_pushes" {
  count = local.forward ? 1 : 0

  name   = "put-events-to-consumer"
  role   = aws_iam_role.forward_pushes[0].id
  policy = data.aws_iam_policy_document.forward_pushes[0].json
}

resource "aws_cloudwatch_event_target" "forward_pushes" {
  count = local.forward ? 1 : 0

  rule      = aws_cloudwatch_event_rule.forward_pushes[0].name
  target_id = "ecr-sync-consumer"
  arn       = var.consumer_event_bus_arn
  role_arn  = aws_iam_role.forward_pushes[0].arn
}
