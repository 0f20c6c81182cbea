"""Linkerd's inbound authorization policy: which clients each meshed pod's port serves.

What linkerd's policy controller computes per pod port (linkerd/linkerd2
`policy-controller/k8s/index/src/inbound/index.rs`, `.../authorization_policy.rs`,
`.../server_authorization.rs`; docs linkerd/website `2-edge/reference/authorization-policy.md`,
`2-edge/features/server-policy.md`), resolved here from a `LinkerdState`:
- the `Server` (policy.linkerd.io) whose `podSelector` selects the pod and whose `port` names the
  container port (by number, or by a container port's name); when several do, the oldest
  (creationTimestamp, then name) wins here, and admission (policy_validation.py) refuses most
  such overlaps as upstream does. Without a Server, the proxy's default inbound policy applies
  (fixed in its environment at injection: changing the annotation later does not change it).
- the authorizations: `AuthorizationPolicy` targeting the Server, the Namespace, or an HTTPRoute
  on the Server (each requiring all of its `requiredAuthenticationRefs`: one
  MeshTLSAuthentication or ServiceAccount, and/or one NetworkAuthentication), legacy
  `ServerAuthorization` (by `server.name` or `server.selector`), and the Server's
  `accessPolicy` (default `deny`) for clients none of them authorize.
- routes: a Server's HTTPRoutes (policy.linkerd.io or gateway.networking.k8s.io parentRef
  `kind: Server`), else a `default` route for every request plus, as upstream's `probe`
  route, the port's HTTP GET probe paths authorized for any client.
The kubelet (labs/embedded/runtime/probes.py) probes the app's own port, beside the proxy, so
a policy never fails a probe here; the `probe` route serves probes sent through the proxy.
Every pod here is 127.0.0.1, so network authentication sees 127.0.0.1 as every client's
address: a NetworkAuthentication whose networks contain it admits every client, one that does
not (or whose `except` removes it) admits none; the `cluster-*` defaults treat 127.0.0.0/8 as
the cluster network (upstream: `clusterNetworks`, 10.0.0.0/8 etc.).
Not emulated: GRPCRoutes on a Server, `externalWorkloadSelector`, HTTPRoute filters and
`proxyProtocol` other than `opaque` (every other port is served as HTTP after detection).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ...apiserver.selectors import labels_match
from ...workload import running_containers
from ..kube_state import Obj
from .identity import identity_name
from .state import LinkerdState

GROUP = "policy.linkerd.io"
ALL_NETWORKS = (("0.0.0.0/0", ()), ("::/0", ()))
CLUSTER_NETWORKS = (("127.0.0.0/8", ()),)  # where every pod of this cluster is
Network = tuple[str, tuple[str, ...]]  # cidr, excepts
Meta = tuple[str, str, str]  # group, kind, name: the `*_group/_kind/_name` metric labels
DEFAULT_ROUTE: Meta = ("", "default", "default")
PROBE: Meta = ("", "default", "probe")
POLICIES = ("all-unauthenticated", "all-authenticated", "cluster-unauthenticated",
            "cluster-authenticated", "deny", "audit")


@dataclass(frozen=True)
class Authorization:
    """Clients one authorization admits: plaintext ones too (`unauthenticated`), or TLS ones
    with one of `identities` (`*`: any; `*.<suffix>`: by suffix), from `networks`."""

    meta: Meta
    unauthenticated: bool
    identities: tuple[str, ...]
    networks: tuple[Network, ...]


@dataclass(frozen=True)
class Route:
    """An inbound HTTP route: Envoy route matches (empty: every request) and who may use it."""

    meta: Meta
    matches: tuple[Obj, ...]
    authorizations: tuple[Authorization, ...]


@dataclass(frozen=True)
class PortPolicy:
    """What the proxy enforces on one inbound port."""

    server: Meta  # ("", "default", <policy>) without a Server
    port: int
    opaque: bool
    routes: tuple[Route, ...]  # in match order; a request matching none gets 404
    authorizations: tuple[Authorization, ...]  # for the port as a whole (opaque TCP)
    audit: bool  # unauthorized requests are served, labelled `authz_name=audit`


def default_authorizations(policy: str) -> tuple[Authorization, ...]:
    """A default policy (or a Server's `accessPolicy`) as authorizations (upstream
    `policy-controller/k8s/index/src/defaults.rs`); `deny` and `audit` admit nobody."""
    meta: Meta = ("", "default", policy)
    networks = CLUSTER_NETWORKS if policy.startswith("cluster-") else ALL_NETWORKS
    if policy.endswith("-unauthenticated"):
        return (Authorization(meta, True, (), networks),)
    if policy.endswith("-authenticated"):
        return (Authorization(meta, False, ("*",), networks),)
    return ()


def _name(obj: Obj) -> str:
    return str(obj["metadata"]["name"])


def _ns(obj: Obj) -> str:
    return str(obj["metadata"].get("namespace", ""))


def _find(objs: list[Obj], namespace: str, name: str) -> Obj | None:
    return next((o for o in objs if _ns(o) == namespace and _name(o) == name), None)


def _networks(entries: list[Obj] | None) -> tuple[Network, ...]:
    return tuple((str(n["cidr"]), tuple(str(e) for e in n.get("except") or []))
                 for n in entries or [] if n.get("cidr"))


def _identity_refs(refs: list[Obj], namespace: str) -> tuple[str, ...]:
    """MeshTLSAuthentication `identityRefs`: a ServiceAccount (`*`: any in its namespace) or a
    Namespace (all its ServiceAccounts)."""
    out = []
    for ref in refs:
        kind, name = ref.get("kind"), str(ref.get("name", ""))
        if kind == "Namespace":
            out.append("*." + identity_name(name, "*").split(".", 1)[1])
        elif kind == "ServiceAccount":
            ns = str(ref.get("namespace") or namespace)
            out.append("*." + identity_name(ns, "*").split(".", 1)[1] if name == "*"
                       else identity_name(ns, name))
    return tuple(out)


def _policy_authorization(kinds: dict[str, list[Obj]], policy: Obj) -> Authorization | None:
    """An AuthorizationPolicy's clients; None when an authentication it requires does not
    exist (upstream then ignores the policy)."""
    namespace, refs = _ns(policy), (policy.get("spec") or {}).get("requiredAuthenticationRefs")
    identities: tuple[str, ...] | None = None
    networks: tuple[Network, ...] = ALL_NETWORKS
    for ref in refs or []:
        kind, ref_ns = ref.get("kind"), str(ref.get("namespace") or namespace)
        if kind == "ServiceAccount":
            identities = (identity_name(ref_ns, str(ref.get("name", ""))),)
            continue
        found = (_find(kinds[kind], ref_ns, str(ref.get("name", "")))
                 if kind in kinds else None)
        if found is None:
            return None
        spec = found.get("spec") or {}
        if kind == "MeshTLSAuthentication":
            identities = (tuple(str(i) for i in spec.get("identities") or [])
                          + _identity_refs(spec.get("identityRefs") or [], ref_ns))
        else:
            networks = _networks(spec.get("networks"))
    return Authorization((GROUP, "authorizationpolicy", _name(policy)), identities is None,
                         identities or (), networks)


def _server_authorization(sa: Obj) -> Authorization:
    """A legacy ServerAuthorization's `client` (policy.linkerd.io/v1beta1)."""
    client = (sa.get("spec") or {}).get("client") or {}
    mesh = client.get("meshTLS") or {}
    identities = tuple(str(i) for i in mesh.get("identities") or []) + tuple(
        identity_name(str(s.get("namespace") or _ns(sa)), str(s["name"]))
        for s in mesh.get("serviceAccounts") or [] if s.get("name"))
    if mesh.get("unauthenticatedTLS"):
        identities = ("*",)  # any TLS client; here every TLS client has an identity
    networks = _networks(client.get("networks")) or ALL_NETWORKS
    return Authorization((GROUP, "serverauthorization", _name(sa)),
                         bool(client.get("unauthenticated")), identities, networks)


