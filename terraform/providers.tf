# One root for both clouds: var.cloud picks the cluster module; the Kubernetes and Helm providers talk to
# whichever cluster it created. Credentials come from the environment (gcloud / AWS profiles), never from
# variables.
provider "google" {
  project = var.gcp_project
  region  = var.region
}

provider "aws" {
  region = var.region
}

data "google_client_config" "current" {
  count = var.cloud == "gke" ? 1 : 0
}

data "aws_eks_cluster_auth" "current" {
  count = var.cloud == "eks" ? 1 : 0
  name  = module.eks[0].cluster_name
}

locals {
  cluster_endpoint = var.cloud == "gke" ? module.gke[0].endpoint : module.eks[0].endpoint
  cluster_ca       = var.cloud == "gke" ? module.gke[0].ca_certificate : module.eks[0].ca_certificate
  cluster_token    = var.cloud == "gke" ? data.google_client_config.current[0].access_token : data.aws_eks_cluster_auth.current[0].token
}

provider "kubernetes" {
  host                   = local.cluster_endpoint
  cluster_ca_certificate = base64decode(local.cluster_ca)
  token                  = local.cluster_token
}

provider "helm" {
  kubernetes {
    host                   = local.cluster_endpoint
    cluster_ca_certificate = base64decode(local.cluster_ca)
    token                  = local.cluster_token
  }
}
