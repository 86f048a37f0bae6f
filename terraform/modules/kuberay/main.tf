# The KubeRay operator (its Helm chart, pinned to the 1.7 line the manifests are validated against), then
# the namespace, the Serve apps' bearer-token Secret (a random 48-character token, kept in the state as a
# sensitive value) and the rendered manifests (PVCs, the RayCluster).
# kubernetes_manifest needs the CRDs at plan time: on a new cluster apply the operator first
# (`terraform apply -target=module.kuberay.helm_release.operator`), then everything (docs/deploy.md).
resource "helm_release" "operator" {
  name             = "kuberay-operator"
  repository       = "https://ray-project.github.io/kuberay-helm/"
  chart            = "kuberay-operator"
  version          = var.operator_version
  namespace        = "kuberay-system"
  create_namespace = true
  atomic           = true
  timeout          = 600
}

resource "kubernetes_namespace_v1" "ray" {
  metadata {
    name = var.namespace
    labels = {
      "app.kubernetes.io/name" = "attractor"
    }
  }
}

resource "random_password" "api_token" {
  length  = 48
  special = false
}

resource "kubernetes_secret_v1" "api_token" {
  metadata {
    name      = var.api_token_secret
    namespace = kubernetes_namespace_v1.ray.metadata[0].name
  }
  data = {
    token = random_password.api_token.result
  }
}

resource "kubernetes_manifest" "rendered" {
  for_each   = toset(var.manifest_files)
  manifest   = yamldecode(file("${var.manifests_dir}/${each.value}"))
  depends_on = [helm_release.operator, kubernetes_secret_v1.api_token]
}
