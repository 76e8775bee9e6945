################################################################################
# Versions
################################################################################

terraform {
  # Optional object attributes with defaults need 1.3; preconditions need 1.2.
  required_version = ">= 1.3"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.x: aws_scheduler_schedule, SQS managed SSE, DynamoDB deletion protection;
      # 5.32: a Lambda function's logging_config (its own log group).
      version = ">= 5.32, < 7.0"
    }
  }
}
