variable "name" {
  type        = string
  description = "Cluster name."
}

variable "kubernetes_version" {
  type        = string
  description = "Kubernetes minor version of the control plane."
}

variable "subnet_ids" {
  type        = list(string)
  description = "Private subnet ids in at least two availability zones."
  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "EKS needs subnets in at least two availability zones."
  }
}

variable "authorized_cidrs" {
  type        = list(string)
  description = "CIDR blocks allowed to reach the public API endpoint."
}

variable "cpu_pool" {
  type = object({
    machine_type = string
    min_nodes    = number
    max_nodes    = number
  })
  description = "CPU node group: instance type and scaling bounds."
}

variable "gpu_pool" {
  type = object({
    machine_type     = string
    accelerator_type = optional(string)
    min_nodes        = number
    max_nodes        = number
  })
  description = "GPU node group: instance type (one GPU per instance, e.g. g6.2xlarge) and scaling bounds."
}

variable "tags" {
  type        = map(string)
  description = "Tags on every resource."
}

variable "public_endpoint" {
  type        = bool
  description = "Also expose the API endpoint publicly (restricted to authorized_cidrs). Off: reach it from the VPC (VPN, bastion)."
  default     = false
}
