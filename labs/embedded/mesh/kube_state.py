"""The Kubernetes objects every mesh's control plane reads (namespaces, services, endpoints,
pods), with the lookups every builder needs, and the names identities are made of.

Each mesh extends `KubeState` with its own kinds (istio/state.py `MeshState`). Builders are pure
functions of such a snapshot, so they are tested without a cluster and one snapshot serves
every proxy in a pass. What the runtime writes on a pod for them to read (its ports, its
sidecar) is labs/embedded/workload.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar, cast

from ..workload import has_sidecar, is_gateway

Obj = dict[str, Any]
T = TypeVar("T")

TRUST_DOMAIN = "cluster.local"


def service_account(pod: Obj) -> str:
    return pod.get("spec", {}).get("serviceAccountName") or "default"


def spiffe_id(namespace: str, service_account_name: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account_name}"


def pod_spiffe_id(pod: Obj) -> str:
    return spiffe_id(pod["metadata"].get("namespace", ""), service_account(pod))


def fqdn(service: Obj) -> str:
    meta = service["metadata"]
    return f"{meta['name']}.{meta.get('namespace', '')}.svc.{TRUST_DOMAIN}"


@dataclass(frozen=True)
class Endpoint:
    """One ready address of a service port, as a proxy dials it."""

    address: str
    port: int  # the host port (sidecar inbound port for meshed pods)
    pod: Obj | None  # None for endpoints without a pod (selector-less services)

    @property
    def labels(self) -> dict[str, str]:
        return (self.pod or {}).get("metadata", {}).get("labels") or {}

    @property
    def meshed(self) -> bool:
        return self.pod is not None and has_sidecar(self.pod) and not is_gateway(self.pod)

    @property
    def spiffe_id(self) -> str | None:
        return pod_spiffe_id(self.pod) if self.pod is not None else None


@dataclass
class KubeState:
    """The Kubernetes objects a mesh control plane reads, grouped by kind (lists of API objects)."""

    namespaces: list[Obj] = field(default_factory=list)
    services: list[Obj] = field(default_factory=list)
    endpoints: list[Obj] = field(default_factory=list)
    pods: list[Obj] = field(default_factory=list)
    _derived: dict[Callable[[Any], object], object] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._pods_by_key = {(p["metadata"].get("namespace", ""), p["metadata"]["name"]): p
                             for p in self.pods}
        self._endpoints_by_key = {
            (e["metadata"].get("namespace", ""), e["metadata"]["name"]): e
            for e in self.endpoints}

    def derived(self, build: Callable[[Self], T]) -> T:
        """`build(self)`, computed at its first use and kept with this snapshot: an index every
        proxy of a pass shares (istiod's push context), where a scan per proxy and host would
        make a pass grow as services³. The lists must not change after a lookup is built."""
        if build not in self._derived:
            self._derived[build] = build(self)
        return cast(T, self._derived[build])

    def pod(self, namespace: str, name: str) -> Obj | None:
        return self._pods_by_key.get((namespace, name))

    def service_for_host(self, host: str, from_namespace: str) -> Obj | None:
        """The Service a host names, resolved like DNS search paths in `from_namespace`:
        `reviews`, `reviews.ns`, `reviews.ns.svc`, `reviews.ns.svc.cluster.local`."""
        host = host.rstrip(".").lower()
        parts = host.split(".")
        if len(parts) == 1:
            name, namespace = parts[0], from_namespace
        elif len(parts) == 2 or (len(parts) == 3 and parts[2] == "svc") or (
                len(parts) == 5 and parts[2:] == ["svc", *TRUST_DOMAIN.split(".")]):
            name, namespace = parts[0], parts[1]
        else:
            return None
        return self.derived(_services_by_key).get((namespace, name))

    def endpoints_for(self, service: Obj, port: Obj) -> list[Endpoint]:
        """Ready endpoints of one service port (a `spec.ports` entry), from Endpoints objects."""
        meta = service["metadata"]
        ep = self._endpoints_by_key.get((meta.get("namespace", ""), meta["name"]))
        if ep is None:
            return []
        found = []
        wanted_name = port.get("name")
        for subset in ep.get("subsets") or []:
            ports = subset.get("ports") or []
            match = next((p for p in ports if p.get("name") == wanted_name), None) if (
                wanted_name) else (ports[0] if len(ports) == 1 else None)
            if match is None:
                continue
            for address in subset.get("addresses") or []:
                ref = address.get("targetRef") or {}
                pod = self.pod(ref.get("namespace", ""), ref.get("name", "")) if (
                    ref.get("kind") == "Pod") else None
                found.append(Endpoint(address.get("ip", "127.0.0.1"), int(match["port"]), pod))
        return found

    def sidecar_pods(self) -> list[Obj]:
        return [p for p in self.pods if has_sidecar(p) and not is_gateway(p)
                and not p["metadata"].get("deletionTimestamp")]

    def gateway_pods(self) -> list[Obj]:
        return [p for p in self.pods if is_gateway(p)
                and not p["metadata"].get("deletionTimestamp")]


def _services_by_key(state: KubeState) -> dict[tuple[str | None, str], Obj]:
    """(namespace, name) -> Service, the first listed of each."""
    out: dict[tuple[str | None, str], Obj] = {}
    for svc in state.services:
        out.setdefault((svc["metadata"].get("namespace"), svc["metadata"]["name"]), svc)
    return out


def fingerprint(obj: Obj) -> str:
    """What of an object can change a proxy's configuration: not its status (pods report
    probe results all the time) nor its resourceVersion or managedFields."""
    meta = obj.get("metadata", {})
    relevant = {k: meta.get(k) for k in ("labels", "annotations", "deletionTimestamp",
                                         "generation")}
    relevant.update({k: obj.get(k) for k in ("spec", "subsets", "data")})
    return json.dumps(relevant, sort_keys=True)
