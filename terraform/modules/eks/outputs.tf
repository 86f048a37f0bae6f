output "cluster_name" {
  description = "The cluster's name."
  value       = aws_eks_cluster.this.name
}

output "endpoint" {
  description = "The Kubernetes API URL."
  value       = aws_eks_cluster.this.endpoint
}

output "ca_certificate" {
  description = "The cluster CA certificate (base64)."
  value       = aws_eks_cluster.this.certificate_authority[0].data
}
