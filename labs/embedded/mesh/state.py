"""A snapshot of what the mesh control plane reads, with the lookups every builder needs.

The builders of Envoy configuration are pure functions of a `MeshState`, so they are tested
without a cluster and one snapshot serves every proxy in a pass. What the runtime writes on a
pod for them to read (its ports, its sidecar) is labs/embedded/workload.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar, cast

from ..workload import has_sidecar, is_gateway

Obj = dict[str, Any]
T = TypeVar("T")

TRUST_DOMAIN = "cluster.local"
ROOT_NAMESPACE = "istio-system"


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


def _default_mesh_config() -> Obj:
    """A fresh installation's mesh config (imported late: meshconfig reads the API server)."""
    from .meshconfig import default_mesh_config
    return default_mesh_config()


@dataclass
class MeshState:
    """Every object the control plane reads, grouped by kind (lists of API objects)."""

    namespaces: list[Obj] = field(default_factory=list)
    services: list[Obj] = field(default_factory=list)
    endpoints: list[Obj] = field(default_factory=list)
    pods: list[Obj] = field(default_factory=list)
    virtual_services: list[Obj] = field(default_factory=list)
    destination_rules: list[Obj] = field(default_factory=list)
    peer_authentications: list[Obj] = field(default_factory=list)
    service_entries: list[Obj] = field(default_factory=list)
    gateways: list[Obj] = field(default_factory=list)
    authorization_policies: list[Obj] = field(default_factory=list)
    request_authentications: list[Obj] = field(default_factory=list)
    telemetries: list[Obj] = field(default_factory=list)  # telemetry.istio.io Telemetry
    # Kubernetes Ingress and Gateway API objects (labs.embedded.mesh.ingress / gateway_api
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
    _derived: dict[Callable[[MeshState], object], object] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._pods_by_key = {(p["metadata"].get("namespace", ""), p["metadata"]["name"]): p
                             for p in self.pods}
        self._endpoints_by_key = {
            (e["metadata"].get("namespace", ""), e["metadata"]["name"]): e
            for e in self.endpoints}

    def derived(self, build: Callable[[MeshState], T]) -> T:
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


def _services_by_key(state: MeshState) -> dict[tuple[str | None, str], Obj]:
    """(namespace, name) -> Service, the first listed of each."""
    out: dict[tuple[str | None, str], Obj] = {}
    for svc in state.services:
        out.setdefault((svc["metadata"].get("namespace"), svc["metadata"]["name"]), svc)
    return out


@dataclass(frozen=True)
class ProxyFiles:
    """Where one Envoy reads its dynamic configuration (file-based xDS, watched directory).
    The paths are made once per object: every outbound cluster's TLS context names the SDS
    files, so a pass asks for them services x proxies times."""

    xds_dir: Path

    @cached_property
    def lds(self) -> Path:
        return self.xds_dir / "lds.yaml"

    @cached_property
    def cds(self) -> Path:
        return self.xds_dir / "cds.yaml"

    @cached_property
    def rds(self) -> Path:
        return self.xds_dir / "rds.yaml"

    @cached_property
    def cert_sds(self) -> Path:
        """The workload certificate and key (secret name `default`), written by the mesh CA."""
        return self.xds_dir / "sds" / "default.yaml"

    @cached_property
    def root_sds(self) -> Path:
        """The trusted mesh root (secret name `ROOTCA`), written by the mesh CA."""
        return self.xds_dir / "sds" / "rootca.yaml"


@dataclass
class EnvoyResources:
    """What the builders produce for one proxy; the writer turns each list into a file."""

    listeners: list[Obj] = field(default_factory=list)
    clusters: list[Obj] = field(default_factory=list)
    route_configs: list[Obj] = field(default_factory=list)
    # (object, problem) for the object's status: what the builder could not program, and why.
    warnings: list[tuple[Obj, str]] = field(default_factory=list)
