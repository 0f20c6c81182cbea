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
from ...proxyfiles import ProxyFiles
from ...tls import file_config_source, istio_mutual_downstream
from ..state import MeshState
from .observability import sidecar_access_logs, tracing_config
from .peer_authentication import PERMISSIVE, STRICT, mtls_mode
from .telemetry_api import INBOUND, OUTBOUND, Side, telemetry_settings

ADDRESS = "127.0.0.1"
HCM = "envoy.filters.network.http_connection_manager"
HCM_TYPE = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
            ".HttpConnectionManager")
TLS_INSPECTOR_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector")
OUTBOUND_ROUTE_CONFIG = "outbound"
HEALTH_PORT = "15021"
HEALTH_PATH = "/healthz/ready"


# The builders return fresh dicts (no shared sub-objects), so a YAML dump of the result has no
# anchors/aliases and the files stay readable.
def router() -> Obj:
    return {"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def fault() -> Obj:
    """The fault filter with no defaults: the routes configure it (VirtualService `fault`)."""
    return {"name": "envoy.filters.http.fault", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}}


def socket_address(port: int) -> Obj:
    return {"socket_address": {"address": ADDRESS, "port_value": port}}


def http_connection_manager(stat_prefix: str, routing: Obj, http_filters: list[Obj],
                            **extra: object) -> Obj:
    """An HCM network filter; `routing` is `{"rds": ...}` or `{"route_config": ...}`."""
    return {"name": HCM, "typed_config": {
        "@type": HCM_TYPE, "stat_prefix": stat_prefix, "codec_type": "AUTO",
        **routing, "http_filters": http_filters, **extra}}


def rds(route_config_name: str, files: ProxyFiles) -> Obj:
    """Routes read from the proxy's RDS file, so a route change reaches kept-alive connections."""
    return {"rds": {"route_config_name": route_config_name,
                    "config_source": file_config_source(files.rds)}}


def inbound_cluster_name(container_port: int | str) -> str:
    return f"inbound|{container_port}||"


def _inbound_ports(pod: Obj) -> list[tuple[int, int, int]]:
    """(container port, host port, app port) of each app port the sidecar fronts."""
    public, app = host_ports(pod), app_ports(pod)
    return sorted((int(port), public[port], app[port]) for port in app
                  if port in public and port != HEALTH_PORT)


def build_inbound_clusters(state: MeshState, pod: Obj) -> list[Obj]:
    """One STATIC cluster `inbound|<containerPort>||` per app port: the app itself on loopback."""
    return [{
        "name": inbound_cluster_name(container_port),
        "type": "STATIC",
        "connect_timeout": "10s",
        "load_assignment": {"cluster_name": inbound_cluster_name(container_port), "endpoints": [
            {"lb_endpoints": [{"endpoint": {"address": socket_address(app_port)}}]}]},
    } for container_port, _, app_port in _inbound_ports(pod)]


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
            chain("mtls", transport_socket=istio_mutual_downstream(files))]
    elif mode == PERMISSIVE:
        listener["listener_filters"] = [{"name": "envoy.filters.listener.tls_inspector",
                                         "typed_config": {"@type": TLS_INSPECTOR_TYPE}}]
        listener["filter_chains"] = [
            chain("mtls", transport_socket=istio_mutual_downstream(files),
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
