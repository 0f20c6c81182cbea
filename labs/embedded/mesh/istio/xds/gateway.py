"""An Istio gateway proxy (`istio-ingressgateway`): Gateway servers → listeners, bound
VirtualServices → routes, the mesh's services → clusters (mTLS with the gateway's own identity).

Istio's translation (pilot's gateway config): a `Gateway` whose `selector` matches the gateway
pod's labels contributes its `servers`; a server's `port.number` is a port of the gateway's
Service, so the listener is on the pod's target port (80 → 8080), here at that container port's
host port and, for a NodePort/LoadBalancer Service, also on the node port (127.0.0.1), which is
where `INGRESS_PORT` in Istio's docs points. Each server port gets route configuration
`http.<port>` (inline in the listener): one virtual host per host that a server's `hosts` and
a bound VirtualService's `hosts` share, with the VirtualService's routes (the sidecar
translation, in gateway context); other hosts and paths get Envoy's 404, as in Istio.

TLS SIMPLE servers terminate TLS with the certificate of their `credentialName`: a
kubernetes.io/tls Secret in the gateway's namespace, which the control plane writes to an SDS
file of the gateway (`sds/credential-<name>.yaml`, secret `kubernetes://<name>` as Istio names
it); one filter chain per server, chosen by SNI when the server lists hosts.
"""

from __future__ import annotations

import base64
import binascii
import copy
import dataclasses
import json
import re
from collections.abc import Collection
from pathlib import Path

from ....workload import host_ports
from ...kube_state import Obj, fqdn
from ...proxyfiles import EnvoyResources, ProxyFiles
from ...tls import file_config_source, pem_source
from ..state import MeshState
from .clusters import build_outbound
from .diagnostics import ObjectWarning
from .hosts import MeshHost, expand_host, host_matches, sidecar_hosts, specificity, visible_to
from .listeners import (
    HEALTH_PORT,
    _health_listener,
    fault,
    http_connection_manager,
    router,
    socket_address,
)
from .observability import sidecar_access_logs, telemetry_clusters, tracing_config
from .routes import hash_lookup
from .telemetry_api import OUTBOUND, Side, telemetry_settings
from .values import ConfigError
from .virtualservice import RouteContext, bound_gateways, vs_hosts, vs_routes

