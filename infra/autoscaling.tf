################################################################################
# Worker autoscaling on queue backlog (off with enable_autoscaling = false)
#
# Step scaling, because target tracking cannot start from zero tasks:
#   - scale out when jobs are visible: +1 below worker_backlog_per_task,
#     +max_workers/4 below 10x that, max_workers above;
#   - scale in to min_workers only when the queue has been completely empty
#     (nothing visible, nothing in flight) for scale_in_after_minutes, so no
#     worker is stopped while it still owns a job.
################################################################################

locals {
  autoscaling_count = var.enable_autoscaling ? 1 : 0
  worker_resource   = "service/${aws_ecs_cluster.this.name}/${aws_ecs_service.worker.name}"
  scale_out_medium  = max(1, ceil(var.max_workers / 4))
}

resource "aws_appautoscaling_target" "worker" {
  count = local.autoscaling_count

  service_namespace  = "ecs"
  scalable_dimension = "ecs:service:DesiredCount"
  resource_id        = local.worker_resource
  min_capacity       = var.min_workers
  max_capacity       = var.max_workers
  tags               = local.tags
}

resource "aws_appautoscaling_policy" "scale_out" {
  count = local.autoscaling_count

  name               = "${var.namespace}-worker-scale-out"
  policy_type        = "StepScaling"
  service_namespace  = aws_appautoscaling_target.worker[0].service_namespace
  scalable_dimension = aws_appautoscaling_target.worker[0].scalable_dimension
  resource_id        = aws_appautoscaling_target.worker[0].resource_id

  step_scaling_policy_configuration {
    adjustment_type         = "ChangeInCapacity"
    cooldown                = 60
    metric_aggregation_type = "Maximum"

    # Intervals are relative to the alarm threshold (1 visible message).
    step_adjustment {
      metric_interval_lower_bound = 0
      metric_interval_upper_bound = var.worker_backlog_per_task
      scaling_adjustment          = 1
    }
    step_adjustment {
      metric_interval_lower_bound = var.worker_backlog_per_task
      metric_interval_upper_bound = 10 * var.worker_backlog_per_task
      scaling_adjustment          = local.scale_out_medium
    }
    step_adjustment {
      metric_interval_lower_bound = 10 * var.worker_backlog_per_task
      scaling_adjustment          = var.max_workers
    }
  }
}

resource "aws_appautoscaling_policy" "scale_in" {
  count = local.autoscaling_count

  name               = "${var.namespace}-worker-scale-in"
  policy_type        = "StepScaling"
  service_namespace  = aws_appautoscaling_target.worker[0].service_namespace
  scalable_dimension = aws_appautoscaling_target.worker[0].scalable_dimension
  resource_id        = aws_appautoscaling_target.worker[0].resource_id

  step_scaling_policy_configuration {
    adjustment_type         = "ExactCapacity"
    cooldown                = 60
    metric_aggregation_type = "Maximum"

    step_adjustment {
      metric_interval_upper_bound = 0
      scaling_adjustment          = var.min_workers
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "backlog" {
  count = local.autoscaling_count

  alarm_name          = "${var.namespace}-jobs-backlog"
  alarm_description   = "ecr-sync ${var.namespace}: jobs waiting; scales the workers out"
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.jobs.name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_appautoscaling_policy.scale_out[0].arn]
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "queue_empty" {
  count = local.autoscaling_count

  alarm_name          = "${var.namespace}-jobs-empty"
  alarm_description   = "ecr-sync ${var.namespace}: nothing visible or in flight; scales the workers in"
  comparison_operator = "LessThanOrEqualToThreshold"
  threshold           = 0
  evaluation_periods  = var.scale_in_after_minutes
  treat_missing_data  = "breaching" # an idle queue may publish no datapoints
  alarm_actions       = [aws_appautoscaling_policy.scale_in[0].arn]
  tags                = local.tags

  metric_query {
    id          = "total"
    expression  = "visible + inflight"
    label       = "Jobs visible or in flight"
    return_data = true
  }
  metric_query {
    id = "visible"
    metric {
      namespace   = "AWS/SQS"
      metric_name = "ApproximateNumberOfMessagesVisible"
      dimensions  = { QueueName = aws_sqs_queue.jobs.name }
      stat        = "Maximum"
      period      = 60
    }
  }
  metric_query {
    id = "inflight"
    metric {
      namespace   = "AWS/SQS"
      metric_name = "ApproximateNumberOfMessagesNotVisible"
      dimensions  = { QueueName = aws_sqs_queue.jobs.name }
      stat        = "Maximum"
      period      = 60
    }
  }
}
