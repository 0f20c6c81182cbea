"""A snapshot of what the mesh control plane reads, with the lookups every builder needs.

The builders of Envoy configuration are pure functions of a `MeshState`, so they are tested
without a cluster and one snapshot serves every proxy in a pass.

Conventions shared with the runtime (who writes what):
- pod annotation `meshlab.dev/host-ports` {containerPort: hostPort}: the pod's public ports,
  listed in Endpoints (runtime);
- pod annotation `meshlab.dev/app-ports` {containerPort: port}: where the app really listens when
  a sidecar captures its traffic (runtime); the sidecar's inbound listener on the host port
  forwards there;
- pod annotation `meshlab.dev/proxy-ports` {"admin": port, "outbound": port}: the sidecar's Envoy
  admin and outbound HTTP-proxy ports (runtime).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Obj = dict[str, Any]

HOST_PORTS = "meshlab.dev/host-ports"
APP_PORTS = "meshlab.dev/app-ports"
PROXY_PORTS = "meshlab.dev/proxy-ports"
SIDECAR_CONTAINER = "istio-proxy"
TRUST_DOMAIN = "cluster.local"
ROOT_NAMESPACE = "istio-system"


def _annotation_json(pod: Obj, key: str) -> dict[str, int]:
    raw = (pod.get("metadata", {}).get("annotations") or {}).get(key)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}


def pod_dir_name(pod: Obj) -> str:
    """The folder of a pod under the runtime's pods directory (shared by runtime and mesh)."""
    meta = pod["metadata"]
    return f"{meta.get('namespace', '')}_{meta['name']}_{meta['uid']}"


def host_ports(pod: Obj) -> dict[str, int]:
    return _annotation_json(pod, HOST_PORTS)


def app_ports(pod: Obj) -> dict[str, int]:
    return _annotation_json(pod, APP_PORTS)


def proxy_ports(pod: Obj) -> dict[str, int]:
    return _annotation_json(pod, PROXY_PORTS)


def has_sidecar(pod: Obj) -> bool:
    return any(c.get("name") == SIDECAR_CONTAINER
               for c in pod.get("spec", {}).get("containers") or [])


def is_gateway(pod: Obj) -> bool:
    """An Istio gateway (ingress/egress): its `istio-proxy` runs `proxy router`, is the pod's
    only workload and captures no app traffic (Istio's node type `router`, not `sidecar`)."""
    return any(c.get("name") == SIDECAR_CONTAINER and "router" in (c.get("args") or [])
               for c in pod.get("spec", {}).get("containers") or [])


def service_account(pod: Obj) -> str:
    return pod.get("spec", {}).get("serviceAccountName") or "default"


def spiffe_id(namespace: str, service_account_name: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account_name}"


def pod_spiffe_id(pod: Obj) -> str:
    return spiffe_id(pod["metadata"].get("namespace", ""), service_account(pod))


def fqdn(service: Obj) -> str:
    meta = service["metadata"]
    return f"{meta['name']}.{meta.get('namespace', '')}.svc.{TRUST_DOMAIN}"


def workload_name(pod: Obj) -> str:
    """Istio's workload name: the Deployment for ReplicaSet-owned pods, else the pod name."""
    meta = pod["metadata"]
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == "ReplicaSet":
            template_hash = (meta.get("labels") or {}).get("pod-template-hash")
            name = ref.get("name", "")
            if template_hash and name.endswith(f"-{template_hash}"):
                return name[: -len(template_hash) - 1]
            return name
    return meta["name"]


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
    mesh_config: Obj = field(default_factory=dict)
    mesh_config_error: str | None = None

    def __post_init__(self) -> None:
        self._pods_by_key = {(p["metadata"].get("namespace", ""), p["metadata"]["name"]): p
                             for p in self.pods}
        self._endpoints_by_key = {
            (e["metadata"].get("namespace", ""), e["metadata"]["name"]): e
            for e in self.endpoints}

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
        for svc in self.services:
            meta = svc["metadata"]
            if meta["name"] == name and meta.get("namespace") == namespace:
                return svc
        return None

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


@dataclass(frozen=True)
class ProxyFiles:
    """Where one Envoy reads its dynamic configuration (file-based xDS, watched directory)."""

    xds_dir: Path

    @property
    def lds(self) -> Path:
        return self.xds_dir / "lds.yaml"

    @property
    def cds(self) -> Path:
        return self.xds_dir / "cds.yaml"

    @property
    def rds(self) -> Path:
        return self.xds_dir / "rds.yaml"

    @property
    def cert_sds(self) -> Path:
        """The workload certificate and key (secret name `default`), written by the mesh CA."""
        return self.xds_dir / "sds" / "default.yaml"

    @property
    def root_sds(self) -> Path:
        """The trusted mesh root (secret name `ROOTCA`), written by the mesh CA."""
        return self.xds_dir / "sds" / "rootca.yaml"


@dataclass
class EnvoyResources:
    """What the builders produce for one proxy; the writer turns each list into a file."""

    listeners: list[Obj] = field(default_factory=list)
    clusters: list[Obj] = field(default_factory=list)
    route_configs: list[Obj] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
