"""The hosts a proxy can send traffic to: Kubernetes Services and ServiceEntry hosts.

Both become a `MeshHost` (hostname, ports, endpoints per port, the domains that name it), so the
cluster and route builders treat them alike, as Istio's service registry does. Host names in
VirtualServices and DestinationRules resolve like Istio's: a single-label short name is expanded
in the namespace of the rule; anything with a dot is taken literally; `*.suffix` wildcards match.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, field

from ...kube_state import TRUST_DOMAIN, Obj, fqdn
from ..state import MeshState

TLS_MODE_LABEL = "security.istio.io/tlsMode"


@dataclass(frozen=True)
class Backend:
    """One endpoint of a host port as the proxy dials it."""

    address: str
    port: int
    labels: dict[str, str] = field(default_factory=dict, hash=False)
    spiffe_id: str | None = None  # set when a sidecar (Istio mTLS) serves this endpoint

    @property
    def istio_mtls(self) -> bool:
        return self.spiffe_id is not None or self.labels.get(TLS_MODE_LABEL) == "istio"


@dataclass
class MeshHost:
    """A Service or a ServiceEntry host, with what every builder needs about it."""

    hostname: str
    namespace: str
    source: Obj  # the Service or ServiceEntry
    ports: list[int]
    backends: dict[int, list[Backend]]
    addresses: list[str] = field(default_factory=list)  # clusterIP / ServiceEntry addresses
    mesh_external: bool = False
    short_name: str | None = None  # set when `name` alone may name this host for the proxy

    @property
    def is_service(self) -> bool:
        return self.source.get("kind", "Service") == "Service"

    def domains(self, port: int) -> list[str]:
        """Istio's virtual host domains for one port, plus the bare name on port 80."""
        names = [self.hostname]
        if self.is_service:
            name, namespace = self.source["metadata"]["name"], self.namespace
            names += [f"{name}.{namespace}.svc", f"{name}.{namespace}"]
            if self.short_name:
                names.append(self.short_name)
        names += self.addresses
        out = [f"{n}:{port}" for n in names]
        if port == 80:
            out += names
        return out


def cluster_name(port: int, subset: str | None, hostname: str) -> str:
    """Istio's outbound cluster name, e.g. `outbound|9080|v1|reviews.default.svc.cluster.local`."""
    return f"outbound|{port}|{subset or ''}|{hostname}"


def expand_host(host: str, namespace: str) -> str:
    """Istio's ResolveShortnameToFQDN: only a single-label name gets the namespace appended."""
    host = host.lower().rstrip(".")
    # without a dot only an IPv6 address can parse, and parsing every name is slow
    if host == "*" or "." in host or (":" in host and _is_ip(host)):
        return host
    return f"{host}.{namespace}.svc.{TRUST_DOMAIN}"


def is_wildcard(pattern: str) -> bool:
    """`*` or `*.suffix`: a rule host that can cover other names than itself."""
    return pattern == "*" or pattern.startswith("*.")


def host_matches(pattern: str, hostname: str) -> bool:
    """Does a (possibly wildcard) rule host cover a concrete hostname?"""
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return hostname.endswith(pattern[1:])
    return pattern == hostname


def specificity(pattern: str) -> tuple[int, int]:
    """Sort key: exact hosts before wildcards, longer wildcards before shorter ones."""
    return (0 if "*" in pattern else 1, len(pattern))


def visible_to(obj: Obj, namespace: str) -> bool:
    """Istio `exportTo`: absent = everywhere, `.` = own namespace, `*` = all, `~` = none."""
    export = (obj.get("spec") or {}).get("exportTo") or ["*"]
    own = obj["metadata"].get("namespace", "")
    for entry in export:
        if entry == "*" or entry == namespace or (entry == "." and own == namespace):
            return True
    return False


def creation_order(obj: Obj) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return (meta.get("creationTimestamp") or "", meta.get("namespace", ""), meta["name"])


