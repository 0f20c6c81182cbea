"""The Envoy configuration of one `linkerd-proxy`, with Linkerd's data-plane semantics.

What linkerd2-proxy does, and what plays its part here:
- Automatic mTLS (linkerd/website `2-edge/features/automatic-mtls.md`): a meshed client opens
  TLS to a meshed endpoint, presenting its own identity certificate, sending the server's
  identity name as SNI and verifying that the server's certificate names it (Envoy: an
  UpstreamTlsContext per server identity with a DNS SAN match, chosen per endpoint through
  `transport_socket_matches`); endpoints without a Linkerd proxy get plaintext ("Linkerd will
  only add mTLS between meshed pods").
- The inbound side detects TLS (`protocol-detection.md`; Envoy's TLS inspector, as Istio's
  PERMISSIVE does): meshed TLS requires a client certificate from the trust anchors; each
  request (or, on an opaque port, connection) is then authorized by the port's policy
  (policy.py: Servers, AuthorizationPolicies, HTTPRoutes, or the default inbound policy) with
  Envoy RBAC, denials answered as linkerd2-proxy answers them. Requests from a meshed client carry
  `l5d-client-id: <client identity>` to the app, set by the proxy and stripped from anything
  else (linkerd2-proxy `src/app/inbound.rs` client_id, commit 6d10dd6), plus Envoy's
  `x-forwarded-client-cert` with the client's subject and DNS SAN.
- Load balancing (`features/load-balancing.md`): per request across a service's endpoints by
  EWMA of latency; Envoy's LEAST_REQUEST (power of two choices on outstanding requests) is the
  nearest Envoy has, and is what is configured.
- The admin server on the pod's port 4191 answers `/live` (`live\\n`) and `/ready`
  (`ready\\n`) as linkerd2-proxy's admin does (linkerd2-proxy `linkerd/app/admin/src/server.rs`),
  and `/metrics` with the proxy's HTTP metrics (metrics.py), which the daemon's telemetry server
  counts from the JSON line per request each listener writes to the proxy's `telemetry.log`;
  other admin paths answer 404.
- The outbound listener is the app's `http_proxy` (there is no iptables): a request for a
  Service by any of its DNS names is routed to that Service's endpoints; other hosts get a 502
  saying so (linkerd2-proxy would forward them to their original destination).
- Per Service port, requests are routed as its ServiceProfile, outbound HTTPRoutes or
  retry/timeout annotations say (routing.py: weighted backends, matches, retries, timeouts).
Not emulated: the transport header, circuit breaking, tap.
"""

from __future__ import annotations

from ...workload import (
    LINKERD_ADMIN_PORT,
    TELEMETRY_LOG,
    app_ports,
    host_ports,
    pod_dir_name,
    proxy_ports,
)
from ..kube_state import TRUST_DOMAIN, Obj, fqdn
from ..listener_parts import (
    http_connection_manager,
    json_file_access_log,
    rds,
    router,
    socket_address,
    static_cluster,
    tls_inspector,
)
from ..proxyfiles import EnvoyResources, ProxyFiles
from ..tls import mutual_downstream, mutual_upstream
from .identity import pod_identity_name
from .policy import (
    DECISION_FIELDS,
    POLICIES,
    PortPolicy,
    denial_replies,
    http_routes,
    network_rbac,
    port_policy,
    rbac_http_filter,
)
from .routing import outbound_cluster_name, port_routing, timeout_reply
from .state import LinkerdState, default_inbound_policy, is_meshed

OUTBOUND = "outbound"
L5D_CLIENT_ID = "l5d-client-id"
MATCH_KEY = "envoy.transport_socket_match"  # endpoint metadata that picks a TLS context
IDENTITY_KEY = "linkerd_identity"
# _proxy.tpl: LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT 1000ms (the inbound 100 ms is raised to
# a second: a twin forked on a busy 2-core host can take longer to accept than a real app)
CONNECT_TIMEOUT = "1s"
METRICS_CLUSTER = "telemetry"  # the daemon's telemetry server, which counts this proxy's metrics
# The JSON line per request metrics.py counts (Envoy command operators; null when absent)
# (with what `linkerd viz tap` prints of a request: labs/linkerd/viz/tap.py)
RESPONSE_FIELDS = {"response_code": "%RESPONSE_CODE%", "duration": "%DURATION%",
                   "src": "%DOWNSTREAM_REMOTE_ADDRESS%", "local": "%DOWNSTREAM_LOCAL_ADDRESS%",
                   "method": "%REQ(:METHOD)%", "host": "%REQ(:AUTHORITY)%",
                   "path": "%REQ(:PATH)%", "latency": "%RESPONSE_DURATION%",
                   "bytes_sent": "%BYTES_SENT%", "grpc_status": "%GRPC_STATUS_NUMBER%",
                   "response_tx": "%RESPONSE_TX_DURATION%"}
