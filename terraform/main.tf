# terraform apply -> a GKE or EKS cluster with a CPU and a GPU node pool -> the KubeRay operator (Helm,
# pinned to 1.7.x) -> the namespace, the Serve token Secret, the PVCs and the RayCluster rendered by
# `python -m cluster.kuberay render`. docs/deploy.md walks through it.
module "gke" {
  source = "./modules/gke"
  count  = var.cloud == "gke" ? 1 : 0

  name             = var.name
  project          = var.gcp_project
  region           = var.region
  network          = var.network.gke_network
  subnetwork       = var.network.gke_subnetwork
  authorized_cidrs = var.authorized_cidrs
  cpu_pool         = var.cpu_pool
  gpu_pool         = var.gpu_pool
  labels           = var.labels
}

module "eks" {
  source = "./modules/eks"
  count  = var.cloud == "eks" ? 1 : 0

  name               = var.name
  kubernetes_version = var.kubernetes_version
  subnet_ids         = var.network.eks_subnet_ids
  authorized_cidrs   = var.authorized_cidrs
  public_endpoint    = var.eks_public_endpoint
  cpu_pool           = var.cpu_pool
  gpu_pool           = var.gpu_pool
  tags               = var.labels
}

# EKS nodes have the NVIDIA driver (AL2023 NVIDIA AMI) but no device plugin; GKE installs both itself.
resource "helm_release" "nvidia_device_plugin" {
  count            = var.cloud == "eks" ? 1 : 0
  name             = "nvidia-device-plugin"
  repository       = "https://nvidia.github.io/k8s-device-plugin"
  chart            = "nvidia-device-plugin"
  version          = "0.17.0"
  namespace        = "nvidia-device-plugin"
  create_namespace = true
  depends_on       = [module.eks]
}

module "kuberay" {
  source = "./modules/kuberay"

  operator_version = var.kuberay_operator_version
  namespace        = var.namespace
  manifests_dir    = var.manifests_dir
  manifest_files   = var.manifest_files
  depends_on       = [module.gke, module.eks]
}
