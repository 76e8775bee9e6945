################################################################################
# Config object in S3 (bucket created here unless config_bucket_name is given)
################################################################################

resource "aws_s3_bucket" "config" {
  count = var.config_bucket_name == null ? 1 : 0

  #checkov:skip=CKV_AWS_18:Holds one small config object written by Terraform; reads are audited by CloudTrail data events if wanted, an access-log bucket would double the module's buckets.
  #checkov:skip=CKV_AWS_144:The config is re-created from Terraform state and code; cross-region replication adds a second bucket and role for no recovery gain.
  #checkov:skip=CKV2_AWS_62:Nothing reacts to config changes; the planner reads the object on each run.
  bucket_prefix = "${var.namespace}-config-"
  force_destroy = var.config_bucket_force_destroy
  tags          = local.tags
}

resource "aws_s3_bucket_versioning" "config" {
  count = var.config_bucket_name == null ? 1 : 0

  bucket = aws_s3_bucket.config[0].id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "config" {
  count = var.config_bucket_name == null ? 1 : 0

  bucket = aws_s3_bucket.config[0].id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = local.kms_key_arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_public_access_block" "config" {
  count = var.config_bucket_name == null ? 1 : 0

  bucket                  = aws_s3_bucket.config[0].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "config" {
  count = var.config_bucket_name == null ? 1 : 0

  bucket = aws_s3_bucket.config[0].id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "config" {
  count = var.config_bucket_name == null ? 1 : 0

  bucket = aws_s3_bucket.config[0].id
  rule {
    id     = "expire-old-config-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = 90
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
  depends_on = [aws_s3_bucket_versioning.config]
}

data "aws_iam_policy_document" "config_bucket" {
  count = var.config_bucket_name == null && var.config_bucket_enforce_tls ? 1 : 0

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.config[0].arn, "${aws_s3_bucket.config[0].arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "config" {
  count = var.config_bucket_name == null && var.config_bucket_enforce_tls ? 1 : 0

  bucket     = aws_s3_bucket.config[0].id
  policy     = data.aws_iam_policy_document.config_bucket[0].json
  depends_on = [aws_s3_bucket_public_access_block.config]
}

resource "aws_s3_object" "config" {
  bucket       = local.config_bucket
  key          = var.config_object_key
  content      = local.config_json
  content_type = "application/json"
  kms_key_id   = local.kms_key_arn
  tags         = local.tags

  depends_on = [
    aws_s3_bucket_versioning.config,
    aws_s3_bucket_server_side_encryption_configuration.config,
  ]
}
