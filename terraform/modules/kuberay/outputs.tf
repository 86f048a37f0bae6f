output "namespace" {
  description = "Namespace of the Ray resources."
  value       = kubernetes_namespace_v1.ray.metadata[0].name
}

output "api_token_secret" {
  description = "Name of the Secret holding the Serve bearer token."
  value       = kubernetes_secret_v1.api_token.metadata[0].name
}
