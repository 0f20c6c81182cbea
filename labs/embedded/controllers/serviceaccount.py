"""Per-namespace defaults: the `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap.

The real serviceaccounts-controller and root-ca-cert-publisher keep both present in every active
namespace, recreating them when deleted and resetting the ConfigMap when edited; pods name the
ServiceAccount (`spec.serviceAccountName` defaults to `default`) and mesh identities derive from it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.errors import ApiError
from labs.embedded.apiserver.resources import ResourceType
from labs.embedded.apiserver.store import Event

from .base import Controller

Obj = dict[str, Any]

DEFAULT_SERVICE_ACCOUNT = "default"
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
ROOT_CA_DESCRIPTION = (
    "Contains a CA bundle that can be used to verify the kube-apiserver when using internal "
    "endpoints such as the internal service IP or kubernetes.default.svc. No other usage is "
    "guaranteed across distributions of Kubernetes clusters.")


class ServiceAccountController(Controller[str]):
    """Ensures the defaults; the ConfigMap only when the daemon hands over a CA (`ca_pem`)."""

    name = "serviceaccount"

    def __init__(self, api: ObjectApi, ca_pem: str | None = None) -> None:
        super().__init__(api)
        self.ca_pem = ca_pem
        self.ns_rt = self.resource("", "namespaces")
        self.sa_rt = self.resource("", "serviceaccounts")
        self.cm_rt = self.resource("", "configmaps")

    def initial_keys(self) -> Iterable[str]:
        for ns in self.api.store.list(self.ns_rt.key):
            yield ns["metadata"]["name"]

    def keys_for(self, event: Event) -> Iterable[str]:
        meta = event.object["metadata"]
        if event.key == self.ns_rt.key and event.type != "DELETED":
            return [meta["name"]]
        if (event.key == self.sa_rt.key and meta["name"] == DEFAULT_SERVICE_ACCOUNT
                and event.type == "DELETED"):
            return [meta["namespace"]]
        if event.key == self.cm_rt.key and meta["name"] == ROOT_CA_CONFIGMAP:
            return [meta["namespace"]]
        return []

    def root_ca_configmap(self, namespace: str) -> Obj:
        return {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": ROOT_CA_CONFIGMAP, "namespace": namespace,
                             "annotations": {"kubernetes.io/description": ROOT_CA_DESCRIPTION}},
                "data": {"ca.crt": self.ca_pem}}

    def reconcile(self, key: str) -> float | None:
        namespace = key
        ns = self.api.store.get(self.ns_rt.key, "", namespace)
        if ns is None or ns["metadata"].get("deletionTimestamp"):
            return None
        if self.api.find(self.sa_rt, namespace, DEFAULT_SERVICE_ACCOUNT) is None:
            self._create(self.sa_rt, namespace, {
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": DEFAULT_SERVICE_ACCOUNT, "namespace": namespace}})
        if self.ca_pem is None:
            return None
        current = self.api.find(self.cm_rt, namespace, ROOT_CA_CONFIGMAP)
        wanted = self.root_ca_configmap(namespace)
        if current is None:
            self._create(self.cm_rt, namespace, wanted)
        elif current.get("data") != wanted["data"] or current.get("binaryData"):
            current["data"] = wanted["data"]
            current.pop("binaryData", None)
            self.api.update(self.cm_rt, namespace, ROOT_CA_CONFIGMAP, current)
        return None

    def _create(self, rt: ResourceType, namespace: str, obj: Obj) -> None:
        try:
            self.api.create(rt, namespace, obj)
        except ApiError as exc:
            if exc.code not in (403, 409):  # exists already / namespace began terminating
                raise
