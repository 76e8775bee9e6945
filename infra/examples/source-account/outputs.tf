output "repository_policy_repositories" {
  description = "Repositories that now grant pull to the consumer accounts."
  value       = keys(aws_ecr_repository_policy.pull)
}

output "forward_rule_arn" {
  description = "ARN of the push-forwarding rule (null when not forwarding)."
  value       = try(aws_cloudwatch_event_rule.forward_pushes[0].arn, null)
}
