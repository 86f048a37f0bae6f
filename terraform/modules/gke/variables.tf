variable "name" {
  type        = string
  description = "Cluster name."
}

variable "project" {
  type        = string
  description = "GCP project id."
}

variable "region" {
  type        = string
  description = "GCP region (a regional cluster)."
}

variable "network" {
  type        = string
  description = "Existing VPC network name."
}

variable "subnetwork" {
  type        = string
  description = "Existing subnetwork name (with secondary ranges for pods and services)."
}

variable "master_cidr" {
  type        = string
  description = "A /28 for the private control plane's peering range."
  default     = "172.16.0.0/28"
}

variable "authorized_cidrs" {
  type        = list(string)
  description = "CIDR blocks allowed to reach the control plane."
}

variable "cpu_pool" {
  type = object({
    machine_type = string
    min_nodes    = number
    max_nodes    = number
  })
  description = "CPU pool: machine type and autoscaling bounds per zone."
}

variable "gpu_pool" {
  type = object({
    machine_type     = string
    accelerator_type = optional(string, "nvidia-l4")
    min_nodes        = number
    max_nodes        = number
  })
  description = "GPU pool: machine type, accelerator type (one per node) and autoscaling bounds per zone."
}

variable "labels" {
  type        = map(string)
  description = "Labels on the cluster and its nodes."
}
