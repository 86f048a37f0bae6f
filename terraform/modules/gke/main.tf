# A regional, private-node GKE cluster (Workload Identity, Shielded nodes, network policy) with two
# autoscaling node pools: `cpu` (the Ray head and CPU workers) and `gpu` (one NVIDIA GPU per node, the
# driver installed by GKE, tainted so only pods that tolerate nvidia.com/gpu land there).
resource "google_container_cluster" "this" {
  # checkov:skip=CKV_GCP_65:RBAC through Google Groups needs a Google Workspace domain (gke-security-groups@DOMAIN) this module cannot assume; bind users with Kubernetes RBAC
  name     = var.name
  project  = var.project
  location = var.region

  network    = var.network
  subnetwork = var.subnetwork

  remove_default_node_pool = true
  initial_node_count       = 1
  deletion_protection      = true

  release_channel {
    channel = "REGULAR"
  }

  networking_mode = "VPC_NATIVE"
  ip_allocation_policy {}

  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = false
    master_ipv4_cidr_block  = var.master_cidr
  }

  master_authorized_networks_config {
    dynamic "cidr_blocks" {
      for_each = var.authorized_cidrs
      content {
        cidr_block   = cidr_blocks.value
        display_name = "authorized-${cidr_blocks.key}"
      }
    }
  }

  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }

  network_policy {
    enabled  = true
    provider = "CALICO"
  }

  addons_config {
    network_policy_config {
      disabled = false
    }
  }

  workload_identity_config {
    workload_pool = "${var.project}.svc.id.goog"
  }

  binary_authorization {
    evaluation_mode = "PROJECT_SINGLETON_POLICY_ENFORCE"
  }

  enable_shielded_nodes       = true
  enable_intranode_visibility = true
  logging_service             = "logging.googleapis.com/kubernetes"
  monitoring_service          = "monitoring.googleapis.com/kubernetes"

  resource_labels = var.labels

  node_config {
    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }
}

resource "google_service_account" "nodes" {
  project      = var.project
  account_id   = "${var.name}-nodes"
  display_name = "attractor GKE nodes"
}

resource "google_project_iam_member" "nodes" {
  for_each = toset(["roles/logging.logWriter", "roles/monitoring.metricWriter", "roles/monitoring.viewer",
  "roles/artifactregistry.reader"])
  project = var.project
  role    = each.value
  member  = "serviceAccount:${google_service_account.nodes.email}"
}

locals {
  pools = {
    cpu = { pool = var.cpu_pool, gpu = false }
    gpu = { pool = var.gpu_pool, gpu = true }
  }
}

resource "google_container_node_pool" "pool" {
  for_each = local.pools

  name     = each.key
  project  = var.project
  location = var.region
  cluster  = google_container_cluster.this.name

  autoscaling {
    min_node_count = each.value.pool.min_nodes
    max_node_count = each.value.pool.max_nodes
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    machine_type    = each.value.pool.machine_type
    image_type      = "COS_CONTAINERD"
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    labels          = merge(var.labels, { "attractor.io/pool" = each.key })
    metadata = {
      disable-legacy-endpoints = "true"
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }

    dynamic "guest_accelerator" {
      for_each = each.value.gpu ? [each.value.pool.accelerator_type] : []
      content {
        type  = guest_accelerator.value
        count = 1
        gpu_driver_installation_config {
          gpu_driver_version = "LATEST"
        }
      }
    }

    dynamic "taint" {
      for_each = each.value.gpu ? ["nvidia.com/gpu"] : []
      content {
        key    = taint.value
        value  = "present"
        effect = "NO_SCHEDULE"
      }
    }
  }
}
