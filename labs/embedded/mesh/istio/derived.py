"""What istiod derives from Kubernetes Ingress and Gateway API objects before it builds any proxy
configuration: Istio Gateways and VirtualServices, added to the snapshot every builder reads, so
the ingress gateway and the Gateways' own deployments are programmed by the same translation as
Istio's own objects (labs.embedded.mesh.istio.xds.gateway)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..kube_state import Obj
from .gateway_api import Translation, translate_gateway_api
from .ingress import istio_ingresses, translate_ingresses
from .state import MeshState


@dataclass
class Derived:
    """The translation's by-products the status writer needs."""

    gateway_api: Translation
    ingresses: list[Obj] = field(default_factory=list)  # the Ingresses Istio serves
    ingress_warnings: list[tuple[Obj, str]] = field(default_factory=list)


def translate(state: MeshState, secrets: set[tuple[str, str]]) -> tuple[MeshState, Derived]:
    """(the snapshot with the derived Gateways and VirtualServices, the by-products);
    `secrets`: (namespace, name) of every Secret (Gateway listener certificates)."""
    gateways, services, warnings = translate_ingresses(state)
    api = translate_gateway_api(state, secrets)
    derived = dataclasses.replace(
        state, gateways=[*state.gateways, *gateways, *api.gateways],
        virtual_services=[*state.virtual_services, *services, *api.virtual_services])
    return derived, Derived(api, istio_ingresses(state), warnings)