OUTBOUND_FIELDS = {"direction": "outbound", "authority": "%UPSTREAM_CLUSTER_RAW%",
                   "upstream_host": "%UPSTREAM_HOST%", "tls": "%UPSTREAM_TLS_VERSION%",
                   "server_id": "%UPSTREAM_PEER_DNS_SAN%", **RESPONSE_FIELDS}


def same_protocol() -> Obj:
    """Forward each request in the protocol it arrived in (linkerd2-proxy keeps HTTP/2, so
    gRPC, as HTTP/2 to the server and its app; HTTP/1 stays HTTP/1)."""
    options = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    return {options: {"@type": f"type.googleapis.com/{options}", "use_downstream_protocol_config": {
        "http_protocol_options": {}, "http2_protocol_options": {}}}}


def inbound_cluster_name(container_port: int | str) -> str:
    return f"inbound|{container_port}"


def _direct(status: int, body: str, headers: list[Obj] | None = None) -> Obj:
    out: Obj = {"status": status}
    if body:
        out["body"] = {"inline_string": body}
    return {"direct_response": out, **({"response_headers_to_add": headers} if headers else {})}


def telemetry_log(files: ProxyFiles, fields: Obj) -> list[Obj]:
    return [json_file_access_log(files.xds_dir.parent / TELEMETRY_LOG, fields)]


def admin_listener(port: int, pod: Obj, telemetry_port: int) -> Obj:
    """linkerd2-proxy's admin server on the pod's 4191: `/live` and `/ready` (what the injected
    probes ask), `/metrics` (from the telemetry server, when there is one), 404 for other
    paths. It exists once the control plane configured the proxy with its certificate, so
    `/ready` answers exactly when the proxy is ready."""
    routes = [{"match": {"path": "/live"}, **_direct(200, "live\n")},
              {"match": {"path": "/ready"}, **_direct(200, "ready\n")}]
    if telemetry_port:
        routes.append({"match": {"path": "/metrics"}, "route": {
            "cluster": METRICS_CLUSTER,
            "prefix_rewrite": f"/proxies/{pod_dir_name(pod)}/metrics"}})
    routes.append({"match": {"prefix": "/"}, **_direct(404, "")})
    route_config = {"name": "admin", "virtual_hosts": [
        {"name": "admin", "domains": ["*"], "routes": routes}]}
    hcm = http_connection_manager("admin", {"route_config": route_config}, [router()])
    return {"name": "admin", "address": socket_address(port),
            "filter_chains": [{"filters": [hcm]}]}


# -- outbound ----------------------------------------------------------------------------------
def _domains(service: Obj, port: int, own_namespace: bool) -> list[str]:
    """The names a client may give a service port: every DNS form with `:port`, and without a
    port when it is 80; the short name only in the client's own namespace."""
    meta, spec = service["metadata"], service.get("spec") or {}
    name, namespace = meta["name"], meta.get("namespace", "")
    names = [fqdn(service), f"{name}.{namespace}.svc", f"{name}.{namespace}"]
    if own_namespace:
        names.append(name)
    cluster_ip = spec.get("clusterIP")
    if cluster_ip and cluster_ip != "None":
        names.append(cluster_ip)
    return [f"{n}:{port}" for n in names] + (names if port == 80 else [])


