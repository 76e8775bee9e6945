################################################################################
# Private VPC: tasks in private subnets without public IPs, reaching AWS
# through VPC endpoints (see the README's list for what each one is for)
################################################################################

provider "aws" {
  region = var.region
}

data "aws_vpc" "this" {
  id = var.vpc_id
}

module "ecr_pull_sync" {
  source = "../.."

  namespace      = var.namespace
  task_image_uri = var.task_image_uri
  task_image_tag = var.task_image_tag
  config         = var.config

  # --- Private Networking ---
  task_vpc_id           = var.vpc_id
  task_subnet_ids       = var.subnet_ids
  task_assign_public_ip = false
  # Only the VPC (its endpoints) is reachable; widen this if a source registry
  # sits behind a NAT gateway or in another region.
  task_egress_cidr_blocks = [data.aws_vpc.this.cidr_block]
  # S3 and DynamoDB gateway endpoints are reached through their prefix lists.
  task_egress_prefix_list_ids = [for k in sort(tolist(local.gateway_endpoints)) : aws_vpc_endpoint.gateway[k].prefix_list_id]
}

################################################################################
# VPC endpoints the tasks need
################################################################################

locals {
  interface_endpoints = var.create_vpc_endpoints ? toset(["ecr.api", "ecr.dkr", "logs", "sqs"]) : toset([])
  gateway_endpoints   = var.create_vpc_endpoints ? toset(["s3", "dynamodb"]) : toset([])
}

resource "aws_security_group" "endpoints" {
  count = var.create_vpc_endpoints ? 1 : 0

  name_prefix = "${var.namespace}-endpoints-"
  description = "Interface endpoints used by the ecr-sync tasks"
  vpc_id      = var.vpc_id

  ingress {
    description     = "HTTPS from the ecr-sync tasks"
    from_port       = 443
    to_port         = 443
    protocol        = "tcp"
    security_groups = [module.ecr_pull_sync.security_group_id]
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_endpoint" "interface" {
  for_each = local.interface_endpoints

  vpc_id              = var.vpc_id
  service_name        = "com.amazonaws.${var.region}.${each.value}"
  vpc_endpoint_type   = "Interface"
  subnet_ids          = var.subnet_ids
  security_group_ids  = [aws_security_group.endpoints[0].id]
  private_dns_enabled = true
}

resource "aws_vpc_endpoint" "gateway" {
  for_each = local.gateway_endpoints

  vpc_id            = var.vpc_id
  service_name      = "com.amazonaws.${var.region}.${each.value}"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = var.route_table_ids
}
