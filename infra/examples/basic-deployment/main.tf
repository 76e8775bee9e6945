################################################################################
# Basic deployment: the seed's usage, in the consumer account's default VPC
################################################################################

provider "aws" {
  region = var.region
}

module "ecr_pull_sync" {
  # From outside this repository, pin a release instead:
  # source = "github.com/ecr-sync/ecr-sync//infra?ref=v0.1.0"
  source = "../.."

  # --- Required ---
  namespace      = var.namespace
  task_image_uri = var.task_image_uri
  config         = var.config

  # --- Optional ---
  schedule       = var.schedule
  task_image_tag = var.task_image_tag
  max_workers    = var.max_workers
}