def _outbound_cluster(name: str, state: LinkerdState, service: Obj, port: Obj,
                      files: ProxyFiles) -> Obj:
    """A service port's endpoints, balanced per request; mTLS to each meshed endpoint with the
    identity the destination controller gives it, plaintext to the others."""
    lb_endpoints, identities = [], set()
    for ep in state.endpoints_for(service, port):
        entry: Obj = {"endpoint": {"address": {"socket_address": {
            "address": ep.address, "port_value": ep.port}}}}
        if is_meshed(ep):
            assert ep.pod is not None
            identity = pod_identity_name(ep.pod)
            identities.add(identity)
            entry["metadata"] = {"filter_metadata": {MATCH_KEY: {IDENTITY_KEY: identity}}}
        lb_endpoints.append(entry)
    cluster: Obj = {
        "name": name, "type": "STATIC", "connect_timeout": CONNECT_TIMEOUT,
        "lb_policy": "LEAST_REQUEST",
        "typed_extension_protocol_options": same_protocol(),
        "load_assignment": {"cluster_name": name,
                            "endpoints": [{"lb_endpoints": lb_endpoints}] if lb_endpoints else []},
    }
    if identities:
        cluster["transport_socket_matches"] = [
            {"name": identity, "match": {IDENTITY_KEY: identity},
             "transport_socket": mutual_upstream(files, [identity], identity, san_type="DNS")}
            for identity in sorted(identities)]
    return cluster


def build_outbound(state: LinkerdState, pod: Obj, files: ProxyFiles
                   ) -> tuple[list[Obj], list[Obj], list[str]]:
    """(clusters, route configurations, warnings) for every Service port the app may call,
    each routed as its ServiceProfile, HTTPRoutes or annotations say (routing.py)."""
    namespace = pod["metadata"].get("namespace", "")
    clusters, virtual_hosts, seen, warnings = [], [], set(), []
    breakers: dict[str, Obj] = {}
    for service in sorted(state.services, key=lambda s: (s["metadata"].get("namespace", ""),
                                                         s["metadata"]["name"])):
        own = service["metadata"].get("namespace", "") == namespace
        for port in (service.get("spec") or {}).get("ports") or []:
            number = int(port["port"])
            name = outbound_cluster_name(service, number)
            clusters.append(_outbound_cluster(name, state, service, port, files))
            domains = [d for d in _domains(service, number, own) if d not in seen]
            seen.update(domains)
            if domains:
                routing = port_routing(state, service, number, namespace)
                breakers.update(routing.circuit_breakers)
                warnings += routing.warnings
                virtual_hosts.append({"name": name, "domains": domains,
                                      "routes": routing.routes})
    for cluster in clusters:
        if cluster["name"] in breakers:
            cluster["circuit_breakers"] = breakers[cluster["name"]]
    virtual_hosts.append({"name": "unknown", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, **_direct(
            502, f"meshlab: the Linkerd proxy knows no Service by this name (it routes the "
                 f"cluster's Services, <name>[.<namespace>[.svc[.{TRUST_DOMAIN}]]]); "
                 "linkerd2-proxy would forward the request to its original destination\n")}]})
    return clusters, [{"name": OUTBOUND, "virtual_hosts": virtual_hosts,
                       "validate_clusters": False}], sorted(set(warnings))


def outbound_listener(port: int, files: ProxyFiles) -> Obj:
    """The app's `http_proxy`: absolute-form requests routed by authority."""
    hcm = http_connection_manager(
        OUTBOUND, rds(OUTBOUND, files), [router()],
        http_protocol_options={"allow_absolute_url": True}, normalize_path=True,
        generate_request_id=False,  # linkerd2-proxy adds no x-request-id
        local_reply_config=timeout_reply(), access_log=telemetry_log(files, OUTBOUND_FIELDS))
    return {"name": OUTBOUND, "address": socket_address(port), "traffic_direction": "OUTBOUND",
            "filter_chains": [{"filters": [hcm]}]}


# -- inbound -----------------------------------------------------------------------------------
def _inbound_ports(pod: Obj) -> list[tuple[int, int, int]]:
    """(container port, host port, app port) of each app port the proxy fronts."""
    public, app = host_ports(pod), app_ports(pod)
    return sorted((int(port), public[port], app[port]) for port in app if port in public)


