variable "cloud" {
  type        = string
  description = "Which managed Kubernetes to create: \"gke\" (Google) or \"eks\" (AWS)."
  validation {
    condition     = contains(["gke", "eks"], var.cloud)
    error_message = "cloud must be \"gke\" or \"eks\"."
  }
}

variable "name" {
  type        = string
  description = "Cluster name; also the RayCluster's name in cluster/kuberay/values.yaml."
  default     = "attractor"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,38}[a-z0-9]$", var.name))
    error_message = "name must be a lower-case DNS label of 3 to 40 characters."
  }
}

variable "region" {
  type        = string
  description = "GCP region (gke) or AWS region (eks), e.g. us-central1 or us-east-1."
}

variable "gcp_project" {
  type        = string
  description = "GCP project id (gke only; ignored for eks)."
  default     = null
}

variable "network" {
  type = object({
    gke_network    = optional(string)
    gke_subnetwork = optional(string)
    eks_subnet_ids = optional(list(string), [])
  })
  description = "Existing network to use: the VPC network and subnetwork (gke) or at least two private subnet ids (eks)."
}

variable "authorized_cidrs" {
  type        = list(string)
  description = "CIDR blocks allowed to reach the Kubernetes API endpoint (your office / VPN egress). No default: say who may."
  validation {
    condition     = alltrue([for c in var.authorized_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "authorized_cidrs must be CIDR blocks, and not 0.0.0.0/0."
  }
}

variable "eks_public_endpoint" {
  type        = bool
  description = "eks: also expose the API endpoint publicly, restricted to authorized_cidrs (off: reach it from inside the VPC)."
  default     = false
}

variable "kubernetes_version" {
  type        = string
  description = "Kubernetes minor version of the control plane (eks); GKE follows its release channel."
  default     = "1.31"
}

variable "cpu_pool" {
  type = object({
    machine_type = string
    min_nodes    = number
    max_nodes    = number
  })
  description = "CPU node pool (the Ray head and the `cpu` worker group): machine / instance type and autoscaling bounds."
  default = {
    machine_type = "n2-standard-8" # eks: set e.g. m6i.2xlarge
    min_nodes    = 1
    max_nodes    = 8
  }
}

variable "gpu_pool" {
  type = object({
    machine_type     = string
    accelerator_type = optional(string, "nvidia-l4") # gke only
    min_nodes        = number
    max_nodes        = number
  })
  description = "GPU node pool (the `gpu` worker group, one GPU per node, tainted nvidia.com/gpu=present:NoSchedule)."
  default = {
    machine_type     = "g2-standard-8" # eks: set e.g. g6.2xlarge
    accelerator_type = "nvidia-l4"
    min_nodes        = 0
    max_nodes        = 4
  }
}

variable "kuberay_operator_version" {
  type        = string
  description = "KubeRay operator Helm chart version; must match the CRDs the manifests are validated against (v1.7)."
  default     = "1.7.0"
  validation {
    condition     = can(regex("^1\\.7\\.[0-9]+$", var.kuberay_operator_version))
    error_message = "The manifests are checked against the KubeRay v1.7 CRDs: use a 1.7.x chart."
  }
}

variable "manifests_dir" {
  type        = string
  description = "Directory written by `python -m cluster.kuberay render --out DIR` (raycluster.yaml, pvc-*.yaml, rayservice.yaml)."
  default     = "../manifests"
}

variable "manifest_files" {
  type        = list(string)
  description = "Which rendered manifests Terraform applies (RayJobs are applied per run with kubectl)."
  default     = ["pvc-outputs.yaml", "pvc-checkpoints.yaml", "raycluster.yaml"]
}

variable "namespace" {
  type        = string
  description = "Kubernetes namespace of the RayCluster, RayService and RayJobs (values.yaml: namespace)."
  default     = "attractor"
}

variable "labels" {
  type        = map(string)
  description = "Labels / tags put on every cloud resource (cost allocation)."
  default     = { app = "attractor" }
}
