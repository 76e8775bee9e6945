variable "region" {
  description = "Region of the source repositories."
  type        = string
  default     = "us-east-1"
}

variable "consumer_account_ids" {
  description = "Accounts running ecr-sync that may pull."
  type        = list(string)
  default     = ["444455556666"]

  validation {
    condition     = alltrue([for id in var.consumer_account_ids : can(regex("^[0-9]{12}$", id))])
    error_message = "consumer_account_ids must be 12-digit AWS account ids."
  }
}

variable "repository_names" {
  description = "Existing source repositories to share (names, not URIs)."
  type        = list(string)
  default     = ["my-app/backend", "gadgets/ui"]
}

variable "consumer_event_bus_arn" {
  description = "The consumer's event bus (arn:aws:events:<region>:<account>:event-bus/default) to forward push events to; null: no forwarding. The consumer module adds the bus permission (event_driven.allow_source_accounts)."
  type        = string
  default     = null
}