def is_loopback(address: str) -> bool:
    return address == "localhost" or (_is_ip(address) and ipaddress.ip_address(address).is_loopback)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def service_hosts(state: MeshState, proxy_namespace: str | None) -> list[MeshHost]:
    """Every Service as a host. Short names are those of the proxy's namespace; the node
    forwarder serves every namespace, so it takes a short name when it is unambiguous (or the
    service lives in `default`)."""
    counts = Counter(s["metadata"]["name"] for s in state.services)
    in_default = {s["metadata"]["name"] for s in state.services
                  if s["metadata"].get("namespace") == "default"}
    out = []
    for svc in sorted(state.services, key=lambda s: (s["metadata"].get("namespace", ""),
                                                     s["metadata"]["name"])):
        meta, spec = svc["metadata"], svc.get("spec") or {}
        namespace = meta.get("namespace", "")
        if proxy_namespace is not None:
            short = namespace == proxy_namespace
        else:
            short = namespace == "default" or (
                counts[meta["name"]] == 1 and meta["name"] not in in_default)
        backends = {}
        for port in spec.get("ports") or []:
            backends[int(port["port"])] = [
                Backend(ep.address, ep.port, dict(ep.labels),
                        ep.spiffe_id if ep.meshed else None)
                for ep in state.endpoints_for(svc, port)]
        cluster_ip = spec.get("clusterIP")
        out.append(MeshHost(
            hostname=fqdn(svc), namespace=namespace, source={"kind": "Service", **svc},
            ports=list(backends), backends=backends,
            addresses=[cluster_ip] if cluster_ip and cluster_ip != "None" else [],
            short_name=meta["name"] if short else None))
    return out


def service_entry_hosts(state: MeshState, proxy_namespace: str, taken: set[str],
                        warn: list[tuple[Obj, str]]) -> list[MeshHost]:
    """ServiceEntry hosts visible to the proxy. Only loopback endpoints can be dialled here;
    the others are left out with a warning, so traffic to them fails (503) instead of leaving
    the machine."""
    out = []
    for entry in sorted(state.service_entries, key=creation_order):
        if not visible_to(entry, proxy_namespace):
            continue
        spec = entry.get("spec") or {}
        namespace = entry["metadata"].get("namespace", "")
        for host in spec.get("hosts") or []:
            hostname = str(host).lower()
            if hostname in taken:
                warn.append((entry, f"host {hostname} is already defined by a Service or an "
                                    f"older ServiceEntry; this entry is ignored for it"))
                continue
            taken.add(hostname)
            backends = {int(p["number"]): _entry_backends(entry, hostname, p, warn)
                        for p in spec.get("ports") or []}
            out.append(MeshHost(
                hostname=hostname, namespace=namespace, source={"kind": "ServiceEntry", **entry},
                ports=list(backends), backends=backends,
                addresses=[a for a in spec.get("addresses") or [] if "/" not in a],
                mesh_external=spec.get("location", "MESH_EXTERNAL") != "MESH_INTERNAL"))
    return out


def _entry_backends(entry: Obj, hostname: str, port: Obj,
                    warn: list[tuple[Obj, str]]) -> list[Backend]:
    spec = entry.get("spec") or {}
    resolution = spec.get("resolution", "NONE")
    number = int(port["number"])
    target = int(port.get("targetPort") or number)
    if resolution == "NONE":
        warn.append((entry, f"resolution NONE (pass through to the address the caller dialled) "
                            f"is not emulated; requests to {hostname}:{number} get 503"))
        return []
    endpoints = spec.get("endpoints") or []
    if not endpoints and resolution == "DNS":
        endpoints = [{"address": hostname}]
    out = []
    for ep in endpoints:
        address = str(ep.get("address", ""))
        if not is_loopback(address):
            warn.append((entry, f"endpoint {address} is not a loopback address; the embedded "
                                f"mesh never dials off this machine, so it is left out"))
            continue
        ep_port = (ep.get("ports") or {}).get(port.get("name", ""), target)
        out.append(Backend("127.0.0.1" if address == "localhost" else address, int(ep_port),
                           dict(ep.get("labels") or {})))
    return out


def sidecar_hosts(state: MeshState, namespace: str, warn: list[tuple[Obj, str]]) -> list[MeshHost]:
    """What a sidecar in `namespace` can reach: every Service, then the visible ServiceEntries."""
    hosts = service_hosts(state, namespace)
    return hosts + service_entry_hosts(state, namespace, {h.hostname for h in hosts}, warn)
