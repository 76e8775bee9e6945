################################################################################
# Operational alarms (notify alarm_actions)
################################################################################

resource "aws_cloudwatch_metric_alarm" "dlq_not_empty" {
  alarm_name          = "${var.namespace}-dlq-not-empty"
  alarm_description   = "ecr-sync ${var.namespace}: jobs failed permanently; inspect with `ecr-sync dlq list`"
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.dlq.name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "oldest_job" {
  alarm_name          = "${var.namespace}-oldest-job-age"
  alarm_description   = "ecr-sync ${var.namespace}: jobs wait longer than ${var.oldest_message_alarm_seconds}s; workers stuck, failing or at max_workers"
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateAgeOfOldestMessage"
  dimensions          = { QueueName = aws_sqs_queue.jobs.name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.oldest_message_alarm_seconds
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = local.tags
}

# Worker tasks that crash (or cannot pull the image, or are OOM-killed) keep the
# running count below the desired count (Container Insights metrics).
resource "aws_cloudwatch_metric_alarm" "worker_tasks_failing" {
  alarm_name          = "${var.namespace}-worker-tasks-failing"
  alarm_description   = "ecr-sync ${var.namespace}: worker tasks do not stay running (desired > running for 15 minutes); see the worker log group and stopped-task reasons"
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  evaluation_periods  = 3
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = local.tags

  metric_query {
    id          = "missing"
    expression  = "desired - running"
    label       = "Worker tasks desired but not running"
    return_data = true
  }
  metric_query {
    id = "desired"
    metric {
      namespace   = "ECS/ContainerInsights"
      metric_name = "DesiredTaskCount"
      dimensions  = { ClusterName = aws_ecs_cluster.this.name, ServiceName = aws_ecs_service.worker.name }
      stat        = "Minimum"
      period      = 300
    }
  }
  metric_query {
    id = "running"
    metric {
      namespace   = "ECS/ContainerInsights"
      metric_name = "RunningTaskCount"
      dimensions  = { ClusterName = aws_ecs_cluster.this.name, ServiceName = aws_ecs_service.worker.name }
      stat        = "Maximum"
      period      = 300
    }
  }
}
