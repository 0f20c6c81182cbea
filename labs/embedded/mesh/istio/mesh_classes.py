"""The classes an Istio install provides: IngressClass `istio` (controller
`istio.io/ingress-controller`) and GatewayClass `istio` (controller `istio.io/gateway-controller`),
created at cluster start when absent (a learner's edits survive a restart)."""

from __future__ import annotations

import copy
import logging
from typing import Any

from ...apiserver.api import ObjectApi
from ...apiserver.errors import ApiError
from .gateway_api import CONTROLLER
from .ingress import INGRESS_CLASS, INGRESS_CONTROLLER

log = logging.getLogger(__name__)
Obj = dict[str, Any]
CLASSES: tuple[tuple[str, str, str, Obj], ...] = (
    ("networking.k8s.io", "v1", "ingressclasses",
     {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
      "metadata": {"name": INGRESS_CLASS}, "spec": {"controller": INGRESS_CONTROLLER}}),
    ("gateway.networking.k8s.io", "v1", "gatewayclasses",
     {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
      "metadata": {"name": "istio"},
      "spec": {"controllerName": CONTROLLER,
               "description": "The default Istio GatewayClass"}}),
)


def install_classes(api: ObjectApi) -> int:
    """Create the IngressClass and GatewayClass `istio` when absent; returns how many."""
    created = 0
    for group, ver, plural, obj in CLASSES:
        rt = api.registry.lookup(group, ver, plural)
        if rt is None or api.find(rt, "", obj["metadata"]["name"]) is not None:
            continue
        try:
            api.create(rt, "", copy.deepcopy(obj), validate=False, packaged=True)
        except ApiError as err:
            log.error("%s istio was not created: %s", obj["kind"], err.message)
            continue
        created += 1
    return created