def _targets(ref: Obj, kind: str, groups: tuple[str, ...], name: str) -> bool:
    return (ref.get("kind") == kind and str(ref.get("group") or "") in groups
            and ref.get("name") == name)


def _container_ports(pod: Obj) -> dict[str, int]:
    """Container port names (and numbers, as strings) -> numbers."""
    found: dict[str, int] = {}
    for container in running_containers(pod):
        for port in container.get("ports") or []:
            number = int(port["containerPort"])
            found[str(number)] = number
            if port.get("name"):
                found[str(port["name"])] = number
    return found


def server_for(kinds: dict[str, list[Obj]], pod: Obj, port: int) -> Obj | None:
    """The Server selecting this pod port; the oldest when several do."""
    labels = pod["metadata"].get("labels") or {}
    names = _container_ports(pod)
    chosen = [s for s in kinds["Server"]
              if _ns(s) == _ns(pod) and "podSelector" in (s.get("spec") or {})
              and labels_match(s["spec"]["podSelector"], labels)
              and names.get(str(s["spec"].get("port"))) == port]
    chosen.sort(key=lambda s: (s["metadata"].get("creationTimestamp", ""), _name(s)))
    return chosen[0] if chosen else None


def probe_paths(pod: Obj, port: int) -> list[str]:
    """The HTTP GET probe paths of the pod's containers on this port."""
    names, paths = _container_ports(pod), []
    for container in running_containers(pod):
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            get = (container.get(probe) or {}).get("httpGet") or {}
            if get and names.get(str(get.get("port"))) == port:
                paths.append(str(get.get("path") or "/"))
    return sorted(set(paths))


