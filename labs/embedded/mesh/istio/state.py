"""A snapshot of what Istio's control plane reads: the cluster's Kubernetes objects (KubeState,
shared by every mesh) plus Istio's kinds, the Ingress and Gateway API objects istiod translates,
and the mesh config. Builders of Envoy configuration are pure functions of a `MeshState`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..kube_state import KubeState, Obj

ROOT_NAMESPACE = "istio-system"


def _default_mesh_config() -> Obj:
    """A fresh installation's mesh config (imported late: meshconfig reads the API server)."""
    from .meshconfig import default_mesh_config
    return default_mesh_config()


@dataclass
class MeshState(KubeState):
    """What istiod reads: the Kubernetes objects, Istio's kinds, the Ingress and Gateway API
    objects it translates, and the mesh config."""

    virtual_services: list[Obj] = field(default_factory=list)
    destination_rules: list[Obj] = field(default_factory=list)
    peer_authentications: list[Obj] = field(default_factory=list)
    service_entries: list[Obj] = field(default_factory=list)
    gateways: list[Obj] = field(default_factory=list)
    authorization_policies: list[Obj] = field(default_factory=list)
    request_authentications: list[Obj] = field(default_factory=list)
    telemetries: list[Obj] = field(default_factory=list)  # telemetry.istio.io Telemetry
    # Kubernetes Ingress and Gateway API objects (labs.embedded.mesh.istio.ingress / gateway_api
    # translate them into Istio Gateways and VirtualServices, as istiod does).
    ingresses: list[Obj] = field(default_factory=list)
    ingress_classes: list[Obj] = field(default_factory=list)
    gateway_classes: list[Obj] = field(default_factory=list)
    kube_gateways: list[Obj] = field(default_factory=list)
    http_routes: list[Obj] = field(default_factory=list)
    reference_grants: list[Obj] = field(default_factory=list)
    root_namespace: str = ROOT_NAMESPACE
    # Istio's mesh config (ConfigMap istio-system/istio, key `mesh`; see meshconfig.py) and
    # what is wrong with it, if anything.
    mesh_config: Obj = field(default_factory=_default_mesh_config)
    mesh_config_error: str | None = None
