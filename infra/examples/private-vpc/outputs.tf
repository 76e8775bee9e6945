output "jobs_queue_url" {
  description = "Jobs queue URL."
  value       = module.ecr_pull_sync.jobs_queue_url
}

output "security_group_id" {
  description = "Security group of the tasks."
  value       = module.ecr_pull_sync.security_group_id
}

output "vpc_endpoint_ids" {
  description = "VPC endpoints created for the tasks, by service."
  value       = merge({ for k, v in aws_vpc_endpoint.interface : k => v.id }, { for k, v in aws_vpc_endpoint.gateway : k => v.id })
}
