# This file contains example configuration.
# Terraform automatically loads variables from files ending in .auto.tfvars.

# --- Required Configuration ---
namespace      = "example-ecr-sync"
task_image_uri = "111122223333.dkr.ecr.us-east-1.amazonaws.com/ecr-pull-sync" # Replace with your image URI

# --- Main Application Configuration ---
# This object defines the entire behavior of the sync application.
config = {
  mode = "create" # Can be "create" or "refresh"
  repos = [
    {
      source = "111122223333.dkr.ecr.us-east-1.amazonaws.com/my-app"
      tags   = ["v1.*", "latest"]
    },
    {
      source      = "111122223333.dkr.ecr.us-east-1.amazonaws.com/another-app"
      destination = "renamed-app"
      tags        = ["stable"]
    }
  ]
  repo_defaults = {
    scan_on_push     = true
    tag_immutability = true
    encryption_type  = "AES256" # Can be "AES256" or "KMS"
    # kms_key_arn      = "arn:aws:kms:us-east-1:111122223333:key/your-repo-kms-key-id"
  }
}
