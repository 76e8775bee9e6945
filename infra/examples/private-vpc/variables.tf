variable "region" {
  description = "AWS region of the deployment (and of the source ECR: endpoints are regional)."
  type        = string
  default     = "us-east-1"
}

variable "namespace" {
  description = "Prefix for every resource name."
  type        = string
  default     = "private-ecr-sync"
}

variable "task_image_uri" {
  description = "Repository URI of the ecr-sync image (without tag)."
  type        = string
  default     = "111122223333.dkr.ecr.us-east-1.amazonaws.com/ecr-sync"
}

variable "task_image_tag" {
  description = "Tag of the ecr-sync image."
  type        = string
  default     = "latest"
}

variable "vpc_id" {
  description = "Existing VPC for the tasks."
  type        = string
  default     = "vpc-0123456789abcdef0"
}

variable "subnet_ids" {
  description = "Private subnets for the tasks and the interface endpoints."
  type        = list(string)
  default     = ["subnet-0123456789abcdef0", "subnet-fedcba9876543210"]
}

variable "route_table_ids" {
  description = "Route tables of the private subnets, for the S3 and DynamoDB gateway endpoints."
  type        = list(string)
  default     = ["rtb-0123456789abcdef0"]
}

variable "create_vpc_endpoints" {
  description = "Create the endpoints here; false if the VPC already has them."
  type        = bool
  default     = true
}

variable "config" {
  description = "The sync configuration (the module's `config` variable)."
  type        = any
  default = {
    repos = [
      { source = "111122223333.dkr.ecr.us-east-1.amazonaws.com/my-app/backend", tags = ["v*"] },
    ]
  }
}