def _probe_routes(pod: Obj, port: int, authorizations: tuple[Authorization, ...]
                  ) -> list[Route]:
    """Upstream's `probe` route: GET on a probe path, authorized for every client."""
    probe = Authorization(PROBE, True, (), ALL_NETWORKS)
    return [Route(PROBE, ({"path": path, "headers": [
        {"name": ":method", "string_match": {"exact": "GET"}}]},), (*authorizations, probe))
        for path in probe_paths(pod, port)]


def route_matches(rule: Obj) -> tuple[Obj, ...]:
    """Gateway API HTTPRouteMatches as Envoy route matches (a rule without matches: `/`)."""
    out = []
    for match in rule.get("matches") or [{}]:
        path = match.get("path") or {"type": "PathPrefix", "value": "/"}
        value, kind = str(path.get("value", "/")), path.get("type", "PathPrefix")
        envoy: Obj = ({"path": value} if kind == "Exact"
                      else {"safe_regex": {"regex": value}} if kind == "RegularExpression"
                      else {"path_separated_prefix": value.rstrip("/")} if value != "/"
                      else {"prefix": "/"})
        headers = [{"name": h["name"], "string_match": (
            {"safe_regex": {"regex": h["value"]}} if h.get("type") == "RegularExpression"
            else {"exact": h["value"]})} for h in match.get("headers") or []]
        if match.get("method"):
            headers.append({"name": ":method", "string_match": {"exact": match["method"]}})
        if headers:
            envoy["headers"] = headers
        if match.get("queryParams"):
            envoy["query_parameters"] = [
                {"name": q["name"], "string_match": {"exact": q["value"]}}
                for q in match["queryParams"]]
        out.append(envoy)
    return tuple(out)


def by_kind(state: LinkerdState) -> dict[str, list[Obj]]:
    """The policy objects of a snapshot by kind, as the functions here look them up."""
    return {"Server": state.servers, "ServerAuthorization": state.server_authorizations,
            "AuthorizationPolicy": state.authorization_policies,
            "MeshTLSAuthentication": state.meshtls_authentications,
            "NetworkAuthentication": state.network_authentications,
            "HTTPRoute": [*state.linkerd_http_routes, *state.gateway_http_routes]}


def _server_routes(kinds: dict[str, list[Obj]], server: Obj) -> list[Obj]:
    """HTTPRoutes with this Server as a parent, oldest first (upstream's order for rules of
    equal precedence)."""
    routes = [r for r in kinds["HTTPRoute"] if _ns(r) == _ns(server) and any(
        _targets(p, "Server", (GROUP,), _name(server))
        for p in (r.get("spec") or {}).get("parentRefs") or [])]
    return sorted(routes, key=lambda r: (r["metadata"].get("creationTimestamp", ""), _name(r)))


def _policies(kinds: dict[str, list[Obj]], namespace: str, kind: str, groups: tuple[str, ...],
              name: str) -> tuple[Authorization, ...]:
    out = []
    for policy in kinds["AuthorizationPolicy"]:
        ref = (policy.get("spec") or {}).get("targetRef") or {}
        if (_ns(policy) == namespace and _targets(ref, kind, groups, name)
                and (authz := _policy_authorization(kinds, policy)) is not None):
            out.append(authz)
    return tuple(out)


