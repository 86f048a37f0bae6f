output "cluster_name" {
  description = "The cluster's name."
  value       = google_container_cluster.this.name
}

output "endpoint" {
  description = "The Kubernetes API URL."
  value       = "https://${google_container_cluster.this.endpoint}"
}

output "ca_certificate" {
  description = "The cluster CA certificate (base64)."
  value       = google_container_cluster.this.master_auth[0].cluster_ca_certificate
}
