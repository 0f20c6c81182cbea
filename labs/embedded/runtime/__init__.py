"""The embedded cluster's process runtime (its "kubelet"): pods run as local processes."""

from .runtime import PodRuntime

__all__ = ["PodRuntime"]
