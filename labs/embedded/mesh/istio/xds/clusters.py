"""A proxy's outbound configuration (`build_outbound`) and its clusters: one per host port
(`outbound|<port>||<fqdn>`) and per DestinationRule subset (`outbound|<port>|<subset>|<fqdn>`),
with endpoints inline and Istio's traffic policy.

Defaults are Istio's, not Envoy's: LEAST_REQUEST balancing, a 10 s connect timeout, circuit
breaker thresholds at the maximum, and auto-mTLS: endpoints served by a sidecar carry
`tlsMode: istio` metadata and get Istio mTLS through `transport_socket_matches`, the rest get
plaintext.
"""

from __future__ import annotations

from ...kube_state import Obj
from ...proxyfiles import ProxyFiles
from ...tls import mutual_upstream, outbound_sni
from ..state import MeshState
from .destinationrule import destination_rule_for, effective_policy, hash_policy, subsets
from .hosts import Backend, MeshHost, cluster_name, creation_order, service_hosts, sidecar_hosts
from .listeners import is_http2_port, use_http2
from .routes import forwarder_route_config, sidecar_route_config
from .values import ConfigError, duration, integer, istio_config_metadata

MAX = 4294967295
CONNECT_TIMEOUT = "10s"
TLS_MATCH_KEY = "envoy.transport_socket_match"
RAW_BUFFER = {"name": "envoy.transport_sockets.raw_buffer", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"}}
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
SIMPLE_LB = {"ROUND_ROBIN": "ROUND_ROBIN", "LEAST_REQUEST": "LEAST_REQUEST",
             "LEAST_CONN": "LEAST_REQUEST", "RANDOM": "RANDOM",
             "UNSPECIFIED": "LEAST_REQUEST", "PASSTHROUGH": "LEAST_REQUEST"}


def build_outbound(state: MeshState, proxy_pod: Obj | None,
                   files: ProxyFiles | None) -> tuple[list[Obj], list[Obj]]:
    """(clusters, route_configs) for a sidecar, or for the node forwarder when `proxy_pod` is
    None. Pure: everything comes from `state`; objects that cannot be translated are skipped
    (see `diagnostics.outbound_warnings`)."""
    if proxy_pod is None:
        hosts = service_hosts(state, None)
        return forwarder_clusters(hosts), [forwarder_route_config(hosts)]
    if files is None:
        raise ValueError("build_outbound: a sidecar needs its ProxyFiles (the SDS files its "
                         "mTLS clusters read); pass ProxyFiles(<pod_dir>/istio-proxy/xds)")
    hosts = sidecar_hosts(state, proxy_pod["metadata"].get("namespace", ""), [])
    return (sidecar_clusters(state, hosts, proxy_pod, files),
            [sidecar_route_config(state, hosts, proxy_pod)])


def forwarder_clusters(hosts: list[MeshHost]) -> list[Obj]:
    """kube-proxy's view: every ready endpoint, round robin, plaintext, no policy."""
    out = []
    for host in hosts:
        for port in host.ports:
            cluster = {**_base(cluster_name(port, None, host.hostname), host.backends[port],
                               False), "lb_policy": "ROUND_ROBIN"}
            if _http2(host, port):
                use_http2(cluster)
            out.append(cluster)
    return out


def _http2(host: MeshHost, port: int) -> bool:
    """Whether the host's `port` is GRPC/HTTP2 (Istio then dials its endpoints over HTTP/2)."""
    return any(is_http2_port(p) for p in (host.source.get("spec") or {}).get("ports") or []
               if str(p.get("port", p.get("number"))) == str(port))


def sidecar_clusters(state: MeshState, hosts: list[MeshHost], proxy_pod: Obj,
                     files: ProxyFiles) -> list[Obj]:
    """A sidecar's outbound clusters. A DestinationRule that cannot be translated is skipped
    (the host keeps Istio's defaults); `outbound_warnings` says why."""
    out = []
    for host in hosts:
        rule = destination_rule_for(state, host, proxy_pod)
        for port in host.ports:
            try:
                out += _host_port_clusters(state, host, port, rule, files)
            except ConfigError:
                out += _host_port_clusters(state, host, port, None, files)
    return out


def _host_port_clusters(state: MeshState, host: MeshHost, port: int, rule: Obj | None,
                        files: ProxyFiles) -> list[Obj]:
    clusters = [_sidecar_cluster(state, host, port, None, host.backends[port],
                                 effective_policy(rule, port, None), files)]
    for subset in subsets(rule):
        if not subset.get("name"):
            continue
        labels = subset.get("labels") or {}
        chosen = [b for b in host.backends[port]
                  if all(b.labels.get(k) == v for k, v in labels.items())]
        clusters.append(_sidecar_cluster(state, host, port, subset["name"], chosen,
                                         effective_policy(rule, port, subset["name"]), files))
    if rule is not None:
        for cluster in clusters:
            cluster["metadata"] = istio_config_metadata("destination-rule", rule)
    return clusters


def _base(name: str, backends: list[Backend], with_metadata: bool) -> Obj:
    lb_endpoints = []
    for backend in backends:
        endpoint: Obj = {"endpoint": {"address": {"socket_address": {
            "address": backend.address, "port_value": backend.port}}}}
        if with_metadata and backend.istio_mtls:
            endpoint["metadata"] = {"filter_metadata": {TLS_MATCH_KEY: {"tlsMode": "istio"}}}
        lb_endpoints.append(endpoint)
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": CONNECT_TIMEOUT,
        "load_assignment": {"cluster_name": name,
                            "endpoints": [{"lb_endpoints": lb_endpoints}] if lb_endpoints else []},
        "circuit_breakers": {"thresholds": [_default_thresholds()]},
    }


