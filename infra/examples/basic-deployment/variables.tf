variable "region" {
  description = "AWS region of the consumer deployment."
  type        = string
  default     = "us-east-1"
}

variable "namespace" {
  description = "Prefix for every resource name."
  type        = string
  default     = "example-ecr-sync"
}

variable "task_image_uri" {
  description = "Repository URI of the ecr-sync image (without tag)."
  type        = string
  default     = null
}

variable "task_image_tag" {
  description = "Tag of the ecr-sync image."
  type        = string
  default     = "latest"
}

variable "schedule" {
  description = "When the planner runs (EventBridge Scheduler expression)."
  type        = string
  default     = "rate(1 day)"
}

variable "max_workers" {
  description = "Upper bound of the worker service."
  type        = number
  default     = 10
}

variable "config" {
  description = "The sync configuration; its type is checked by the module's `config` variable."
  type        = any
  default     = {}
}
