################################################################################
# DynamoDB ledger (schema in main.tf: local.ledger)
################################################################################

resource "aws_dynamodb_table" "ledger" {
  name                        = "${var.namespace}-ledger"
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = local.ledger.hash_key
  range_key                   = local.ledger.range_key
  deletion_protection_enabled = var.ledger_deletion_protection

  attribute {
    name = local.ledger.hash_key
    type = local.ledger.attribute_type
  }
  attribute {
    name = local.ledger.range_key
    type = local.ledger.attribute_type
  }
  attribute {
    name = local.ledger.gsi_hash_key
    type = local.ledger.attribute_type
  }
  attribute {
    name = local.ledger.gsi_range_key
    type = local.ledger.attribute_type
  }

  global_secondary_index {
    name            = local.ledger.gsi_name
    hash_key        = local.ledger.gsi_hash_key
    range_key       = local.ledger.gsi_range_key
    projection_type = "ALL"
  }

  ttl {
    attribute_name = local.ledger.ttl_attribute
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = local.kms_key_arn
  }

  tags = local.tags
}
