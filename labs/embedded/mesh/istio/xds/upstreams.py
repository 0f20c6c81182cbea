"""Where a proxy sends its own calls (ext-authz checks, JWKS fetches): a Service of the mesh, by
its outbound cluster, or a loopback host:port, by a cluster made for it.

Istio resolves an extension provider's `service` in its service registry (`[<namespace>/]<host>`)
and uses that host's outbound cluster `outbound|<port>||<fqdn>`; the embedded mesh does the same
for Services, and also accepts `127.0.0.1`, `::1` or `localhost` (nothing off the machine).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...kube_state import Obj, fqdn
from ..state import MeshState
from .hosts import cluster_name, is_loopback

CONNECT_TIMEOUT = "10s"
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


class UpstreamError(ValueError):
    """The host:port names nothing the proxy can reach; the message says what to write."""


@dataclass(frozen=True)
class Upstream:
    cluster: str  # the Envoy cluster to call through
    hostname: str  # the host as the caller names it (the URI's authority)
    clusters: list[Obj] = field(default_factory=list)  # clusters to add to the proxy


def loopback_cluster(name: str, host: str, port: int, *, http2: bool = False) -> Obj:
    address = "127.0.0.1" if host == "localhost" else host.strip("[]")
    cluster: Obj = {
        "name": name, "type": "STATIC", "connect_timeout": CONNECT_TIMEOUT,
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": address,
                                                          "port_value": port}}}}]}]}}
    if http2:
        cluster["typed_extension_protocol_options"] = {HTTP_OPTIONS: {
            "@type": f"type.googleapis.com/{HTTP_OPTIONS}",
            "explicit_http_config": {"http2_protocol_options": {}}}}
    return cluster


def resolve_upstream(state: MeshState, namespace: str, service: str, port: int, *,
                     http2: bool = False) -> Upstream:
    """The cluster for `service` (`[<namespace>/]<host>`, or a loopback host) on `port`, seen
    from a proxy in `namespace`. `http2` asks for an HTTP/2 cluster (gRPC); for a Service that
    means a cluster of its own, since its outbound cluster speaks what the app speaks."""
    if not 1 <= port <= 65535:
        raise UpstreamError(f"port {port} is not in 1-65535")
    if "/" in service:
        namespace, _, host = service.partition("/")
    else:
        host = service
    host = host.strip().rstrip(".").lower()
    if is_loopback(host.strip("[]")):
        name = cluster_name(port, None, host)
        return Upstream(name, host, [loopback_cluster(name, host, port, http2=http2)])
    svc = state.service_for_host(host, namespace)
    if svc is None:
        raise UpstreamError(
            f"no Service {host!r} in namespace {namespace!r} (write <namespace>/<host> or the "
            f"Service's FQDN, e.g. ext-authz.foo.svc.cluster.local, or a loopback address such "
            f"as 127.0.0.1)")
    ports = [int(p.get("port", 0)) for p in (svc.get("spec") or {}).get("ports") or []]
    hostname = fqdn(svc)
    if port not in ports:
        raise UpstreamError(f"Service {hostname} has no port {port} (its ports: "
                            f"{', '.join(map(str, ports)) or 'none'})")
    if not http2:
        return Upstream(cluster_name(port, None, hostname), hostname)
    return Upstream(*_http2_service_cluster(state, svc, port, hostname))


def _http2_service_cluster(state: MeshState, svc: Obj, port: int, hostname: str
                           ) -> tuple[str, str, list[Obj]]:
    """A plaintext HTTP/2 cluster to the Service's ready endpoints on `port`."""
    spec_port = next(p for p in svc["spec"]["ports"] if int(p.get("port", 0)) == port)
    name = f"outbound|{port}|grpc|{hostname}"
    endpoints = [{"endpoint": {"address": {"socket_address": {
        "address": e.address, "port_value": e.port}}}}
        for e in state.endpoints_for(svc, spec_port)]
    cluster = loopback_cluster(name, "127.0.0.1", port, http2=True)
    cluster["load_assignment"]["endpoints"] = [{"lb_endpoints": endpoints}] if endpoints else []
    return name, hostname, [cluster]
