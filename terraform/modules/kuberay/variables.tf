variable "operator_version" {
  type        = string
  description = "kuberay-operator Helm chart version (1.7.x)."
  validation {
    condition     = can(regex("^1\\.7\\.[0-9]+$", var.operator_version))
    error_message = "Use a 1.7.x chart: the manifests are validated against the v1.7 CRDs."
  }
}

variable "namespace" {
  type        = string
  description = "Namespace of the Ray resources."
}

variable "manifests_dir" {
  type        = string
  description = "Output directory of `python -m cluster.kuberay render`."
}

variable "manifest_files" {
  type        = list(string)
  description = "Rendered files to apply, e.g. pvc-outputs.yaml, raycluster.yaml."
}

variable "api_token_secret" {
  type        = string
  description = "Name of the Secret holding the Serve bearer token (values.yaml: serve.auth.secret_name)."
  default     = "attractor-api-token"
}
