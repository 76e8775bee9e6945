################################################################################
# Queue
################################################################################

output "jobs_queue_url" {
  description = "URL of the jobs queue (ECR_SYNC_QUEUE_URL)."
  value       = aws_sqs_queue.jobs.url
}

output "jobs_queue_arn" {
  description = "ARN of the jobs queue."
  value       = aws_sqs_queue.jobs.arn
}

output "dlq_url" {
  description = "URL of the dead-letter queue (ECR_SYNC_DLQ_URL)."
  value       = aws_sqs_queue.dlq.url
}

output "dlq_arn" {
  description = "ARN of the dead-letter queue."
  value       = aws_sqs_queue.dlq.arn
}

################################################################################
# Ledger and config
################################################################################

output "ledger_table_name" {
  description = "Name of the DynamoDB ledger table (ECR_SYNC_LEDGER_TABLE)."
  value       = aws_dynamodb_table.ledger.name
}

output "ledger_table_arn" {
  description = "ARN of the DynamoDB ledger table."
  value       = aws_dynamodb_table.ledger.arn
}

output "config_s3_uri" {
  description = "s3://bucket/key of the config JSON (ECR_SYNC_CONFIG)."
  value       = local.config_s3_uri
}

output "config_bucket_name" {
  description = "Bucket holding the config object (created or given)."
  value       = local.config_bucket
}

output "config_json" {
  description = "The exact JSON written to the config object (jsonencode(var.config))."
  value       = local.config_json
}

output "kms_key_arn" {
  description = "KMS key encrypting the module's queues, table, config object, logs and schedule."
  value       = local.kms_key_arn
}

################################################################################
# ECS
################################################################################

output "cluster_name" {
  description = "Name of the ECS cluster."
  value       = aws_ecs_cluster.this.name
}

output "cluster_arn" {
  description = "ARN of the ECS cluster."
  value       = aws_ecs_cluster.this.arn
}

output "worker_service_name" {
  description = "Name of the worker ECS service."
  value       = aws_ecs_service.worker.name
}

output "planner_task_definition_arn" {
  description = "ARN of the planner task definition (run it by hand with `aws ecs run-task` for an immediate sync)."
  value       = aws_ecs_task_definition.planner.arn
}

output "worker_task_definition_arn" {
  description = "ARN of the worker task definition."
  value       = aws_ecs_task_definition.worker.arn
}

output "security_group_id" {
  description = "Security group of the planner and worker tasks."
  value       = aws_security_group.tasks.id
}

output "subnet_ids" {
  description = "Subnets the tasks run in."
  value       = local.subnet_ids
}

output "planner_log_group_name" {
  description = "CloudWatch log group of the planner."
  value       = aws_cloudwatch_log_group.planner.name
}

output "worker_log_group_name" {
  description = "CloudWatch log group of the workers."
  value       = aws_cloudwatch_log_group.worker.name
}

output "environment" {
  description = "Environment variables passed to the worker task (the planner gets the same minus the worker-only ECR_SYNC_DRAIN_SECONDS and ECR_SYNC_JOB_DEADLINE_SECONDS)."
  value       = local.worker_environment
}

################################################################################
# IAM, schedule, events
################################################################################

output "execution_role_arn" {
  description = "ARN of the ECS task execution role."
  value       = aws_iam_role.execution.arn
}

output "planner_task_role_arn" {
  description = "ARN of the planner task role."
  value       = aws_iam_role.planner.arn
}

output "worker_task_role_arn" {
  description = "ARN of the worker task role."
  value       = aws_iam_role.worker.arn
}

output "scheduler_role_arn" {
  description = "ARN of the role EventBridge Scheduler uses to run the planner."
  value       = aws_iam_role.scheduler.arn
}

output "schedule_arn" {
  description = "ARN of the planner schedule."
  value       = aws_scheduler_schedule.planner.arn
}

output "ecr_push_rule_arn" {
  description = "ARN of the ECR push-event rule (null when event_driven.enabled is false)."
  value       = try(aws_cloudwatch_event_rule.ecr_push[0].arn, null)
}

################################################################################
# Push-event function (null unless event_driven.enabled and event_worker = "lambda")
################################################################################

output "events_queue_url" {
  description = "URL of the events queue the push-event function is fed from (its ECR_SYNC_QUEUE_URL)."
  value       = try(aws_sqs_queue.events[0].url, null)
}

output "events_queue_arn" {
  description = "ARN of the events queue."
  value       = try(aws_sqs_queue.events[0].arn, null)
}

output "event_function_name" {
  description = "Name of the push-event Lambda function."
  value       = try(aws_lambda_function.events[0].function_name, null)
}

output "event_function_arn" {
  description = "ARN of the push-event Lambda function."
  value       = try(aws_lambda_function.events[0].arn, null)
}

output "event_function_role_arn" {
  description = "ARN of the push-event function's role."
  value       = try(aws_iam_role.event_lambda[0].arn, null)
}

output "event_function_log_group_name" {
  description = "CloudWatch log group of the push-event function."
  value       = try(aws_cloudwatch_log_group.events[0].name, null)
}

output "event_function_environment" {
  description = "Environment variables of the push-event function (ECR_SYNC_QUEUE_URL is the events queue)."
  value       = local.event_lambda ? local.event_lambda_environment : null
}

output "event_source_mapping_uuid" {
  description = "UUID of the event source mapping from the events queue to the function."
  value       = try(aws_lambda_event_source_mapping.events[0].uuid, null)
}
