"""The listeners of a sidecar: the outbound HTTP proxy its app calls through, one inbound listener
per app port (mTLS as PeerAuthentication says), and the health listener of the readiness probe.

There is no iptables: the app reaches the outbound listener through `http_proxy`, and the pod's
public (host) ports are the inbound listeners, which forward to where the app really listens
(`meshlab.dev/app-ports`). Ports the runtime has not allocated yet produce no listener; the
control plane writes the configuration again once they are known.
"""

from __future__ import annotations

import copy

from ....workload import app_ports, host_ports, proxy_ports
from ...kube_state import Obj
from ...listener_parts import (
    http_connection_manager,
    rds,
    router,
    socket_address,
    tls_inspector,
)
from ...proxyfiles import ProxyFiles
from ...tls import mutual_downstream
from ..state import MeshState
from .observability import sidecar_access_logs, tracing_config
from .peer_authentication import PERMISSIVE, STRICT, mtls_mode
from .telemetry_api import INBOUND, OUTBOUND, Side, telemetry_settings

OUTBOUND_ROUTE_CONFIG = "outbound"
HEALTH_PORT = "15021"
HEALTH_PATH = "/healthz/ready"
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
# Istio's protocol selection (pkg/config/protocol/instance.go): a port named `grpc`, `grpc-*`,
# `http2`, `http2-*` (or with that `appProtocol`, or a ServiceEntry port of that `protocol`)
# speaks HTTP/2 to its upstream; `grpc-web` is HTTP/1.1.
HTTP2_PROTOCOLS = ("grpc", "http2")


# The builders return fresh dicts (no shared sub-objects), so a YAML dump of the result has no
# anchors/aliases and the files stay readable. The shared parts: labs/embedded/mesh/listener_parts.
def fault() -> Obj:
    """The fault filter with no defaults: the routes configure it (VirtualService `fault`)."""
    return {"name": "envoy.filters.http.fault", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}}


def inbound_cluster_name(container_port: int | str) -> str:
    return f"inbound|{container_port}||"


def is_http2_port(port: Obj) -> bool:
    """Whether a Service or ServiceEntry `ports` entry is GRPC/HTTP2 by Istio's rules."""
    explicit = str(port.get("appProtocol") or port.get("protocol") or "").lower()
    if explicit and explicit not in ("tcp", "udp", "sctp"):  # a Service's L4 `protocol`
        return explicit in HTTP2_PROTOCOLS or explicit == "kubernetes.io/h2c"
    name = str(port.get("name") or "").lower()
    return name.split("-", 1)[0] in HTTP2_PROTOCOLS and not name.startswith("grpc-web")


def use_http2(cluster: Obj) -> None:
    """Make `cluster` speak HTTP/2 (prior knowledge, as Istio's GRPC/HTTP2 clusters do), keeping
    any common options (idle timeout...) a traffic policy set."""
    options = cluster.setdefault("typed_extension_protocol_options", {}).setdefault(
        HTTP_OPTIONS, {"@type": f"type.googleapis.com/{HTTP_OPTIONS}"})
    options["explicit_http_config"] = {"http2_protocol_options": {}}


def _http2_container_ports(state: MeshState, pod: Obj) -> set[int]:
    """The pod's container ports that a GRPC/HTTP2 port of a Service selecting it targets
    (Istio takes an inbound port's protocol from the Service port)."""
    meta = pod["metadata"]
    labels = meta.get("labels") or {}
    named = {p.get("name"): p.get("containerPort") for c in pod["spec"].get("containers") or []
             for p in c.get("ports") or [] if p.get("name")}
    out = set()
    for svc in state.services:
        spec = svc.get("spec") or {}
        selector = spec.get("selector") or {}
        if svc["metadata"].get("namespace") != meta.get("namespace") or not selector or any(
                labels.get(k) != v for k, v in selector.items()):
            continue
        for port in spec.get("ports") or []:
            target = port.get("targetPort", port.get("port"))
            number = named.get(target) if isinstance(target, str) else target
            if number is not None and is_http2_port(port):
                out.add(int(number))
    return out


def _inbound_ports(pod: Obj) -> list[tuple[int, int, int]]:
    """(container port, host port, app port) of each app port the sidecar fronts."""
    public, app = host_ports(pod), app_ports(pod)
    return sorted((int(port), public[port], app[port]) for port in app
                  if port in public and port != HEALTH_PORT)


def build_inbound_clusters(state: MeshState, pod: Obj) -> list[Obj]:
    """One STATIC cluster `inbound|<containerPort>||` per app port: the app itself on loopback,
    over HTTP/2 for a GRPC/HTTP2 service port (a gRPC server speaks nothing else)."""
    http2 = _http2_container_ports(state, pod)
    clusters = []
    for container_port, _, app_port in _inbound_ports(pod):
        cluster = {
            "name": inbound_cluster_name(container_port),
            "type": "STATIC",
            "connect_timeout": "10s",
            "load_assignment": {"cluster_name": inbound_cluster_name(container_port),
                                "endpoints": [{"lb_endpoints": [
                                    {"endpoint": {"address": socket_address(app_port)}}]}]},
        }
        if container_port in http2:
            use_http2(cluster)
        clusters.append(cluster)
    return clusters


