################################################################################
# Networking: default VPC fallback and an egress-only security group
################################################################################

data "aws_vpc" "default" {
  count   = var.task_vpc_id == null ? 1 : 0
  default = true
}

data "aws_subnets" "default" {
  count = var.task_vpc_id == null ? 1 : 0

  filter {
    name   = "vpc-id"
    values = [data.aws_vpc.default[0].id]
  }
  filter {
    name   = "default-for-az"
    values = ["true"]
  }
}

resource "aws_security_group" "tasks" {
  name_prefix = "${var.namespace}-tasks-"
  description = "ecr-sync ${var.namespace} planner and worker tasks: egress only"
  vpc_id      = local.vpc_id
  tags        = local.tags

  lifecycle {
    create_before_destroy = true
    precondition {
      condition     = var.task_vpc_id == null || length(var.task_subnet_ids) > 0
      error_message = "task_subnet_ids is required when task_vpc_id is set."
    }
  }
}

resource "aws_vpc_security_group_egress_rule" "tasks" {
  for_each = { for pair in setproduct(var.task_egress_cidr_blocks, var.task_egress_ports) : "${pair[0]}:${pair[1]}" => pair }

  security_group_id = aws_security_group.tasks.id
  description       = "Registries and AWS APIs over TCP ${each.value[1]}"
  ip_protocol       = "tcp"
  from_port         = each.value[1]
  to_port           = each.value[1]
  cidr_ipv4         = each.value[0]
  tags              = local.tags
}

# count, not for_each: prefix list ids may be unknown until their endpoints exist.
resource "aws_vpc_security_group_egress_rule" "tasks_prefix_lists" {
  count = length(var.task_egress_prefix_list_ids) * length(var.task_egress_ports)

  security_group_id = aws_security_group.tasks.id
  description       = "Gateway endpoints over TCP ${var.task_egress_ports[count.index % length(var.task_egress_ports)]}"
  ip_protocol       = "tcp"
  from_port         = var.task_egress_ports[count.index % length(var.task_egress_ports)]
  to_port           = var.task_egress_ports[count.index % length(var.task_egress_ports)]
  prefix_list_id    = var.task_egress_prefix_list_ids[floor(count.index / length(var.task_egress_ports))]
  tags              = local.tags
}

################################################################################
# Cluster and logs
################################################################################

resource "aws_ecs_cluster" "this" {
  name = var.namespace

  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  tags = local.tags
}

resource "aws_cloudwatch_log_group" "planner" {
  name              = "/ecr-sync/${var.namespace}/planner"
  retention_in_days = var.log_retention_days
  kms_key_id        = local.kms_key_arn
  tags              = local.tags
}

resource "aws_cloudwatch_log_group" "worker" {
  name              = "/ecr-sync/${var.namespace}/worker"
  retention_in_days = var.log_retention_days
  kms_key_id        = local.kms_key_arn
  tags              = local.tags
}

################################################################################
# Task definitions: one image, two commands
################################################################################

locals {
  image = "${var.task_image_uri}:${var.task_image_tag}"

  common_environment = {
    (local.env.config)       = local.config_s3_uri
    (local.env.queue_url)    = aws_sqs_queue.jobs.url
    (local.env.dlq_url)      = aws_sqs_queue.dlq.url
    (local.env.ledger_table) = aws_dynamodb_table.ledger.name
    (local.env.log_format)   = "json"
  }
  worker_environment = merge(local.common_environment, {
    (local.env.drain)        = tostring(var.worker_drain_seconds)
    (local.env.job_deadline) = tostring(var.worker_job_deadline_seconds)
  })

  secrets = [for k, arn in var.task_secrets : { name = k, valueFrom = arn }]

  container_common = {
    secrets                = local.secrets
    essential              = true
    image                  = local.image
    readonlyRootFilesystem = true # the binaries stream, nothing is written to disk
    user                   = "65532:65532"
    linuxParameters        = { initProcessEnabled = true }
  }
}

resource "aws_ecs_task_definition" "planner" {
  family                   = "${var.namespace}-planner"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.planner_cpu
  memory                   = var.planner_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.planner.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  container_definitions = jsonencode([merge(local.container_common, {
    name        = "planner"
    command     = local.planner_command
    environment = [for k, v in local.common_environment : { name = k, value = v }]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.planner.name
        awslogs-region        = local.region
        awslogs-stream-prefix = "planner"
      }
    }
  })])

  tags = local.tags
}

resource "aws_ecs_task_definition" "worker" {
  family                   = "${var.namespace}-worker"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.worker_cpu
  memory                   = var.worker_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.worker.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  container_definitions = jsonencode([merge(local.container_common, {
    name        = "worker"
    command     = local.worker_command
    stopTimeout = var.worker_stop_timeout
    environment = [for k, v in local.worker_environment : { name = k, value = v }]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.worker.name
        awslogs-region        = local.region
        awslogs-stream-prefix = "worker"
      }
    }
  })])

  tags = local.tags

  lifecycle {
    precondition {
      condition     = var.worker_drain_seconds < var.worker_stop_timeout
      error_message = "worker_drain_seconds must be below worker_stop_timeout, or SIGKILL lands before in-flight jobs are released."
    }
  }
}

################################################################################
# Worker service (scaled by autoscaling.tf; starts at min_workers)
################################################################################

resource "aws_ecs_service" "worker" {
  #checkov:skip=CKV_AWS_333:task_assign_public_ip defaults to true only because the seed's default-VPC fallback has no NAT; private VPCs set it false (examples/private-vpc).
  name                   = "${var.namespace}-worker"
  cluster                = aws_ecs_cluster.this.id
  task_definition        = aws_ecs_task_definition.worker.arn
  desired_count          = var.min_workers
  launch_type            = "FARGATE"
  platform_version       = "LATEST"
  propagate_tags         = "SERVICE"
  enable_execute_command = false

  network_configuration {
    subnets          = local.network_configuration.subnets
    security_groups  = local.network_configuration.security_groups
    assign_public_ip = local.network_configuration.assign_public_ip
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  tags = local.tags

  lifecycle {
    # Application Auto Scaling owns the running count.
    ignore_changes = [desired_count]
  }
}
