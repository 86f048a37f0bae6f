# Every provider pinned to one version; the modules are local (./modules/*), versioned with this repository.
terraform {
  required_version = ">= 1.6.0, < 2.0.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "= 6.12.0"
    }
    aws = {
      source  = "hashicorp/aws"
      version = "= 5.80.0"
    }
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