def port_policy(state: LinkerdState, pod: Obj, port: int, default: str) -> PortPolicy:
    """The policy of one meshed pod port; `default`: the proxy's default inbound policy."""
    kinds = by_kind(state)
    namespace = _ns(pod)
    server = server_for(kinds, pod, port)
    if server is None:
        authzs = default_authorizations(default)
        routes = [*_probe_routes(pod, port, authzs), Route(DEFAULT_ROUTE, (), authzs)]
        return PortPolicy(("", "default", default), port, False, tuple(routes), authzs,
                          default == "audit")
    spec, name = server.get("spec") or {}, _name(server)
    access = str(spec.get("accessPolicy") or "deny")
    authzs = (*_policies(kinds, namespace, "Server", (GROUP,), name),
              *_policies(kinds, namespace, "Namespace", ("", "core"), namespace),
              *(_server_authorization(sa) for sa in kinds["ServerAuthorization"]
                if _ns(sa) == namespace and _selects(sa, server)),
              *default_authorizations(access))
    routes = []
    for route in _server_routes(kinds, server):
        group = route["apiVersion"].split("/")[0]
        meta: Meta = (group, "httproute", _name(route))
        route_authzs = (*_policies(kinds, namespace, "HTTPRoute", (group,), _name(route)),
                        *authzs)
        routes += [Route(meta, route_matches(rule), route_authzs)
                   for rule in (route.get("spec") or {}).get("rules") or [{}]]
    if not routes:
        routes = [*_probe_routes(pod, port, authzs), Route(DEFAULT_ROUTE, (), authzs)]
    return PortPolicy((GROUP, "server", name), port, spec.get("proxyProtocol") == "opaque",
                      tuple(routes), authzs, access == "audit")


def _selects(sa: Obj, server: Obj) -> bool:
    """A ServerAuthorization's `spec.server`: by name, or a label selector over Servers."""
    ref = (sa.get("spec") or {}).get("server") or {}
    if ref.get("name"):
        return ref["name"] == _name(server)
    return "selector" in ref and labels_match(ref["selector"],
                                              server["metadata"].get("labels") or {})


# -- Envoy: RBAC per route (HTTP) or per connection (opaque) ------------------------------------
# A denied request gets linkerd2-proxy's answer (linkerd/linkerd2-proxy
# `linkerd/app/core/src/errors/respond.rs` `permission_denied`, error text from
# `linkerd/app/inbound/src/policy/http.rs` HttpRouteUnauthorized): HTTP 403, no body,
# `l5d-proxy-error: unauthorized request on route`; gRPC: trailers-only, grpc-status 7
# (PERMISSION_DENIED), the text in grpc-message. A request no route of a Server matches gets
# 404 `no route found for request` (HttpRouteNotFound). An opaque port's denied connection is
# closed (Envoy's network RBAC; upstream refuses it).
RBAC_FILTER = "envoy.filters.http.rbac"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
RBAC_ROUTE_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
NETWORK_RBAC_FILTER = "envoy.filters.network.rbac"
NETWORK_RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
L5D_PROXY_ERROR = "l5d-proxy-error"
UNAUTHORIZED = "unauthorized request on route"
NO_ROUTE = "no route found for request"
# The telemetry line's fields for metrics.py: the route's name is the server's and the route's
# labels, the matched authorization is the RBAC engine's effective policy (named so that
# Envoy's ordered policy map tries them in order, `audit` last)
DECISION_FIELDS = {
    "route": "%ROUTE_NAME%",
    "authz": f"%DYNAMIC_METADATA({RBAC_FILTER}:enforced_effective_policy_id)%",
    "details": "%RESPONSE_CODE_DETAILS%"}
DENIED_DETAILS = "rbac_access_denied"  # how Envoy's RBAC filter names its refusals
AUDIT: Meta = ("", "default", "audit")
SEPARATOR = "|"


NO_ROUTE_META: Meta = ("", "", "")


def meta_name(*metas: Meta) -> str:
    """Labels as an Envoy name: `<group>|<kind>|<name>` each (a route: server's, then its)."""
    return SEPARATOR.join(part for meta in metas for part in meta)


def parse_authz(value: object) -> Meta | None:
    """An authorization's labels from its RBAC policy id (`<index>|<group>|<kind>|<name>`)."""
    parts = str(value or "").split(SEPARATOR)
    return (parts[1], parts[2], parts[3]) if len(parts) == 4 else None


def parse_route(value: object) -> tuple[Meta, Meta] | None:
    """(server, route) labels from an inbound route's name."""
    parts = str(value or "").split(SEPARATOR)
    if len(parts) != 6:
        return None
    return (parts[0], parts[1], parts[2]), (parts[3], parts[4], parts[5])


def _cidr_principal(cidr: str) -> Obj:
    network = ipaddress.ip_network(cidr, strict=False)
    return {"direct_remote_ip": {"address_prefix": str(network.network_address),
                                 "prefix_len": network.prefixlen}}


def _network_principal(networks: tuple[Network, ...]) -> Obj:
    ids = []
    for cidr, excepts in networks:
        principal = _cidr_principal(cidr)
        if excepts:
            principal = {"and_ids": {"ids": [principal, {"not_id": {"or_ids": {
                "ids": [_cidr_principal(e) for e in excepts]}}}]}}
        ids.append(principal)
    return {"or_ids": {"ids": ids}} if ids else {"not_id": {"any": True}}


