output "config_s3_uri" {
  description = "Where the config JSON lives."
  value       = module.ecr_pull_sync.config_s3_uri
}

output "config_json" {
  description = "The config JSON the module writes."
  value       = module.ecr_pull_sync.config_json
}

output "jobs_queue_url" {
  description = "Jobs queue URL."
  value       = module.ecr_pull_sync.jobs_queue_url
}

output "dlq_url" {
  description = "Dead-letter queue URL."
  value       = module.ecr_pull_sync.dlq_url
}

output "ledger_table_name" {
  description = "Ledger table name."
  value       = module.ecr_pull_sync.ledger_table_name
}

output "cluster_name" {
  description = "ECS cluster name."
  value       = module.ecr_pull_sync.cluster_name
}