def _default_thresholds() -> Obj:
    return {"max_connections": MAX, "max_pending_requests": MAX, "max_requests": MAX,
            "max_retries": MAX, "track_remaining": True}


def _sidecar_cluster(state: MeshState, host: MeshHost, port: int, subset: str | None,
                     backends: list[Backend], policy: Obj, files: ProxyFiles) -> Obj:
    cluster = _base(cluster_name(port, subset, host.hostname), backends, True)
    _apply_policy(cluster, policy)
    if _http2(host, port):
        use_http2(cluster)
    _apply_tls(cluster, state, host, port, subset, (policy.get("tls") or {}).get("mode"), files)
    return cluster


def check_traffic_policy(policy: Obj) -> None:
    """Raise `ConfigError` when a (merged) traffic policy cannot be translated."""
    _apply_policy(_base("check", [], False), policy)
    hash_policy(policy.get("loadBalancer"))


def _apply_policy(cluster: Obj, policy: Obj) -> None:
    _apply_connection_pool(cluster, policy.get("connectionPool") or {})
    _apply_outlier_detection(cluster, policy.get("outlierDetection"))
    _apply_load_balancer(cluster, policy.get("loadBalancer") or {})


def _apply_connection_pool(cluster: Obj, pool: Obj) -> None:
    thresholds = cluster["circuit_breakers"]["thresholds"][0]
    http, tcp = pool.get("http") or {}, pool.get("tcp") or {}
    where = "trafficPolicy.connectionPool"
    for field, key, envoy in (("http", "http2MaxRequests", "max_requests"),
                              ("http", "http1MaxPendingRequests", "max_pending_requests"),
                              ("http", "maxRetries", "max_retries"),
                              ("tcp", "maxConnections", "max_connections")):
        value = (http if field == "http" else tcp).get(key)
        if value is not None and integer(value, f"{where}.{field}.{key}") > 0:
            thresholds[envoy] = int(value)
    if tcp.get("connectTimeout") is not None:
        cluster["connect_timeout"] = duration(tcp["connectTimeout"], f"{where}.tcp.connectTimeout")
    keepalive = tcp.get("tcpKeepalive")
    if keepalive is not None:
        options: Obj = {}
        if keepalive.get("probes") is not None:
            options["keepalive_probes"] = integer(keepalive["probes"], f"{where}.tcp.tcpKeepalive")
        for key, envoy in (("time", "keepalive_time"), ("interval", "keepalive_interval")):
            if keepalive.get(key) is not None:
                seconds = duration(keepalive[key], f"{where}.tcp.tcpKeepalive.{key}")
                options[envoy] = max(1, round(float(seconds[:-1])))
        cluster["upstream_connection_options"] = {"tcp_keepalive": options}
    common: Obj = {}
    idle = http.get("idleTimeout", tcp.get("idleTimeout"))
    if idle is not None:
        common["idle_timeout"] = duration(idle, f"{where}.http.idleTimeout")
    if tcp.get("maxConnectionDuration") is not None:
        common["max_connection_duration"] = duration(tcp["maxConnectionDuration"],
                                                     f"{where}.tcp.maxConnectionDuration")
    per_connection = http.get("maxRequestsPerConnection")
    if per_connection is not None and integer(per_connection, f"{where}.http") > 0:
        common["max_requests_per_connection"] = int(per_connection)
    if common:
        cluster["typed_extension_protocol_options"] = {HTTP_OPTIONS: {
            "@type": f"type.googleapis.com/{HTTP_OPTIONS}",
            "common_http_protocol_options": common,
            "explicit_http_config": {"http_protocol_options": {}}}}


