"""Envoy building blocks every mesh's proxy configuration is made of: loopback addresses, the
HTTP connection manager and its router, routes read from the proxy's RDS file, TLS detection
on a listener, and a STATIC cluster to a loopback port.

The builders return fresh dicts (no shared sub-objects), so a YAML dump of the result has no
anchors/aliases and the files stay readable.
"""

from __future__ import annotations

from pathlib import Path

from .envoy import ADDRESS
from .kube_state import Obj
from .proxyfiles import ProxyFiles
from .tls import file_config_source

HCM = "envoy.filters.network.http_connection_manager"
HCM_TYPE = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
            ".HttpConnectionManager")
TLS_INSPECTOR_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector")


def router() -> Obj:
    return {"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


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


def tls_inspector() -> Obj:
    """The listener filter that tells TLS from plaintext, for `transport_protocol` matches."""
    return {"name": "envoy.filters.listener.tls_inspector",
            "typed_config": {"@type": TLS_INSPECTOR_TYPE}}


def static_cluster(name: str, port: int, connect_timeout: str = "0.250s") -> Obj:
    """A cluster of one loopback port (the app behind its proxy, the admin's stats)."""
    return {"name": name, "type": "STATIC", "connect_timeout": connect_timeout,
            "load_assignment": {"cluster_name": name, "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": socket_address(port)}}]}]}}


def http_listener(name: str, port: int, routes: list[Obj]) -> Obj:
    """A plaintext HTTP listener on a loopback port with its routes inline (any host)."""
    route_config = {"virtual_hosts": [{"name": "backend", "domains": ["*"], "routes": routes}]}
    hcm = http_connection_manager(name, {"route_config": route_config}, [router()])
    return {"name": name, "address": socket_address(port), "filter_chains": [{"filters": [hcm]}]}


FILE_LOG = "envoy.access_loggers.file"
FILE_LOG_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"


def json_file_access_log(path: Path, fields: Obj) -> Obj:
    """One JSON object per request appended to `path` (a proxy's telemetry log, which the
    daemon's telemetry server tails); `fields` maps names to Envoy command operators."""
    return {"name": FILE_LOG, "typed_config": {
        "@type": FILE_LOG_TYPE, "path": str(path), "log_format": {"json_format": fields}}}
