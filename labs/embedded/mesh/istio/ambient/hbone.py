"""HBONE, the tunnel of Istio's ambient mode, as Envoy resources.

Upstream (istio.io `docs/ambient/architecture/hbone`): "HTTP CONNECT is used to establish a
tunnel connection, mTLS is used to secure and encrypt that connection, and HTTP/2 is used to
multiplex application connection streams"; proxies that speak it listen on port 15008. The
client presents the *source workload's* certificate and checks the destination workload's SPIFFE
identity; the CONNECT names the destination `address:port`.

Here Envoy plays ztunnel (a Rust proxy upstream), as Istio's own waypoints are Envoy:
- the originating side takes the client's `CONNECT host:port` (a captured pod's curl tunnels
  through its proxy, `capture_listener`) and forwards it as HBONE (`proxy_connect_route`,
  `hbone_cluster`): one CONNECT stream per application connection, over HTTP/2 and mutual TLS;
- the terminating side (`terminate_listener`) requires a client certificate signed by the mesh
  root, accepts CONNECT over HTTP/2 and sends each stream's bytes to the route of its
  `:authority` (`connect_route`), where the destination's L4 policy runs as RBAC
  (labs/embedded/mesh/istio/ambient/l4_policy.py). A denied CONNECT is answered 401, as ztunnel's
  inbound (`src/proxy/inbound.rs`) does, and that answer reaches the client.

Why the client's own CONNECT is forwarded rather than a plain TCP connection tunnelled (Envoy's
tcp_proxy `tunneling_config`): a tcp_proxy accepts the client's connection before the tunnel
exists, and closes it when the tunnel is refused; on loopback the refusal often arrives before
the client has sent its request, so the close is a FIN (curl: exit 52, empty reply) instead of
a reset (exit 56) — measured 6 times in 40. Forwarding the CONNECT gives exit 56 every time.

The source workload names itself to the destination in CONNECT headers (`SOURCE_HEADER`,
`SOURCE_NAMESPACE_HEADER`), which the destination's access log reads (access_log.py): ztunnel
knows its peers from the workload API instead.
"""

from __future__ import annotations

from ...listener_parts import http_connection_manager, router, socket_address, static_cluster
from ...proxyfiles import ProxyFiles
from ...tls import mutual_downstream, mutual_upstream
from .l4_policy import RBAC_ALLOW_FILTER, RBAC_DENY_FILTER, Obj, rbac_filter

HBONE_PORT = 15008  # where HBONE is served, in every ambient pod's network namespace
H2 = ["h2"]
SOURCE_HEADER = "x-meshlab-source-workload"  # the connection's source pod
SOURCE_NAMESPACE_HEADER = "x-meshlab-source-namespace"  # and its namespace
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
LOCAL_REPLY_401 = {"mappers": [{
    "filter": {"status_code_filter": {"comparison": {
        "op": "EQ", "value": {"default_value": 403, "runtime_key": "hbone.rbac_status"}}}},
    "status_code": 401}]}


def capture_listener(name: str, port: int, virtual_hosts: list[Obj],
                     access_log: list[Obj] | None = None) -> Obj:
    """The listener a captured workload's connections reach on 127.0.0.1:`port` (ztunnel's
    in-pod outbound port): its clients ask for a destination with `CONNECT host:port` (curl's
    `proxytunnel`), routed by `virtual_hosts` of `proxy_connect_route`s."""
    extra: Obj = {"upgrade_configs": [{"upgrade_type": "CONNECT"}],
                  # Python's http.client tunnels with `CONNECT host:port HTTP/1.0`
                  "http_protocol_options": {"accept_http_10": True}}
    if access_log:
        extra["access_log"] = access_log
    hcm = http_connection_manager(name, {"route_config": {
        "name": name, "virtual_hosts": virtual_hosts}}, [router()], **extra)
    return {"name": name, "address": socket_address(port),
            "filter_chains": [{"filters": [hcm]}]}


def proxy_connect_route(cluster: str, target: str, source: tuple[str, str]) -> Obj:
    """Forward a client's CONNECT over HBONE: the same CONNECT, now to `target` (the
    destination's `address:port`), through `cluster` (an `hbone_cluster`), naming its `source`
    (namespace, pod). The destination's answer goes back to the client: 200 and the tunnel, or
    401 when its policy refuses, which curl reports as `CONNECT tunnel failed, response 401`
    with exit code 56 (the `command terminated with exit code 56` of Istio's L4 policy docs)."""
    namespace, pod = source
    return {
        "match": {"connect_matcher": {}},
        "route": {"cluster": cluster, "host_rewrite_literal": target,
                  "upgrade_configs": [{"upgrade_type": "CONNECT"}]},
        "request_headers_to_add": [
            {"header": {"key": SOURCE_HEADER, "value": pod}},
            {"header": {"key": SOURCE_NAMESPACE_HEADER, "value": namespace}}],
    }


def hbone_cluster(name: str, port: int, files: ProxyFiles, peer_identity: str) -> Obj:
    """HTTP/2 over mutual TLS to an HBONE port, presenting the certificate of `files` (the
    source workload's) and accepting only `peer_identity` (the destination's SPIFFE ID)."""
    cluster = static_cluster(name, port, connect_timeout="1s")
    cluster["typed_extension_protocol_options"] = {HTTP_PROTOCOL_OPTIONS: {
        "@type": f"type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}",
        "explicit_http_config": {"http2_protocol_options": {}}}}
    cluster["transport_socket"] = mutual_upstream(files, [peer_identity], sni=peer_identity,
                                                  alpn=H2)
    return cluster


def connect_route(authority: str, cluster: str, rbac: dict[str, Obj] | None = None) -> Obj:
    """The route of CONNECTs to `authority`: their bytes go to `cluster`. `rbac` maps the
    listener's RBAC filter names to this route's rules (l4_policy.route_rbac)."""
    route: Obj = {
        "match": {"connect_matcher": {},
                  "headers": [{"name": ":authority", "string_match": {"exact": authority}}]},
        "route": {"cluster": cluster,
                  "upgrade_configs": [{"upgrade_type": "CONNECT", "connect_config": {}}]},
    }
    if rbac:
        route["typed_per_filter_config"] = {
            name: {"@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3"
                            ".RBACPerRoute", "rbac": config}
            for name, config in rbac.items()}
    return route


def terminate_listener(name: str, port: int, files: ProxyFiles, routes: list[Obj],
                       access_log: list[Obj] | None = None) -> Obj:
    """An HBONE listener on 127.0.0.1:`port` presenting the certificate of `files` (the
    destination workload's): mutual TLS, HTTP/2 CONNECT only, `routes` from `connect_route`.
    A CONNECT to an authority no route names is refused (404), as ztunnel refuses a target
    that is not its workload's."""
    extra: Obj = {"codec_type": "HTTP2", "http2_protocol_options": {"allow_connect": True},
                  "upgrade_configs": [{"upgrade_type": "CONNECT"}],
                  "local_reply_config": LOCAL_REPLY_401}
    if access_log:
        extra["access_log"] = access_log
    hcm = http_connection_manager(
        name, {"route_config": {"name": name, "virtual_hosts": [
            {"name": name, "domains": ["*"], "routes": routes}]}},
        [rbac_filter(RBAC_DENY_FILTER), rbac_filter(RBAC_ALLOW_FILTER), router()], **extra)
    return {"name": name, "address": socket_address(port),
            "filter_chains": [{"transport_socket": mutual_downstream(files, alpn=H2),
                               "filters": [hcm]}]}
