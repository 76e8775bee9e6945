################################################################################
# Apply test: the module against a moto server on 127.0.0.1 (see ../run.sh)
################################################################################

terraform {
  required_version = ">= 1.3"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.32, < 7.0"
    }
  }
}

variable "moto_endpoint" {
  description = "http://127.0.0.1:PORT of the moto server."
  type        = string
}

variable "namespace" {
  description = "Namespace of this test deployment."
  type        = string
  default     = "ecr-sync-test"
}

variable "event_worker" {
  description = "The module's event_worker (run.sh plans \"fargate\" against the applied \"lambda\")."
  type        = string
  default     = "lambda"
}

variable "task_image_uri" {
  description = "The module's task_image_uri (run.sh plans one outside ECR to see the Lambda path refuse it)."
  type        = string
  default     = "123456789012.dkr.ecr.us-east-1.amazonaws.com/ecr-sync"
}

provider "aws" {
  region = "us-east-1"
  # Dummy credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (run.sh).
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  s3_use_path_style           = true

  endpoints {
    cloudwatch     = var.moto_endpoint
    events         = var.moto_endpoint
    logs           = var.moto_endpoint
    dynamodb       = var.moto_endpoint
    ec2            = var.moto_endpoint
    ecs            = var.moto_endpoint
    iam            = var.moto_endpoint
    lambda         = var.moto_endpoint
    kms            = var.moto_endpoint
    s3             = var.moto_endpoint
    scheduler      = var.moto_endpoint
    sqs            = var.moto_endpoint
    sts            = var.moto_endpoint
    appautoscaling = var.moto_endpoint
  }
}

module "ecr_sync" {
  source = "../.."

  namespace      = var.namespace
  task_image_uri = var.task_image_uri
  task_image_tag = "test"

  config = {
    repos = [
      {
        source = "111122223333.dkr.ecr.us-east-1.amazonaws.com/my-app/backend"
        tags   = ["v1.*", "latest"]
      },
      {
        source      = "111122223333.dkr.ecr.us-east-1.amazonaws.com/gadgets/ui"
        destination = "my-team/ui-gadgets"
        referrers   = { artifact_types = ["application/vnd.dev.cosign.artifact.sig.v1+json"] }
      },
    ]
    referrers = { enabled = true }
    platforms = ["linux/amd64", "linux/arm64"]
  }

  # The default event_worker, "lambda": push events go to the events queue and the function.
  event_driven = { enabled = true }
  event_worker = var.event_worker
  event_lambda = { timeout_seconds = 300, max_concurrency = 3 }

  task_secrets = {
    REGISTRY_PASSWORD = "arn:aws:secretsmanager:us-east-1:123456789012:secret:registry-AbCdEf:password::"
  }

  # Test-only settings: moto cannot apply Application Auto Scaling (it lacks
  # ListTagsForResource and the provider waits forever), destroy must work.
  enable_autoscaling          = false
  ledger_deletion_protection  = false
  config_bucket_force_destroy = true
  # moto evaluates a Deny statement whose condition it cannot evaluate
  # (aws:SecureTransport) as matching, so the TLS-only bucket policy would
  # block the config upload there.
  config_bucket_enforce_tls = false
}

output "module" {
  description = "All module outputs, for run.sh's checks."
  value       = module.ecr_sync
}
