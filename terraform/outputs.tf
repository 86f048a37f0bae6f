output "cluster_name" {
  description = "The Kubernetes cluster's name."
  value       = var.cloud == "gke" ? module.gke[0].cluster_name : module.eks[0].cluster_name
}

output "cluster_endpoint" {
  description = "The Kubernetes API endpoint."
  value       = local.cluster_endpoint
}

output "kubeconfig_command" {
  description = "The command that writes a kubeconfig entry for the cluster."
  value = (var.cloud == "gke"
    ? "gcloud container clusters get-credentials ${var.name} --region ${var.region} --project ${coalesce(var.gcp_project, "-")}"
  : "aws eks update-kubeconfig --name ${var.name} --region ${var.region}")
}

output "namespace" {
  description = "Namespace of the Ray resources."
  value       = module.kuberay.namespace
}

output "api_token_secret" {
  description = "Name of the Secret holding the Serve apps' bearer token (key: token)."
  value       = module.kuberay.api_token_secret
}