def _identity_principal(pattern: str) -> Obj:
    """A TLS client identity: the DNS SAN of its certificate (`*`: any certificate)."""
    if pattern == "*":
        return {"authenticated": {}}
    match = {"suffix": pattern[1:]} if pattern.startswith("*.") else {"exact": pattern}
    return {"authenticated": {"principal_name": match}}


def principal(authz: Authorization, tls: bool) -> Obj | None:
    """Who the authorization admits on a TLS (meshed) or plaintext connection; None: nobody."""
    if not authz.unauthenticated and (not tls or not authz.identities):
        return None
    network = _network_principal(authz.networks)
    if authz.unauthenticated:
        return network
    return {"and_ids": {"ids": [
        {"or_ids": {"ids": [_identity_principal(i) for i in authz.identities]}}, network]}}


def rbac_rules(authzs: tuple[Authorization, ...], tls: bool, audit: bool) -> Obj:
    """ALLOW rules, one policy per authorization (audit: then anyone, as `audit`)."""
    policies = {}
    for index, authz in enumerate(authzs):
        if (who := principal(authz, tls)) is not None:
            policies[f"{index:03d}{SEPARATOR}{meta_name(authz.meta)}"] = {
                "permissions": [{"any": True}], "principals": [who]}
    if audit:
        policies[f"999{SEPARATOR}{meta_name(AUDIT)}"] = {
            "permissions": [{"any": True}], "principals": [{"any": True}]}
    return {"action": "ALLOW", "policies": policies}


def _route_rbac(authzs: tuple[Authorization, ...], tls: bool, audit: bool) -> Obj:
    return {RBAC_FILTER: {"@type": RBAC_ROUTE_TYPE, "rbac": {
        "rules": rbac_rules(authzs, tls, audit)}}}


def rbac_http_filter() -> Obj:
    """The HCM's RBAC filter: no rules of its own (each route brings them)."""
    return {"name": RBAC_FILTER, "typed_config": {"@type": RBAC_TYPE}}


def http_routes(policy: PortPolicy, cluster: str, tls: bool) -> list[Obj]:
    """The port's Envoy routes to `cluster`, each with its RBAC; 404 where no route matches."""
    out, catch_all = [], False
    for route in policy.routes:
        for match in route.matches or ({"prefix": "/"},):
            catch_all = catch_all or match == {"prefix": "/"}
            out.append({"name": meta_name(policy.server, route.meta), "match": match,
                        "route": {"cluster": cluster, "timeout": "0s"},
                        "typed_per_filter_config": _route_rbac(route.authorizations, tls,
                                                               policy.audit)})
    if not catch_all:
        out.append({"name": meta_name(policy.server, NO_ROUTE_META), "match": {"prefix": "/"},
                    "direct_response": {"status": 404},
                    "response_headers_to_add": [_error_header(NO_ROUTE)]})
    return out


def _error_header(message: str) -> Obj:
    return {"header": {"key": L5D_PROXY_ERROR, "value": message},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}


def _status_filter(status: int) -> Obj:
    return {"status_code_filter": {"comparison": {"op": "EQ", "value": {
        "default_value": status, "runtime_key": f"linkerd.local_reply.{status}"}}}}


def denial_replies() -> Obj:
    """HCM `local_reply_config`: RBAC's refusal as linkerd2-proxy's (see above); Envoy turns a
    gRPC request's local reply into trailers-only with grpc-status 7 for a 403 itself."""
    grpc = {"header_filter": {"header": {"name": "content-type",
                                         "string_match": {"prefix": "application/grpc"}}}}
    return {"mappers": [
        {"filter": {"and_filter": {"filters": [_status_filter(403), grpc]}},
         "headers_to_add": [_error_header(UNAUTHORIZED)],
         "body": {"inline_string": UNAUTHORIZED}},
        {"filter": _status_filter(403), "headers_to_add": [_error_header(UNAUTHORIZED)],
         "body": {"inline_string": ""}}]}


def network_rbac(policy: PortPolicy, tls: bool) -> Obj:
    """An opaque port's connection-level RBAC (before its tcp_proxy)."""
    return {"name": NETWORK_RBAC_FILTER, "typed_config": {
        "@type": NETWORK_RBAC_TYPE, "stat_prefix": f"inbound_{policy.port}_",
        "rules": rbac_rules(policy.authorizations, tls, policy.audit)}}
