terraform {
  required_version = ">= 1.6.0, < 2.0.0"
  required_providers {
    helm = {
      source  = "hashicorp/helm"
      version = "= 2.16.1"
    }
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = "= 2.35.0"
    }
    random = {
      source  = "hashicorp/random"
      version = "= 3.6.3"
    }
  }
}
