"""Outbound route configurations (built by `clusters.build_outbound` with the clusters).

A sidecar gets the route config `outbound` (its outbound HTTP-proxy listener uses RDS with that
name): one virtual host per (host, port), routed by the VirtualService for the host or else by
Istio's default route (no timeout, Istio's default retries). The node forwarder (kube-proxy's
stand-in, no proxy pod) gets `forwarder`: per (service, port) a CONNECT tunnel route for curl's
`proxytunnel` and a plain L7 route, with no mesh policy at all.
"""

from __future__ import annotations

from ...kube_state import Obj
from ..state import MeshState
from .destinationrule import destination_rule_for, effective_policy, hash_policy
from .hosts import MeshHost, cluster_name
from .values import ConfigError
from .virtualservice import (
    HashLookup,
    RouteContext,
    retry_policy,
    select_virtual_services,
    vs_routes,
)

SIDECAR_ROUTES = "outbound"
FORWARDER_ROUTES = "forwarder"
UNKNOWN_HOST_BODY = ("meshlab: this host is not a Service or ServiceEntry of the mesh; the "
                     "embedded mesh sends no traffic off this machine\n")


def sidecar_route_config(state: MeshState, hosts: list[MeshHost], proxy_pod: Obj) -> Obj:
    meta = proxy_pod["metadata"]
    namespace = meta.get("namespace", "")
    by_name = {h.hostname: h for h in hosts}
    chosen = select_virtual_services(state.virtual_services, list(by_name), namespace)
    hash_for = hash_lookup(state, by_name, proxy_pod)
    virtual_hosts = []
    seen: set[str] = set()
    for host in hosts:
        for port in host.ports:
            routes: list[Obj] = []
            vs = chosen.get(host.hostname)
            if vs is not None:
                ctx = RouteContext(vs, port, meta.get("labels") or {}, namespace, by_name,
                                   hash_for)
                try:
                    routes = vs_routes(ctx)
                except ConfigError:
                    routes = []  # an untranslatable VirtualService leaves Istio's defaults
            if not routes:
                routes = [default_route(host, port, hash_for(host.hostname, port, None))]
            virtual_hosts += _virtual_host(host, port, routes, seen)
    virtual_hosts.append({"name": "block_all", "domains": ["*"], "routes": [
        {"name": "block_all", "match": {"prefix": "/"}, "direct_response": {
            "status": 502, "body": {"inline_string": UNKNOWN_HOST_BODY}}}]})
    return {"name": SIDECAR_ROUTES, "virtual_hosts": virtual_hosts, "validate_clusters": False}


def hash_lookup(state: MeshState, by_name: dict[str, MeshHost], proxy_pod: Obj) -> HashLookup:
    """(hostname, port, subset) → the Envoy hash policy the proxy's DestinationRule asks for."""
    def hash_for(hostname: str, port: int, subset: str | None) -> Obj | None:
        host = by_name.get(hostname)
        if host is None:
            return None
        rule = destination_rule_for(state, host, proxy_pod)
        try:
            return hash_policy(effective_policy(rule, port, subset).get("loadBalancer"))
        except ConfigError:
            return None
    return hash_for


def default_route(host: MeshHost, port: int, hashing: Obj | None) -> Obj:
    """Istio's route for a host without a VirtualService."""
    action: Obj = {"cluster": cluster_name(port, None, host.hostname), "timeout": "0s",
                   "retry_policy": retry_policy(None, hashing is not None, "")}
    if hashing is not None:
        action["hash_policy"] = [hashing]
    return {"name": "default", "match": {"prefix": "/", "case_sensitive": True},
            "route": action, "decorator": {"operation": f"{host.hostname}:{port}/*"}}


def forwarder_route_config(hosts: list[MeshHost]) -> Obj:
    virtual_hosts = []
    seen: set[str] = set()
    for host in hosts:
        for port in host.ports:
            cluster = cluster_name(port, None, host.hostname)
            routes = [
                {"name": "connect", "match": {"connect_matcher": {}},
                 "route": {"cluster": cluster, "timeout": "0s", "upgrade_configs": [
                     {"upgrade_type": "CONNECT", "connect_config": {}}]}},
                {"name": "default", "match": {"prefix": "/"},
                 "route": {"cluster": cluster, "timeout": "0s"}}]
            virtual_hosts += _virtual_host(host, port, routes, seen)
    return {"name": FORWARDER_ROUTES, "virtual_hosts": virtual_hosts, "validate_clusters": False}


def _virtual_host(host: MeshHost, port: int, routes: list[Obj], seen: set[str]) -> list[Obj]:
    """Envoy rejects a domain listed twice in one route config, so a later host (a clashing
    ServiceEntry address, say) loses the duplicate; a host left with no domain gets no vhost."""
    domains = [d for d in dict.fromkeys(host.domains(port)) if d not in seen]
    seen.update(domains)
    return [{"name": f"{host.hostname}:{port}", "domains": domains, "routes": routes,
             "include_request_attempt_count": True}] if domains else []