def _apply_outlier_detection(cluster: Obj, outlier: Obj | None) -> None:
    if outlier is None:
        return
    where = "trafficPolicy.outlierDetection"
    out: Obj = {"enforcing_success_rate": 0}
    for key, count, enforcing in (("consecutive5xxErrors", "consecutive_5xx",
                                   "enforcing_consecutive_5xx"),
                                  ("consecutiveGatewayErrors", "consecutive_gateway_failure",
                                   "enforcing_consecutive_gateway_failure")):
        if outlier.get(key) is not None:
            value = integer(outlier[key], f"{where}.{key}")
            out[count] = value
            out[enforcing] = 100 if value > 0 else 0
    for key, envoy in (("interval", "interval"), ("baseEjectionTime", "base_ejection_time")):
        if outlier.get(key) is not None:
            out[envoy] = duration(outlier[key], f"{where}.{key}")
    if outlier.get("maxEjectionPercent"):
        out["max_ejection_percent"] = integer(outlier["maxEjectionPercent"],
                                              f"{where}.maxEjectionPercent")
    cluster["outlier_detection"] = out
    # Istio disables Envoy's panic threshold (minHealthPercent, default 0): with few pods a
    # service would otherwise keep sending to ejected hosts.
    minimum = integer(outlier.get("minHealthPercent", 0), f"{where}.minHealthPercent")
    cluster["common_lb_config"] = {"healthy_panic_threshold": {"value": minimum}}


def _apply_load_balancer(cluster: Obj, lb: Obj) -> None:
    consistent = lb.get("consistentHash")
    if consistent is not None:
        if consistent.get("maglev") is not None:
            cluster["lb_policy"] = "MAGLEV"
            size = consistent["maglev"].get("tableSize")
            if size:
                cluster["maglev_lb_config"] = {"table_size": integer(size, "maglev.tableSize")}
        else:
            ring = (consistent.get("ringHash") or {}).get("minimumRingSize") or consistent.get(
                "minimumRingSize") or 1024
            cluster["lb_policy"] = "RING_HASH"
            cluster["ring_hash_lb_config"] = {
                "minimum_ring_size": integer(ring, "consistentHash.minimumRingSize", 1)}
        return
    simple = str(lb.get("simple", "UNSPECIFIED"))
    if simple not in SIMPLE_LB:
        raise ConfigError(f"trafficPolicy.loadBalancer.simple: {simple!r} is not one of "
                          f"{', '.join(SIMPLE_LB)}")
    cluster["lb_policy"] = SIMPLE_LB[simple]
    warmup = lb.get("warmupDurationSecs")
    if warmup is not None and cluster["lb_policy"] in ("ROUND_ROBIN", "LEAST_REQUEST"):
        key = ("round_robin_lb_config" if cluster["lb_policy"] == "ROUND_ROBIN"
               else "least_request_lb_config")
        cluster[key] = {"slow_start_config": {"slow_start_window": duration(
            warmup, "trafficPolicy.loadBalancer.warmupDurationSecs")}}


def _apply_tls(cluster: Obj, state: MeshState, host: MeshHost, port: int, subset: str | None,
               mode: str | None, files: ProxyFiles) -> None:
    sans = sorted({b.spiffe_id for ps in host.backends.values() for b in ps if b.spiffe_id})
    mtls = mutual_upstream(files, sans, outbound_sni(port, subset or "", host.hostname))
    if mode == "ISTIO_MUTUAL":
        cluster["transport_socket"] = mtls
    elif mode in (None, "", "UNSET") and not host.mesh_external and (
            namespace_mtls_mode(state, host.namespace) != "DISABLE"):
        cluster["transport_socket_matches"] = [
            {"name": "tlsMode-istio", "match": {"tlsMode": "istio"}, "transport_socket": mtls},
            {"name": "tlsMode-disabled", "match": {}, "transport_socket": RAW_BUFFER}]
    # DISABLE, and SIMPLE/MUTUAL (not emulated, reported by unsupported_fields): plaintext.


def namespace_mtls_mode(state: MeshState, namespace: str) -> str | None:
    """What auto-mTLS infers for a destination namespace, like Istio: the namespace-wide
    PeerAuthentication, else the mesh-wide one in the root namespace (selectors are ignored)."""
    for candidate in (namespace, state.root_namespace):
        policies = sorted((p for p in state.peer_authentications
                           if p["metadata"].get("namespace") == candidate
                           and not (p.get("spec") or {}).get("selector")), key=creation_order)
        for policy in policies:
            mode = ((policy.get("spec") or {}).get("mtls") or {}).get("mode")
            if mode and mode != "UNSET":
                return str(mode)
    return None
