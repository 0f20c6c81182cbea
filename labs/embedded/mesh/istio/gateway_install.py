"""Install Istio's ingress gateway at cluster start, as `istioctl install` does.

The objects come from `labs/manifests/istio-ingressgateway.yaml` (Istio's gateway chart output):
each is created only when absent, so a learner's edits survive a daemon restart. The Service's
`status.loadBalancer.ingress` is set to 127.0.0.1 (there is no cloud load balancer: the gateway
itself listens on the Service's node ports on loopback), so `kubectl get svc` shows it as
EXTERNAL-IP and Istio's docs (`INGRESS_HOST`/`INGRESS_PORT`) work unchanged. The IngressClass
and GatewayClass `istio` are created too (labs.embedded.mesh.istio.mesh_classes).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ...apiserver.api import ObjectApi
from ...apiserver.errors import ApiError
from ..install import MANIFESTS, install_manifest
from .mesh_classes import install_classes

log = logging.getLogger(__name__)
Obj = dict[str, Any]
MANIFEST = MANIFESTS / "istio-ingressgateway.yaml"
GATEWAY_SERVICE = ("istio-system", "istio-ingressgateway")
LOAD_BALANCER_INGRESS = [{"ip": "127.0.0.1", "ipMode": "VIP"}]


def install_ingress_gateway(api: ObjectApi, path: Path = MANIFEST) -> int:
    """Create what is missing of the ingress gateway; returns how many objects were created."""
    created = install_manifest(api, path)
    publish_load_balancer(api)
    return created + install_classes(api)


def publish_load_balancer(api: ObjectApi, namespace: str = GATEWAY_SERVICE[0],
                          name: str = GATEWAY_SERVICE[1]) -> None:
    """Report a gateway Service's load balancer address (status subresource)."""
    rt = api.registry.lookup("", "v1", "services")
    assert rt is not None
    svc = api.find(rt, namespace, name)
    if svc is None or (svc.get("spec") or {}).get("type") != "LoadBalancer":
        return
    status = {"loadBalancer": {"ingress": LOAD_BALANCER_INGRESS}}
    if svc.get("status") == status:
        return
    try:
        api.update(rt, namespace, name, {**svc, "status": status}, subresource="status",
                   validate=False, packaged=True)
    except ApiError as err:
        log.warning("could not publish the address of %s/%s: %s", namespace, name, err.message)