def _outbound_listener(pod: Obj, files: ProxyFiles, port: int, side: Side,
                       collector: bool) -> Obj:
    """The HTTP proxy the app's `http_proxy` points at: absolute-form requests routed by authority
    through the `outbound` route configuration (VirtualServices, DestinationRules)."""
    hcm = http_connection_manager(
        "outbound", rds(OUTBOUND_ROUTE_CONFIG, files), [fault(), router()],
        http_protocol_options={"allow_absolute_url": True},
        generate_request_id=True, normalize_path=True,
        access_log=sidecar_access_logs(files, pod, OUTBOUND, side),
        **tracing_config(side, collector))
    return {"name": "outbound", "address": socket_address(port),
            "traffic_direction": "OUTBOUND", "filter_chains": [{"filters": [hcm]}]}


def _inbound_hcm(pod: Obj, files: ProxyFiles, container_port: int, http_filters: list[Obj],
                 side: Side, collector: bool) -> Obj:
    cluster = inbound_cluster_name(container_port)
    route_config = {"name": cluster, "virtual_hosts": [{
        "name": f"inbound|http|{container_port}", "domains": ["*"],
        "routes": [{"name": "default", "match": {"prefix": "/"},
                    "route": {"cluster": cluster, "timeout": "0s"}}]}]}
    return http_connection_manager(
        f"inbound_{container_port}", {"route_config": route_config}, [*http_filters, router()],
        forward_client_cert_details="SANITIZE_SET",
        set_current_client_cert_details={"uri": True},
        generate_request_id=True, normalize_path=True,
        access_log=sidecar_access_logs(files, pod, INBOUND, side),
        **tracing_config(side, collector))


def _inbound_listener(state: MeshState, pod: Obj, files: ProxyFiles, ports: tuple[int, int, int],
                      http_filters: list[Obj], side: Side, collector: bool) -> Obj:
    """The listener on a public port: TLS required (STRICT), detected (PERMISSIVE) or absent."""
    container_port, public_port, _ = ports
    mode = mtls_mode(state, pod, container_port)

    def chain(name: str, **extra: Obj) -> Obj:
        hcm = _inbound_hcm(pod, files, container_port, copy.deepcopy(http_filters), side,
                           collector)
        return {"name": name, "filters": [hcm], **extra}

    listener: Obj = {"name": inbound_cluster_name(container_port),
                     "address": socket_address(public_port), "traffic_direction": "INBOUND"}
    if mode == STRICT:
        listener["filter_chains"] = [
            chain("mtls", transport_socket=mutual_downstream(files))]
    elif mode == PERMISSIVE:
        listener["listener_filters"] = [tls_inspector()]
        listener["filter_chains"] = [
            chain("mtls", transport_socket=mutual_downstream(files),
                  filter_chain_match={"transport_protocol": "tls"}),
            chain("plaintext", filter_chain_match={"transport_protocol": "raw_buffer"})]
    else:  # DISABLE
        listener["filter_chains"] = [chain("plaintext")]
    return listener


def _health_listener(port: int) -> Obj:
    """What the injected readinessProbe (`httpGet /healthz/ready :15021`) reaches: it exists only
    once the control plane wrote this proxy's listeners, so the pod turns Ready after that."""
    route_config = {"name": "health", "virtual_hosts": [{
        "name": "health", "domains": ["*"],
        "routes": [{"match": {"path": HEALTH_PATH}, "direct_response": {"status": 200}}]}]}
    hcm = http_connection_manager("health", {"route_config": route_config}, [router()])
    return {"name": "health", "address": socket_address(port),
            "filter_chains": [{"filters": [hcm]}]}


def build_sidecar_listeners(state: MeshState, pod: Obj, files: ProxyFiles, telemetry_port: int,
                            inbound_http_filters: list[Obj] | None = None) -> list[Obj]:
    """Every listener of `pod`'s sidecar. `inbound_http_filters` run before the router on each
    inbound request (authorization, JWT); `telemetry_port` 0 turns tracing off (no collector).
    Access logs and trace sampling follow the mesh config and Telemetry resources."""
    collector = telemetry_port > 0
    settings = telemetry_settings(state, pod)
    listeners = []
    outbound_port = proxy_ports(pod).get("outbound")
    if outbound_port:
        listeners.append(_outbound_listener(pod, files, outbound_port,
                                            settings.side(OUTBOUND), collector))
    listeners += [_inbound_listener(state, pod, files, ports, list(inbound_http_filters or []),
                                    settings.side(INBOUND), collector)
                  for ports in _inbound_ports(pod)]
    health_port = host_ports(pod).get(HEALTH_PORT)
    if health_port:
        listeners.append(_health_listener(health_port))
    return listeners