def inbound_route_config(container_port: int, port_policy: PortPolicy, meshed: bool) -> Obj:
    """The port's routes on one filter chain (meshed TLS or plaintext), each authorized by
    Envoy RBAC (policy.py). Inline in the listener: file-based RDS takes one route
    configuration per file, and the proxy has one RDS file (the outbound routes), so a policy
    change replaces the listener (a pooled connection answers once more, envoy.py Drain)."""
    cluster = inbound_cluster_name(container_port)
    route_config: Obj = {"name": f"{cluster}|{'tls' if meshed else 'plaintext'}",
                         "virtual_hosts": [{"name": cluster, "domains": ["*"],
                                            "routes": http_routes(port_policy, cluster,
                                                                  tls=meshed)}]}
    if meshed:
        route_config["request_headers_to_add"] = [{
            "header": {"key": L5D_CLIENT_ID, "value": "%DOWNSTREAM_PEER_DNS_SAN%"},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
    else:
        route_config["request_headers_to_remove"] = [L5D_CLIENT_ID]
    return route_config


def _inbound_hcm(container_port: int, port_policy: PortPolicy, meshed: bool,
                 files: ProxyFiles) -> Obj:
    if meshed:
        extra: Obj = {"forward_client_cert_details": "SANITIZE_SET",
                      "set_current_client_cert_details": {"subject": True, "dns": True}}
    else:
        extra = {"forward_client_cert_details": "SANITIZE"}
    return http_connection_manager(
        f"inbound_{container_port}",
        {"route_config": inbound_route_config(container_port, port_policy, meshed)},
        [rbac_http_filter(), router()], normalize_path=True, generate_request_id=False,
        local_reply_config=denial_replies(), **extra,
        access_log=telemetry_log(files, {
            "direction": "inbound", "port": str(container_port), **DECISION_FIELDS,
            "tls": "%DOWNSTREAM_TLS_VERSION%", "client_id": "%DOWNSTREAM_PEER_DNS_SAN%",
            **RESPONSE_FIELDS}))


def _inbound_filters(container_port: int, port_policy: PortPolicy, meshed: bool,
                     files: ProxyFiles) -> list[Obj]:
    """An opaque port: connection RBAC, then bytes to the app; else the HTTP server."""
    if not port_policy.opaque:
        return [_inbound_hcm(container_port, port_policy, meshed, files)]
    return [network_rbac(port_policy, meshed), {
        "name": "envoy.filters.network.tcp_proxy", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": f"inbound_{container_port}_tcp",
            "cluster": inbound_cluster_name(container_port)}}]


def inbound_listener(ports: tuple[int, int, int], port_policy: PortPolicy,
                     files: ProxyFiles) -> Obj:
    """The listener on an app port's host port: meshed TLS (client certificate required) or
    plaintext, told apart by the first bytes; each served as the port's policy allows."""
    container_port, public_port, _ = ports
    return {
        "name": inbound_cluster_name(container_port), "address": socket_address(public_port),
        "traffic_direction": "INBOUND", "listener_filters": [tls_inspector()],
        "filter_chains": [
            {"name": "tls", "filter_chain_match": {"transport_protocol": "tls"},
             "transport_socket": mutual_downstream(files),
             "filters": _inbound_filters(container_port, port_policy, True, files)},
            {"name": "plaintext", "filter_chain_match": {"transport_protocol": "raw_buffer"},
             "filters": _inbound_filters(container_port, port_policy, False, files)},
        ]}


def build_proxy(state: LinkerdState, pod: Obj, files: ProxyFiles,
                telemetry_port: int = 0) -> EnvoyResources:
    """Every cluster, route and listener of one pod's `linkerd-proxy`; `telemetry_port` 0: no
    telemetry server, no `/metrics`. A default policy this emulation does not know is served
    as `deny` and reported as a warning."""
    policy = default_inbound_policy(pod)
    warnings = []
    if policy not in POLICIES:  # linkerd2 charts values.yaml proxy.defaultInboundPolicy
        warnings.append((pod, f"unknown default inbound policy {policy!r} (expected one of "
                              f"{', '.join(sorted(POLICIES))}): every inbound request is denied"))
        policy = "deny"
    clusters, route_configs, routing_warnings = build_outbound(state, pod, files)
    warnings += [(pod, problem) for problem in routing_warnings]
    inbound = _inbound_ports(pod)
    clusters += [{**static_cluster(inbound_cluster_name(port), app_port, CONNECT_TIMEOUT),
                  "typed_extension_protocol_options": same_protocol()}
                 for port, _, app_port in inbound]
    if telemetry_port:
        clusters.append(static_cluster(METRICS_CLUSTER, telemetry_port, CONNECT_TIMEOUT))
    listeners = [inbound_listener(ports, port_policy(state, pod, ports[0], policy), files)
                 for ports in inbound]
    if outbound := proxy_ports(pod).get("outbound"):
        listeners.append(outbound_listener(outbound, files))
    if admin := host_ports(pod).get(str(LINKERD_ADMIN_PORT)):
        listeners.append(admin_listener(admin, pod, telemetry_port))
    return EnvoyResources(listeners=listeners, clusters=clusters, route_configs=route_configs,
                          warnings=warnings)
