# An EKS cluster (private endpoint; a public one only if asked, restricted to authorized_cidrs; secrets encrypted with a rotating KMS key, every
# control-plane log type) with two managed node groups: `cpu` and `gpu` (AL2023 NVIDIA AMI, one GPU per
# node, tainted nvidia.com/gpu=present:NoSchedule). The VPC and its subnets are inputs.
data "aws_partition" "current" {}

data "aws_caller_identity" "current" {}

data "aws_iam_policy_document" "cluster_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["eks.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "node_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "kms" {
  # checkov:skip=CKV_AWS_111:a KMS key policy's Resource "*" is the key itself; the account root administers it (AWS default key policy)
  # checkov:skip=CKV_AWS_356:a KMS key policy's Resource "*" is the key itself (it cannot name its own ARN)
  # checkov:skip=CKV_AWS_109:the account root administering its own key is the AWS default key policy
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
  statement {
    sid       = "ClusterEncrypts"
    actions   = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = [aws_iam_role.cluster.arn]
    }
  }
}

resource "aws_iam_role" "cluster" {
  name               = "${var.name}-cluster"
  assume_role_policy = data.aws_iam_policy_document.cluster_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "cluster" {
  role       = aws_iam_role.cluster.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonEKSClusterPolicy"
}

resource "aws_iam_role" "node" {
  name               = "${var.name}-node"
  assume_role_policy = data.aws_iam_policy_document.node_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "node" {
  for_each   = toset(["AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly"])
  role       = aws_iam_role.node.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/${each.value}"
}

resource "aws_kms_key" "secrets" {
  description             = "${var.name}: EKS secrets encryption"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
  tags                    = var.tags
}

resource "aws_eks_cluster" "this" {
  name                      = var.name
  version                   = var.kubernetes_version
  role_arn                  = aws_iam_role.cluster.arn
  enabled_cluster_log_types = ["api", "audit", "authenticator", "controllerManager", "scheduler"]

  vpc_config {
    subnet_ids              = var.subnet_ids
    endpoint_private_access = true
    endpoint_public_access  = var.public_endpoint
    public_access_cidrs     = var.public_endpoint ? var.authorized_cidrs : null
  }

  encryption_config {
    resources = ["secrets"]
    provider {
      key_arn = aws_kms_key.secrets.arn
    }
  }

  tags       = var.tags
  depends_on = [aws_iam_role_policy_attachment.cluster]
}

locals {
  groups = {
    cpu = { pool = var.cpu_pool, ami = "AL2023_x86_64_STANDARD", gpu = false }
    gpu = { pool = var.gpu_pool, ami = "AL2023_x86_64_NVIDIA", gpu = true }
  }
}

resource "aws_eks_node_group" "group" {
  for_each = local.groups

  cluster_name    = aws_eks_cluster.this.name
  node_group_name = each.key
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = var.subnet_ids
  ami_type        = each.value.ami
  instance_types  = [each.value.pool.machine_type]
  labels          = { "attractor.io/pool" = each.key }

  scaling_config {
    min_size     = each.value.pool.min_nodes
    max_size     = each.value.pool.max_nodes
    desired_size = each.value.pool.min_nodes
  }

  update_config {
    max_unavailable = 1
  }

  dynamic "taint" {
    for_each = each.value.gpu ? ["nvidia.com/gpu"] : []
    content {
      key    = taint.value
      value  = "present"
      effect = "NO_SCHEDULE"
    }
  }

  lifecycle {
    ignore_changes = [scaling_config[0].desired_size] # the cluster autoscaler owns it after creation
  }

  tags       = merge(var.tags, { "k8s.io/cluster-autoscaler/enabled" = "true", "k8s.io/cluster-autoscaler/${var.name}" = "owned" })
  depends_on = [aws_iam_role_policy_attachment.node]
}
