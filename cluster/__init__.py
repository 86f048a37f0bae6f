"""Cluster access: connect to a running Ray cluster or start an embedded one."""
from cluster.connect import connect, detect_resources

__all__ = ["connect", "detect_resources"]