HTTP_PROTOCOLS = ("HTTP", "HTTP2")
TLS_PROTOCOLS = ("HTTPS",)
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
DOWNSTREAM_TLS_TYPE = (
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext")
TLS_INSPECTOR_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector")
GATEWAY_SERVICE_ANNOTATION = "internal.istio.io/gateway-service"
ROUTE_SEMANTICS_ANNOTATION = "internal.istio.io/route-semantics"
PREFIX_REDIRECT = "%PREFIX()%"  # Istio's marker for a Gateway API ReplacePrefixMatch redirect


def credential_sds(files: ProxyFiles, name: str) -> Path:
    """The SDS file holding the certificate of `credentialName: name`."""
    return files.xds_dir / "sds" / f"credential-{name}.yaml"


def credential_sds_text(secret: Obj) -> str:
    """A kubernetes.io/tls Secret as an SDS file; ValueError says what is wrong with it."""
    meta = secret["metadata"]
    where = f"Secret {meta.get('namespace', '')}/{meta['name']}"
    data = secret.get("data") or {}
    try:
        cert, key = (base64.b64decode(data[k], validate=True).decode()
                     for k in ("tls.crt", "tls.key"))
    except KeyError as err:
        raise ValueError(f"{where} has no {err.args[0]}: create it with `kubectl create secret "
                         "tls <name> -n istio-system --cert=... --key=...`") from None
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError(f"{where}: tls.crt and tls.key must be base64 PEM") from None
    return json.dumps({"resources": [{
        "@type": SECRET_TYPE, "name": f"kubernetes://{meta['name']}",
        "tls_certificate": {"certificate_chain": pem_source(cert),
                            "private_key": pem_source(key)}}]}, indent=1) + "\n"


def _simple_tls(server: Obj) -> str | None:
    """The credentialName of a TLS SIMPLE server this gateway can program, else None."""
    tls = server.get("tls") or {}
    protocol = str((server.get("port") or {}).get("protocol", "")).upper()
    if protocol in TLS_PROTOCOLS and tls.get("mode", "SIMPLE") == "SIMPLE" and (
            tls.get("credentialName")) and set(tls) <= {"mode", "credentialName"}:
        return str(tls["credentialName"])
    return None


def gateway_ref(gateway: Obj) -> str:
    meta = gateway["metadata"]
    return f"{meta.get('namespace', '')}/{meta['name']}"


def selects(gateway: Obj, pod: Obj, state: MeshState | None = None) -> bool:
    """Istio: every label of the Gateway's `selector` is on the pod (Gateways in any
    namespace select gateway pods in any namespace, Istio's default). A Gateway istiod derived
    from a Gateway API Gateway names its Service instead (`internal.istio.io/gateway-service`):
    it selects the pods behind that Service."""
    labels = pod["metadata"].get("labels") or {}
    services = ((gateway["metadata"].get("annotations") or {}).get(GATEWAY_SERVICE_ANNOTATION)
                or "")
    if services:
        return state is not None and any(fqdn(svc) in services.split(",")
                                         for svc in _pod_services(state, pod))
    selector = (gateway.get("spec") or {}).get("selector") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def gateway_semantics(vs: Obj, routes: list[Obj]) -> list[Obj]:
    """Routes of a VirtualService istiod derived from an Ingress or an HTTPRoute
    (`internal.istio.io/route-semantics`): a prefix matches whole path segments (Envoy's
    `path_separated_prefix`; a prefix rewrite to `/` then strips the segment), and for
    Gateway API a missing backend answers 500, as the spec asks, and a redirect to
    `%PREFIX()%<path>` replaces the matched prefix."""
    semantics = (vs["metadata"].get("annotations") or {}).get(ROUTE_SEMANTICS_ANNOTATION)
    if semantics not in ("ingress", "gateway"):
        return routes
    for route in routes:
        redirect = route.get("redirect") or {}
        if semantics == "gateway" and str(redirect.get("path_redirect", "")).startswith(
                PREFIX_REDIRECT):  # Istio's route.go: a redirect's `%PREFIX()%` → prefix_rewrite
            redirect["prefix_rewrite"] = redirect.pop("path_redirect").removeprefix(
                PREFIX_REDIRECT)
        match = route["match"]
        prefix = match.get("prefix")
        if prefix is not None and prefix != "/":
            del match["prefix"]
            match["path_separated_prefix"] = prefix.rstrip("/") or "/"
            for action in (route.get("route") or {}, redirect):
                if action.get("prefix_rewrite") == "/":  # `/x/y` → `/y`, not `//y`
                    del action["prefix_rewrite"]
                    action["regex_rewrite"] = {
                        "pattern": {"regex": f"^{re.escape(prefix.rstrip('/'))}" r"\/*"},
                        "substitution": "/"}
        if semantics == "gateway" and "route" in route:
            route["route"]["cluster_not_found_response_code"] = "INTERNAL_SERVER_ERROR"
    return routes


def gateway_unsupported_fields(gateway: Obj) -> list[str]:
    """What of a Gateway the embedded ingress gateway does not program: servers other than
    plain HTTP and TLS SIMPLE with a credentialName (HTTPS)."""
    out = []
    for i, server in enumerate((gateway.get("spec") or {}).get("servers") or []):
        protocol = str((server.get("port") or {}).get("protocol", "")).upper()
        tls = server.get("tls") or {}
        if protocol not in HTTP_PROTOCOLS + TLS_PROTOCOLS:
            out.append(f"spec.servers[{i}].port.protocol={protocol or '(none)'}")
        elif protocol in TLS_PROTOCOLS and _simple_tls(server) is None:
            out += [f"spec.servers[{i}].tls.{k}" for k in tls if k not in ("mode",
                                                                         "credentialName")]
            if tls.get("mode", "SIMPLE") != "SIMPLE":
                out.append(f"spec.servers[{i}].tls.mode={tls['mode']}")
            elif not tls.get("credentialName"):
                out.append(f"spec.servers[{i}].tls (SIMPLE needs a credentialName here)")
        elif protocol in HTTP_PROTOCOLS and tls:
            out += [f"spec.servers[{i}].tls.{k}" for k in tls]
    return out


def gateway_credentials(state: MeshState, pod: Obj) -> list[str]:
    """The credentialNames of the TLS SIMPLE servers that select `pod`."""
    return list(dict.fromkeys(
        name for gateway in state.gateways if selects(gateway, pod, state)
        for server in (gateway.get("spec") or {}).get("servers") or []
        if (name := _simple_tls(server))))


def _pod_services(state: MeshState, pod: Obj) -> list[Obj]:
    meta = pod["metadata"]
    labels = meta.get("labels") or {}
    return [svc for svc in state.services
            if svc["metadata"].get("namespace") == meta.get("namespace")
            and (selector := (svc.get("spec") or {}).get("selector"))
            and all(labels.get(k) == v for k, v in selector.items())]


def _container_port(pod: Obj, target: object) -> int | None:
    """A Service targetPort (number or container port name) as a container port number."""
    if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        return int(target)
    for container in pod.get("spec", {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target:
                return int(port["containerPort"])
    return None


def service_ports(state: MeshState, pod: Obj, number: int) -> tuple[int, list[int]]:
    """(container port, node ports) serving Gateway server port `number`. Like Istio, the
    number is a port of the gateway's Service (80 → its targetPort 8080) or else the container
    port itself (8080, as newer Istio samples write it); node ports are those of every Service
    port targeting that container port."""
    services = _pod_services(state, pod)
    targets = [(port, _container_port(pod, port.get("targetPort", port.get("port"))))
               for svc in services for port in (svc.get("spec") or {}).get("ports") or []]
    container = next((target for port, target in targets
                      if int(port.get("port", 0)) == number and target is not None), number)
    node_ports = [port["nodePort"] for port, target in targets
                  if target == container and isinstance(port.get("nodePort"), int)]
    return container, list(dict.fromkeys(node_ports))


def _server_hosts(server: Obj, gateway_namespace: str) -> list[tuple[str, str]]:
    """A server's `hosts` as (namespace or `*`, host): `ns/host`, `./host`, `*/host`, `host`."""
    out = []
    for entry in server.get("hosts") or []:
        namespace, _, host = str(entry).rpartition("/")
        namespace = gateway_namespace if namespace == "." else (namespace or "*")
        out.append((namespace, host.lower()))
    return out


def _shared_host(server_host: str, vs_host: str) -> str | None:
    """The more specific of two hosts when one covers the other (the virtual host's domain)."""
    if host_matches(server_host, vs_host):
        return vs_host
    if host_matches(vs_host, server_host):
        return server_host
    return None


def _virtual_hosts(state: MeshState, pod: Obj, number: int, servers: list[tuple[Obj, Obj]],
                   hosts: dict[str, MeshHost], warnings: list[ObjectWarning]) -> list[Obj]:
    """Virtual hosts of the route configuration `http.<number>`: domain → routes of the bound
    VirtualServices (oldest first, as Istio merges them)."""
    meta = pod["metadata"]
    hash_for = hash_lookup(state, hosts, pod)
    routes_by_domain: dict[str, list[Obj]] = {}
    for gateway, server in servers:
        ref = gateway_ref(gateway)
        gw_ns = gateway["metadata"].get("namespace", "")
        allowed = _server_hosts(server, gw_ns)
        bound = sorted((vs for vs in state.virtual_services
                        if ref in bound_gateways(vs) and visible_to(vs, gw_ns)),
                       key=lambda vs: vs["metadata"].get("creationTimestamp") or "")
        for vs in bound:
            vs_ns = vs["metadata"].get("namespace", "")
            domains = [d for ns, server_host in allowed if ns in ("*", vs_ns)
                       for vs_host in vs_hosts(vs)
                       if (d := _shared_host(expand_host(server_host, gw_ns), vs_host))]
            if not domains:
                continue
            ctx = RouteContext(vs, number, meta.get("labels") or {}, meta.get("namespace", ""),
                               hosts, hash_for, gateways=frozenset({ref}))
            try:
                routes = gateway_semantics(vs, vs_routes(ctx))
            except ConfigError as err:
                warnings.append((vs, f"{err}; the VirtualService is not applied"))
                continue
            for domain in dict.fromkeys(domains):
                routes_by_domain.setdefault(domain, []).extend(copy.deepcopy(routes))
    ordered = sorted(routes_by_domain, key=lambda d: tuple(-x for x in specificity(d)))
    return [{"name": f"{domain}:{number}", "domains": [domain], "routes": routes_by_domain[domain],
             "include_request_attempt_count": True} for domain in ordered]


def _hcm(pod: Obj, files: ProxyFiles, route_config: Obj, number: int, side: Side) -> Obj:
    """Istio's gateway HCM: routes by Host with any port stripped, the client's address as the
    downstream address (the edge of the mesh), a fresh x-request-id. The routes are inline:
    a file-based RDS subscription holds one route configuration, a gateway needs several."""
    return http_connection_manager(
        f"outbound_0.0.0.0_{number}", {"route_config": copy.deepcopy(route_config)},
        [fault(), router()],
        strip_any_host_port=True, use_remote_address=True,
        generate_request_id=True, normalize_path=True,
        access_log=sidecar_access_logs(files, pod, OUTBOUND, side),
        **tracing_config(side, collector=True))


def _tls_chain(pod: Obj, files: ProxyFiles, server: Obj, credential: str, route_config: Obj,
               number: int, side: Side) -> Obj:
    """One TLS SIMPLE server: its certificate, chosen by SNI when it names hosts."""
    names = [h for _, h in _server_hosts(server, "") if h != "*"]
    context = {"@type": DOWNSTREAM_TLS_TYPE, "common_tls_context": {
        "alpn_protocols": ["h2", "http/1.1"],
        "tls_certificate_sds_secret_configs": [{
            "name": f"kubernetes://{credential}",
            "sds_config": file_config_source(credential_sds(files, credential))}]}}
    chain: Obj = {"filters": [_hcm(pod, files, route_config, number, side)],
                  "transport_socket": {"name": "envoy.transport_sockets.tls",
                                       "typed_config": context}}
    chain["filter_chain_match"] = {"transport_protocol": "tls",
                                   **({"server_names": names} if names else {})}
    return chain


def _listeners(name: str, ports: list[int], chains: list[Obj], tls: bool) -> list[Obj]:
    """The same listener on the pod's host port and on each node port."""
    out = []
    for index, port in enumerate(dict.fromkeys(ports)):
        listener: Obj = {"name": name if index == 0 else f"{name}_nodeport_{port}",
                         "address": socket_address(port), "traffic_direction": "OUTBOUND",
                         "filter_chains": copy.deepcopy(chains)}
        if tls:
            listener["listener_filters"] = [{"name": "envoy.filters.listener.tls_inspector",
                                             "typed_config": {"@type": TLS_INSPECTOR_TYPE}}]
        out.append(listener)
    return out


def _servers(state: MeshState, pod: Obj) -> dict[int, list[tuple[Obj, Obj]]]:
    """(Gateway, server) pairs selecting `pod` that this gateway programs, by port number."""
    servers: dict[int, list[tuple[Obj, Obj]]] = {}
    for gateway in sorted(state.gateways, key=lambda g: g["metadata"].get("creationTimestamp")
                          or ""):
        if gateway["metadata"].get("deletionTimestamp") or not selects(gateway, pod, state):
            continue
        for server in (gateway.get("spec") or {}).get("servers") or []:
            port = server.get("port") or {}
            protocol = str(port.get("protocol", "")).upper()
            plain = protocol in HTTP_PROTOCOLS and not server.get("tls")
            if port.get("number") and (plain or _simple_tls(server)):
                servers.setdefault(int(port["number"]), []).append((gateway, server))
    return servers


def build_gateway(state: MeshState, pod: Obj, files: ProxyFiles, telemetry_port: int,
                  credentials: Collection[str] = ()) -> EnvoyResources:
    """Every resource of one gateway pod's Envoy; `credentials`: the credentialNames whose SDS
    file the control plane wrote (a TLS server without one is left out, as Istio does);
    `telemetry_port` 0 turns tracing off."""
    namespace = pod["metadata"].get("namespace", "")
    clusters, _ = build_outbound(state, pod, files)
    clusters = [*clusters, *telemetry_clusters(telemetry_port)]
    hosts = {h.hostname: h for h in sidecar_hosts(state, namespace, [])}
    public = host_ports(pod)
    # A gateway's listeners are CLIENT side for the Telemetry API (istiod's workloadMode);
    # without a collector (`telemetry_port` 0) nothing is traced.
    side = telemetry_settings(state, pod).side(OUTBOUND)
    if telemetry_port <= 0:
        side = dataclasses.replace(side, sampling=None)
    out = EnvoyResources(clusters=clusters)
    for number, on_port in sorted(_servers(state, pod).items()):
        container, node_ports = service_ports(state, pod, number)
        host_port = public.get(str(container))
        if host_port is None:
            problem = (f"server port {number} is not served: the gateway pod {namespace}/"
                       f"{pod['metadata']['name']} has no container port {container}")
            out.warnings += [(gateway, problem)
                             for gateway in {id(g): g for g, _ in on_port}.values()]
            continue
        plain = [pair for pair in on_port if not pair[1].get("tls")]
        chains: list[Obj] = []
        if plain:
            route_config = {"name": f"http.{number}", "validate_clusters": False,
                            "virtual_hosts": _virtual_hosts(state, pod, number, plain, hosts,
                                                            out.warnings)}
            chains.append({"filters": [_hcm(pod, files, route_config, number, side)]})
        for index, (gateway, server) in enumerate(p for p in on_port if p[1].get("tls")):
            credential = str(_simple_tls(server))
            if credential not in credentials:
                out.warnings.append((gateway, f"credentialName {credential} has no usable Secret "
                                              f"in {namespace} (kubernetes.io/tls, with tls.crt "
                                              f"and tls.key), so the TLS server on port {number} "
                                              "is not served"))
                continue
            route_config = {"name": f"https.{number}.{index}", "validate_clusters": False,
                            "virtual_hosts": _virtual_hosts(state, pod, number,
                                                            [(gateway, server)], hosts,
                                                            out.warnings)}
            chains.append(_tls_chain(pod, files, server, credential, route_config, number,
                                     side))
        tls = len(chains) > len(plain[:1])
        if tls and plain:  # plaintext and TLS servers on one port: told apart by the handshake
            chains[0]["filter_chain_match"] = {"transport_protocol": "raw_buffer"}
        if chains:
            out.listeners += _listeners(f"0.0.0.0_{container}", [host_port, *node_ports],
                                        chains, tls)
    health_port = public.get(HEALTH_PORT)
    if health_port:
        out.listeners.append(_health_listener(health_port))
    return out
