"""The embedded cluster's controllers: what kube-controller-manager does, for the kinds the course
uses. The daemon calls `bootstrap` once, then runs every controller of `all_controllers` as a task.
"""

from __future__ import annotations

from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.errors import ApiError

from .base import Controller
from .deployment import DeploymentController
from .endpoints import EndpointsController
from .eventttl import EventTTLController
from .garbagecollector import GarbageCollector
from .namespace import NamespaceController
from .replicaset import ReplicaSetController
from .serviceaccount import ServiceAccountController

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")

__all__ = ["SYSTEM_NAMESPACES", "Controller", "all_controllers", "bootstrap"]


def all_controllers(api: ObjectApi, ca_pem: str | None = None) -> list[Controller]:
    """One of each controller. `ca_pem` is published as ConfigMap `kube-root-ca.crt` in every
    namespace; without it that ConfigMap is not created (there is no CA to publish)."""
    return [
        DeploymentController(api),
        ReplicaSetController(api),
        EndpointsController(api),
        NamespaceController(api),
        ServiceAccountController(api, ca_pem),
        GarbageCollector(api),
        EventTTLController(api),
    ]


async def bootstrap(api: ObjectApi) -> None:
    """Create the namespaces every cluster starts with."""
    rt = api.registry.lookup("", "v1", "namespaces")
    assert rt is not None
    for name in SYSTEM_NAMESPACES:
        if api.find(rt, "", name) is None:
            try:
                api.create(rt, "", {"apiVersion": "v1", "kind": "Namespace",
                                    "metadata": {"name": name}}, validate=False, packaged=True)
            except ApiError as exc:
                if exc.code != 409:
                    raise
