"""Does the embedded mesh translate Gateway API and Ingress objects the way istiod does?

Pure translation, no cluster: MeshState snapshots in, the derived Istio Gateways and
VirtualServices, the statuses and (for a few) the gateway Envoy's routes out. Istio's own code
(istio/istio pilot/pkg/config/kube/gateway, .../kube/ingress) is the reference; where it decides
something non-obvious the test names the function.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.resources import ResourceRegistry
from labs.embedded.apiserver.store import Store
from labs.embedded.daemon import install_course_crds
from labs.embedded.mesh.istio.derived import translate
from labs.embedded.mesh.istio.gateway_api import Translation, translate_gateway_api
from labs.embedded.mesh.istio.ingress import fallback_match, translate_ingresses
from labs.embedded.mesh.istio.kube_status import KubeStatusWriter, programmed_condition
from labs.embedded.mesh.istio.state import MeshState
from labs.embedded.mesh.istio.xds.gateway import build_gateway
from labs.embedded.mesh.kube_state import Obj
from labs.embedded.mesh.proxyfiles import ProxyFiles
from labs.embedded.workload import HOST_PORTS, PROXY_PORTS

NS = "shop"
OTHER = "backends"
HOST = "shop.example.com"
GROUP = "gateway.networking.k8s.io"


# --- snapshots -----------------------------------------------------------------------------------

def service(name: str, namespace: str = NS, port: int = 80, **spec: Any) -> Obj:
    return {"metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"name": "http", "port": port}], "selector": {"app": name},
                     **spec}}


def gateway(*listeners: Obj, name: str = "gw", cls: str = "istio") -> Obj:
    return {"metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"gatewayClassName": cls, "listeners": list(listeners or [http_listener()])}}


def http_listener(name: str = "http", port: int = 80, **spec: Any) -> Obj:
    return {"name": name, "port": port, "protocol": "HTTP", **spec}


def https_listener(*refs: Obj, name: str = "https", **spec: Any) -> Obj:
    return {"name": name, "port": 443, "protocol": "HTTPS", "hostname": HOST,
            "tls": {"mode": "Terminate", "certificateRefs": list(refs)}, **spec}


def route(*rules: Obj, name: str = "web", parent: Obj | None = None,
          hostnames: list[str] | None = None) -> Obj:
    return {"metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 3,
                         "creationTimestamp": "2026-01-01T00:00:01Z"},
            "spec": {"parentRefs": [parent or {"name": "gw"}],
                     "hostnames": [HOST] if hostnames is None else hostnames,
                     "rules": list(rules)}}


def backend(name: str = "web", port: int | None = 80, **ref: Any) -> Obj:
    return {"name": name, **({} if port is None else {"port": port}), **ref}


def snapshot(*routes: Obj, gateways: list[Obj] | None = None, **more: Any) -> MeshState:
    return MeshState(
        namespaces=[{"metadata": {"name": n, "labels": {"team": n}}} for n in (NS, OTHER)],
        services=[service("web"), service("mirror"), service("api", OTHER, 8080)],
        kube_gateways=gateways if gateways is not None else [gateway()],
        http_routes=list(routes), **more)


def translated(*routes: Obj, secrets: set[tuple[str, str]] | None = None,
               **more: Any) -> Translation:
    return translate_gateway_api(snapshot(*routes, **more), secrets or set())


def http_routes(out: Translation) -> list[Obj]:
    """The Istio http routes of the single derived VirtualService."""
    (vs,) = out.virtual_services
    return list(vs["spec"]["http"])


def only_route(out: Translation) -> Obj:
    (http,) = http_routes(out)
    return http


def parents(out: Translation, name: str = "web") -> list[Obj]:
    return list(out.statuses[("httproutes", NS, name)]["parents"])


def conditions(entry: Obj) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c["reason"], c["message"]) for c in entry["conditions"]}


def route_conditions(out: Translation, name: str = "web") -> dict[str, tuple[str, str, str]]:
    (entry,) = parents(out, name)
    return conditions(entry)


def listener_status(out: Translation, index: int = 0, name: str = "gw") -> Obj:
    return dict(out.statuses[("gateways", NS, name)]["listeners"][index])


# --- filters ---------------------------------------------------------------------------------

def test_request_redirect_keeps_the_request_port_unless_the_scheme_changes() -> None:
    """conversion.go createRedirectFilter: no port → FROM_REQUEST_PORT, or
    FROM_PROTOCOL_DEFAULT when a scheme is set ("this differs from Istio default")."""
    same_scheme = only_route(translated(route({"filters": [{
        "type": "RequestRedirect",
        "requestRedirect": {"hostname": "www.example.com", "statusCode": 302}}]})))
    assert same_scheme["redirect"] == {"redirectCode": 302, "authority": "www.example.com",
                                       "derivePort": "FROM_REQUEST_PORT"}
    assert "route" not in same_scheme and "directResponse" not in same_scheme
    to_https = only_route(translated(route({"filters": [{
        "type": "RequestRedirect", "requestRedirect": {"scheme": "https"}}]})))
    assert to_https["redirect"] == {"scheme": "https", "derivePort": "FROM_PROTOCOL_DEFAULT"}
    explicit = only_route(translated(route({"filters": [{
        "type": "RequestRedirect", "requestRedirect": {"scheme": "https", "port": 8443}}]})))
    assert explicit["redirect"] == {"scheme": "https", "port": 8443}


def test_request_redirect_paths() -> None:
    full = only_route(translated(route({"filters": [{
        "type": "RequestRedirect",
        "requestRedirect": {"path": {"type": "ReplaceFullPath", "replaceFullPath": "/new"}}}]})))
    assert full["redirect"]["uri"] == "/new"
    prefix = only_route(translated(route({
        "matches": [{"path": {"type": "PathPrefix", "value": "/old"}}],
        "filters": [{"type": "RequestRedirect", "requestRedirect": {
            "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"}}}]})))
    assert prefix["redirect"]["uri"] == "%PREFIX()%/new"


def test_url_rewrite() -> None:
    """createRewriteFilter: ReplacePrefixMatch drops a trailing `/` ("/" strips the prefix),
    ReplaceFullPath is a regex rewrite of the whole path, hostname the authority."""
    def rewrite(spec: Obj) -> Obj:
        http = only_route(translated(route({
            "matches": [{"path": {"type": "PathPrefix", "value": "/app"}}],
            "filters": [{"type": "URLRewrite", "urlRewrite": spec}],
            "backendRefs": [backend()]})))
        return dict(http["rewrite"])

    assert rewrite({"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v2/"}}) == {
        "uri": "/v2"}
    assert rewrite({"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}) == {
        "uri": "/"}
    assert rewrite({"path": {"type": "ReplaceFullPath", "replaceFullPath": "/status"},
                    "hostname": "internal.example"}) == {
        "uriRegexRewrite": {"match": "/.*", "rewrite": "/status"}, "authority": "internal.example"}
    no_op = only_route(translated(route({"filters": [{"type": "URLRewrite", "urlRewrite": {}}],
                                         "backendRefs": [backend()]})))
    assert "rewrite" not in no_op


def test_request_mirror() -> None:
    mirrored = only_route(translated(route({
        "filters": [{"type": "RequestMirror", "requestMirror": {
            "backendRef": backend("mirror"), "fraction": {"numerator": 1, "denominator": 4}}}],
        "backendRefs": [backend()]})))
    assert mirrored["mirrors"] == [{
        "destination": {"host": f"mirror.{NS}.svc.cluster.local", "port": {"number": 80}},
        "percentage": {"value": 25.0}}]
    assert mirrored["route"] == [{"destination": {"host": f"web.{NS}.svc.cluster.local",
                                                  "port": {"number": 80}}}]


def test_a_mirror_to_a_missing_service_is_dropped_and_reported() -> None:
    """convertHTTPRoute: a mirror's backend error is joined to the route's errors; the mirror
    is left out and the route itself still routes."""
    out = translated(route({
        "filters": [{"type": "RequestMirror",
                     "requestMirror": {"backendRef": backend("nowhere")}}],
        "backendRefs": [backend()]}))
    http = only_route(out)
    assert "mirrors" not in http and http["route"][0]["destination"]["host"].startswith("web.")
    assert route_conditions(out)["ResolvedRefs"] == (
        "False", "BackendNotFound", f"backend(nowhere.{NS}.svc.cluster.local) not found")
    assert route_conditions(out)["Accepted"][0] == "True"


def test_unsupported_filter_drops_the_whole_route() -> None:
    """A hard error (computeRoute: a nil route) yields no VirtualService at all, but the
    route still counts as attached to the listener."""
    out = translated(route({"filters": [{"type": "ExtensionRef", "extensionRef": {}}],
                            "backendRefs": [backend()]}))
    assert out.virtual_services == []
    assert route_conditions(out)["ResolvedRefs"] == (
        "False", "InvalidFilter", 'unsupported filter type "ExtensionRef"')
    assert listener_status(out)["attachedRoutes"] == 1


# --- matches and ordering --------------------------------------------------------------------

def test_query_param_header_and_method_matches() -> None:
    http = only_route(translated(route({
        "matches": [{"path": {"type": "PathPrefix", "value": "/search/"},
                     "method": "POST",
                     "headers": [{"name": "x-tier", "value": "gold"},
                                 {"name": "x-id", "type": "RegularExpression", "value": "[0-9]+"}],
                     "queryParams": [{"name": "q", "value": "shoes"},
                                     {"name": "page", "type": "RegularExpression",
                                      "value": "[1-9]"}]}],
        "backendRefs": [backend()]})))
    assert http["match"] == [{"uri": {"prefix": "/search"},  # createURIMatch drops a trailing /
                              "method": {"exact": "POST"},
                              "headers": {"x-tier": {"exact": "gold"}, "x-id": {"regex": "[0-9]+"}},
                              "queryParams": {"q": {"exact": "shoes"}, "page": {"regex": "[1-9]"}}}]


def test_routes_are_sorted_as_istio_sorts_them() -> None:
    """sortHTTPRoutes: Exact > Prefix > Regex, longer first, then with a method, more headers,
    more query parameters; a rule without matches becomes one route without a match, last."""
    def rule(name: str, **match: Any) -> Obj:
        return {"name": name, "matches": [match] if match else [], "backendRefs": [backend()]}

    out = translated(route(
        rule("no-match"),
        rule("regex", path={"type": "RegularExpression", "value": "/a.*/long/regex"}),
        rule("short-prefix", path={"type": "PathPrefix", "value": "/a"}),
        rule("query", path={"type": "PathPrefix", "value": "/a"}, queryParams=[
            {"name": "q", "value": "1"}]),
        rule("header", path={"type": "PathPrefix", "value": "/a"}, headers=[
            {"name": "h", "value": "1"}]),
        rule("method", path={"type": "PathPrefix", "value": "/a"}, method="GET"),
        rule("long-prefix", path={"type": "PathPrefix", "value": "/a/b"}),
        rule("exact", path={"type": "Exact", "value": "/a"})))
    assert [h["name"] for h in http_routes(out)] == [
        "exact", "long-prefix", "method", "header", "query", "short-prefix", "regex", "no-match"]


def test_routes_of_several_http_routes_merge_into_one_virtual_service() -> None:
    """One VirtualService per (listener, hostname); the older route's rules come first among
    equals (mergeHTTPRoutes, stable sort); auto-named `<ns>.<route>.<rule index>`."""
    older = route({"backendRefs": [backend()]}, name="older")
    newer = route({"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                   "backendRefs": [backend("mirror")]}, name="newer")
    newer["metadata"]["creationTimestamp"] = "2026-01-02T00:00:00Z"
    out = translated(newer, older)
    assert [h["name"] for h in http_routes(out)] == [f"{NS}.newer.0", f"{NS}.older.0"]
    assert listener_status(out)["attachedRoutes"] == 2


# --- timeouts and retries --------------------------------------------------------------------

def test_timeouts() -> None:
    """`request` is the route timeout; `backendRequest` the per-try timeout when the rule
    retries, else the route timeout; zero means none."""
    plain = only_route(translated(route({"timeouts": {"request": "1m30s500ms"},
                                         "backendRefs": [backend()]})))
    assert plain["timeout"] == "90.5s"
    backend_only = only_route(translated(route({"timeouts": {"request": "10s",
                                                             "backendRequest": "2s"},
                                                "backendRefs": [backend()]})))
    assert backend_only["timeout"] == "2s"
    with_retry = only_route(translated(route({"timeouts": {"request": "10s",
                                                           "backendRequest": "250ms"},
                                              "retry": {"attempts": 3},
                                              "backendRefs": [backend()]})))
    assert with_retry["timeout"] == "10s"
    assert with_retry["retries"]["perTryTimeout"] == "0.25s"
    zero = only_route(translated(route({"timeouts": {"request": "0s"},
                                        "backendRefs": [backend()]})))
    assert "timeout" not in zero


def test_retries() -> None:
    """Istio retries on connection errors plus the listed codes, 2 attempts by default."""
    http = only_route(translated(route({"retry": {"codes": [503, 504], "backoff": "100ms"},
                                        "backendRefs": [backend()]})))
    assert http["retries"] == {
        "attempts": 2, "retryOn": "connect-failure,refused-stream,unavailable,cancelled,503,504",
        "backoff": "0.1s"}
    off = only_route(translated(route({"retry": {"attempts": 0}, "backendRefs": [backend()]})))
    assert off["retries"] == {"attempts": 0}


# --- backends and ReferenceGrant ------------------------------------------------------------

def grant(to_name: str | None = "api", from_kind: str = "HTTPRoute") -> Obj:
    return {"metadata": {"name": "allow-shop", "namespace": OTHER},
            "spec": {"from": [{"group": GROUP, "kind": from_kind, "namespace": NS}],
                     "to": [{"group": "", "kind": "Service",
                             **({} if to_name is None else {"name": to_name})}]}}


CROSS = route({"backendRefs": [backend("api", 8080, namespace=OTHER)]})


def test_cross_namespace_backend_needs_a_reference_grant() -> None:
    """buildDestination: without a grant the backend is not routed to (an empty destination:
    500) and ResolvedRefs says RefNotPermitted; the route is still accepted."""
    out = translated(CROSS)
    assert only_route(out)["route"][0]["destination"]["host"] != f"api.{OTHER}.svc.cluster.local"
    assert route_conditions(out)["ResolvedRefs"] == (
        "False", "RefNotPermitted", f'backendRef api/{OTHER} not accessible to a HTTPRoute in '
                                    f'namespace "{NS}" (missing a ReferenceGrant?)')
    assert route_conditions(out)["Accepted"] == ("True", "Accepted", "Route was valid")


@pytest.mark.parametrize("grants, allowed", [
    ([grant()], True), ([grant(None)], True),  # a grant without a name covers every Service
    ([grant("other")], False), ([grant(from_kind="GRPCRoute")], False)])
def test_reference_grant(grants: list[Obj], allowed: bool) -> None:
    out = translated(CROSS, reference_grants=grants)
    host = only_route(out)["route"][0]["destination"]["host"]
    assert (host == f"api.{OTHER}.svc.cluster.local") is allowed
    assert (route_conditions(out)["ResolvedRefs"][0] == "True") is allowed


def test_backend_errors_soft_and_hard() -> None:
    """Missing Service or unsupported kind: routed (500) and reported; a hostname instead of a
    Service name or a missing port: no routes at all (InvalidDestination)."""
    missing = translated(route({"backendRefs": [backend(), backend("gone")]}))
    assert [d["weight"] for d in only_route(missing)["route"]] == [1, 1]
    assert route_conditions(missing)["ResolvedRefs"][1] == "BackendNotFound"
    kind = translated(route({"backendRefs": [backend("bucket", kind="GcsBucket")]}))
    assert route_conditions(kind)["ResolvedRefs"] == (
        "False", "InvalidKind", 'referencing unsupported backendRef: group "" kind "GcsBucket"')
    for ref, message in ((backend("web.shop.svc.cluster.local"), "service name invalid; the name "
                          "of the Service must be used, not the hostname."),
                         (backend(port=None), "port is required in backendRef")):
        out = translated(route({"backendRefs": [ref]}))
        assert out.virtual_services == []
        assert route_conditions(out)["ResolvedRefs"] == ("False", "InvalidDestination", message)


def test_zero_weights_answer_500() -> None:
    http = only_route(translated(route({"backendRefs": [backend(weight=0)]})))
    assert http["directResponse"] == {"status": 500} and "route" not in http


# --- parents ---------------------------------------------------------------------------------

TWO_LISTENERS = gateway(http_listener("http", 80), http_listener("admin", 8080))


@pytest.mark.parametrize("ref, reason, message", [
    ({"name": "gw", "sectionName": "nope"}, "NoMatchingParent",
     'sectionName "nope" not found; sectionName "nope" not found'),
    ({"name": "gw", "port": 9999}, "NoMatchingParent", "port 9999 not found; port 9999 not found"),
])
def test_parent_ref_section_and_port_mismatch(ref: Obj, reason: str, message: str) -> None:
    """referenceAllowed checks port and sectionName first, once per listener; createRouteStatus
    joins the messages of the listeners that failed the same way (Istio's golden files)."""
    out = translated(route({"backendRefs": [backend()]}, parent=ref), gateways=[TWO_LISTENERS])
    assert route_conditions(out)["Accepted"] == ("False", reason, message)
    assert out.virtual_services == []


@pytest.mark.parametrize("ref, bound", [({"name": "gw", "sectionName": "admin"}, [0, 1]),
                                        ({"name": "gw", "port": 80}, [1, 0]),
                                        ({"name": "gw"}, [1, 1])])
def test_parent_ref_binds_the_named_listener(ref: Obj, bound: list[int]) -> None:
    out = translated(route({"backendRefs": [backend()]}, parent=ref), gateways=[TWO_LISTENERS])
    assert [listener_status(out, i)["attachedRoutes"] for i in range(2)] == bound
    accepted = route_conditions(out)["Accepted"]
    assert accepted[:2] == ("True", "Accepted")
    assert accepted[2] == ("Route was valid" if sum(bound) == 1
                           else "Route was valid, bound to 2 parents")
    assert len(out.virtual_services) == sum(bound)


def test_hostname_and_namespace_checks() -> None:
    """Listener hostname vs route hostnames (both may be wildcards); a namespace the listener
    does not admit is NotAllowedByListeners; a selector admitting no namespace gives the
    server the host `~/<hostname>` (buildHostnameMatch), which no route matches."""
    listener = http_listener(hostname="*.example.com")
    out = translated(route({"backendRefs": [backend()]}, hostnames=["shop.example.org"]),
                     gateways=[gateway(listener)])
    assert route_conditions(out)["Accepted"] == (
        "False", "NoMatchingListenerHostname", 'no hostnames matched parent hostname '
                                               '"*.example.com"')
    nobody = http_listener(allowedRoutes={"namespaces": {
        "from": "Selector", "selector": {"matchLabels": {"team": "nobody"}}}})
    out = translated(route({"backendRefs": [backend()]}), gateways=[gateway(nobody)])
    assert out.gateways[0]["spec"]["servers"][0]["hosts"] == ["~/*"]
    assert route_conditions(out)["Accepted"] == (
        "False", "NotAllowedByListeners", 'hostnames matched parent hostname "", but namespace '
                                          f'"{NS}" is not allowed by the parent')


def test_a_parent_ref_to_a_missing_or_foreign_gateway_gets_no_status_entry() -> None:
    """extractParentReferenceInfo only looks up Gateways Istio manages: for a missing one (or
    another controller's) current Istio writes no `parents` entry at all."""
    refs = [{"name": "no-such-gateway"}, {"name": "other"}, {"name": "gw"}]
    web = route({"backendRefs": [backend()]})
    web["spec"]["parentRefs"] = refs
    out = translated(web, gateways=[gateway(), gateway(name="other", cls="not-istio")])
    assert [p["parentRef"] for p in parents(out)] == [{"name": "gw"}]
    alone = translated(route({"backendRefs": [backend()]}, parent={"name": "no-such-gateway"}))
    assert parents(alone) == [] and alone.virtual_services == []


def test_allowed_route_kinds() -> None:
    """generateSupportedKinds: only kinds both allowed and supported; an unsupported one makes
    ResolvedRefs=False (InvalidRouteKinds); a listener without HTTPRoute rejects the route."""
    listener = http_listener(allowedRoutes={"kinds": [{"kind": "GRPCRoute"},
                                                      {"kind": "TCPRoute"}]})
    out = translated(route({"backendRefs": [backend()]}), gateways=[gateway(listener)])
    status = listener_status(out)
    assert status["supportedKinds"] == [{"group": GROUP, "kind": "GRPCRoute"}]
    assert conditions(status)["ResolvedRefs"] == ("False", "InvalidRouteKinds",
                                                  "Invalid route kinds")
    assert route_conditions(out)["Accepted"][:2] == ("False", "NotAllowedByListeners")


def test_unsupported_listener_protocol() -> None:
    """listenerProtocolToIstio: protocols are case sensitive; lower-case gets a hint."""
    out = translated(gateways=[gateway(http_listener(protocol="http"))])
    status = listener_status(out)
    assert conditions(status)["Accepted"] == (
        "False", "UnsupportedProtocol",
        'protocol "http" is unsupported. hint: "HTTP" (uppercase) may be supported')
    assert status["supportedKinds"] == [] and out.gateways == []


# --- HTTPS listeners -------------------------------------------------------------------------

def cert(name: str = "shop-cert", **ref: Any) -> Obj:
    return {"name": name, "kind": "Secret", **ref}


def test_https_listener_terminates_tls_with_the_secret() -> None:
    out = translated(gateways=[gateway(https_listener(cert()))], secrets={(NS, "shop-cert")})
    (server,) = out.gateways[0]["spec"]["servers"]
    assert server == {"port": {"number": 443, "name": "default", "protocol": "HTTPS"},
                      "hosts": [f"{NS}/{HOST}"],
                      "tls": {"mode": "SIMPLE", "credentialName": "shop-cert"}}
    assert {k: v[:2] for k, v in conditions(listener_status(out)).items()} == {
        "Accepted": ("True", "Accepted"), "Conflicted": ("False", "NoConflicts"),
        "Programmed": ("True", "Programmed"), "ResolvedRefs": ("True", "ResolvedRefs")}


@pytest.mark.parametrize("refs, reason, message", [
    ([cert("nonexistent")], "InvalidCertificateRef",
     f"invalid certificate reference /Secret/nonexistent., secret {NS}/nonexistent not found"),
    ([cert("my-cert", group="core", kind="unknown")], "InvalidCertificateRef",
     "invalid certificate reference core/unknown/my-cert., only secret is allowed"),
    ([cert(namespace=OTHER)], "RefNotPermitted",
     f'certificateRef shop-cert/{OTHER} not accessible to a Gateway in namespace "{NS}" '
     "(missing a ReferenceGrant?)"),
    ([cert(), cert(), cert()], "InvalidCertificateRef",
     "TLS mode can only support up to 2 server certificates"),
])
def test_https_listener_with_a_bad_certificate_ref(refs: list[Obj], reason: str,
                                                   message: str) -> None:
    """buildListener: ResolvedRefs=False with buildTLS's message, Programmed=False "Bad TLS
    configuration", Accepted stays True; the listener serves nothing (Istio's golden file
    invalid.status.yaml.golden)."""
    out = translated(gateways=[gateway(https_listener(*refs))],
                     secrets={(NS, "shop-cert"), (OTHER, "shop-cert")})
    found = conditions(listener_status(out))
    assert found["ResolvedRefs"] == ("False", reason, message)
    assert found["Programmed"] == ("False", "Invalid", "Bad TLS configuration")
    assert found["Accepted"] == ("True", "Accepted", "No errors found")
    assert out.gateways == []


# --- the gateway proxy's routes (translation → Envoy) -----------------------------------------

def gateway_pod() -> Obj:
    return {"metadata": {
        "name": "gw-istio-abc", "namespace": NS, "uid": "gw-pod",
        "labels": {"gateway.networking.k8s.io/gateway-name": "gw"},
        "annotations": {HOST_PORTS: json.dumps({"15021": 41001, "80": 41002}),
                        PROXY_PORTS: json.dumps({"admin": 41003, "outbound": 41004})}},
        "spec": {"serviceAccountName": "gw-istio", "containers": [{
            "name": "istio-proxy", "args": ["proxy", "router"],
            "ports": [{"containerPort": 15021}, {"containerPort": 80}]}]}}


def envoy_routes(tmp_path: Path, *rules: Obj) -> list[Obj]:
    pod = gateway_pod()
    gw_service = {"metadata": {"name": "gw-istio", "namespace": NS}, "spec": {
        "selector": {"gateway.networking.k8s.io/gateway-name": "gw"}, "type": "LoadBalancer",
        "ports": [{"name": "http", "port": 80, "nodePort": 31080}]}}
    state = snapshot(route(*rules), pods=[pod])
    state.services.append(gw_service)
    derived, _ = translate(state, set())
    out = build_gateway(derived, pod, ProxyFiles(tmp_path / "xds"), 0)
    (listener, *_) = out.listeners
    (vhost,) = listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"][
        "virtual_hosts"]
    assert vhost["domains"] == [HOST]
    return list(vhost["routes"])


def test_gateway_semantics_in_envoy(tmp_path: Path) -> None:
    """Gateway semantics (route.go): path-separated prefixes, a `%PREFIX()%` redirect as
    Envoy's prefix_rewrite, a prefix rewrite to `/` as a regex, 500 for a missing cluster."""
    plain, redirect, rewrite = envoy_routes(
        tmp_path,
        {"matches": [{"path": {"type": "PathPrefix", "value": "/old"}}],
         "filters": [{"type": "RequestRedirect", "requestRedirect": {
             "statusCode": 301, "path": {"type": "ReplacePrefixMatch",
                                         "replacePrefixMatch": "/new"}}}]},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/app"}}],
         "filters": [{"type": "URLRewrite", "urlRewrite": {
             "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}],
         "backendRefs": [backend()]},
        {"matches": [{"path": {"type": "Exact", "value": "/"}}], "backendRefs": [backend()]})
    assert plain["match"]["path"] == "/"  # Exact first, then the prefixes in rule order
    assert redirect["match"]["path_separated_prefix"] == "/old"
    assert redirect["redirect"] == {"prefix_rewrite": "/new", "response_code": "MOVED_PERMANENTLY"}
    assert rewrite["match"]["path_separated_prefix"] == "/app"
    assert rewrite["route"]["regex_rewrite"] == {"pattern": {"regex": r"^/app\/*"},
                                                 "substitution": "/"}
    assert rewrite["route"]["cluster_not_found_response_code"] == "INTERNAL_SERVER_ERROR"


# --- Kubernetes Ingress ----------------------------------------------------------------------

def ingress(*paths: Obj, default: Obj | None = None, host: str | None = HOST) -> Obj:
    spec: Obj = {"ingressClassName": "istio"}
    if paths:
        spec["rules"] = [{**({"host": host} if host else {}), "http": {"paths": list(paths)}}]
    if default:
        spec["defaultBackend"] = default
    return {"metadata": {"name": "shop", "namespace": NS, "uid": "ing",
                         "creationTimestamp": "2026-01-01T00:00:00Z"}, "spec": spec}


def ingress_path(path: str, kind: str = "ImplementationSpecific", name: str = "web") -> Obj:
    return {"path": path, "pathType": kind,
            "backend": {"service": {"name": name, "port": {"number": 80}}}}


ISTIO_CLASS = [{"metadata": {"name": "istio"},
                "spec": {"controller": "istio.io/ingress-controller"}}]


@pytest.mark.parametrize("path, match", [
    ("/static/*", {"prefix": "/static"}), ("/static.*", {"prefix": "/static"}),
    ("/*", None), ("", None), ("/exact", {"exact": "/exact"})])
def test_ingress_implementation_specific_paths(path: str, match: Obj | None) -> None:
    """createFallbackStringMatch: Istio's legacy path forms."""
    assert fallback_match(path) == match
    _, services, _ = translate_ingresses(MeshState(
        ingresses=[ingress(ingress_path(path))], ingress_classes=ISTIO_CLASS,
        services=[service("web")]))
    (http,) = services[0]["spec"]["http"]
    assert http.get("match") == (None if match is None else [{"uri": match}])


def test_ingress_rules_sorted_and_default_backend_ignored_with_a_warning() -> None:
    """virtualservices.go sortHTTPRoutes: longer paths first, Exact before Prefix at equal
    length; ingress.go RuleCollection ignores `spec.defaultBackend` ("use VirtualService")."""
    web = ingress(ingress_path("/a", "Prefix"), ingress_path("/a/b", "Prefix"),
                  ingress_path("/a", "Exact", "mirror"), host=None,
                  default={"service": {"name": "mirror", "port": {"number": 80}}})
    _, services, warnings = translate_ingresses(MeshState(
        ingresses=[web], ingress_classes=ISTIO_CLASS, services=[service("web"), service("mirror")]))
    (vs,) = services
    assert vs["spec"]["hosts"] == ["*"]
    assert [(h.get("match"), h["route"][0]["destination"]["host"].split(".")[0])
            for h in vs["spec"]["http"]] == [
        ([{"uri": {"prefix": "/a/b"}}], "web"), ([{"uri": {"exact": "/a"}}], "mirror"),
        ([{"uri": {"prefix": "/a"}}], "web")]
    assert [message.split(":")[0] for _, message in warnings] == ["spec.defaultBackend"]
    _, services, warnings = translate_ingresses(MeshState(
        ingresses=[ingress(default={"service": {"name": "web", "port": {"number": 80}}})],
        ingress_classes=ISTIO_CLASS, services=[service("web")]))
    assert services == [] and len(warnings) == 1


def test_ingress_named_port_that_does_not_exist_is_reported() -> None:
    bad = ingress({"path": "/", "pathType": "Prefix",
                   "backend": {"service": {"name": "web", "port": {"name": "grpc"}}}})
    _, services, warnings = translate_ingresses(MeshState(
        ingresses=[bad], ingress_classes=ISTIO_CLASS, services=[service("web")]))
    assert services == [] and "no such named port" in warnings[0][1]


# --- status writer ---------------------------------------------------------------------------

def test_programmed_condition_messages_follow_istio() -> None:
    """setProgrammedCondition / ResolveGatewayInstances: Go-quoted hostnames, ports sorted as
    strings, AddressNotAssigned while the load balancer address is pending, AddressNotUsable
    when a listener port is missing from the Service."""
    gw = gateway(http_listener("http", 80), http_listener("alt", 8080))
    fqdn = f"gw-istio.{NS}.svc.cluster.local"
    svc = service("gw-istio", type="LoadBalancer", clusterIP="10.96.0.7")
    svc["spec"]["ports"] = [{"name": "http", "port": 80}, {"name": "alt", "port": 8080}]
    pending, addresses = programmed_condition(gw, svc, {80, 8080})
    assert (pending["status"], pending["reason"], pending["message"]) == (
        "False", "AddressNotAssigned", f"Assigned to service(s) {fqdn}:80 and {fqdn}:8080, but "
                                       f'failed to assign to all requested addresses: address '
                                       f'pending for hostname "{fqdn}"')
    assert addresses == [{"type": "IPAddress", "value": "10.96.0.7"}]
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}}
    ready, addresses = programmed_condition(gw, svc, {80, 8080})
    assert (ready["status"], ready["message"]) == (
        "True", f"Resource programmed, assigned to service(s) {fqdn}:80 and {fqdn}:8080")
    assert addresses == [{"type": "IPAddress", "value": "127.0.0.1"}]
    missing_port, _ = programmed_condition(gw, svc, {80, 9090})
    assert (missing_port["reason"], missing_port["message"]) == (
        "AddressNotUsable", f"Assigned to service(s) {fqdn}:80, but failed to assign to all "
                            f'requested addresses: port 9090 not found for hostname "{fqdn}"')
    gone, addresses = programmed_condition(gw, None, {80})
    assert (gone["reason"], gone["message"], addresses) == (
        "AddressNotUsable", f'Failed to assign to any requested addresses: hostname "{fqdn}" '
                            "not found", [])


def test_status_writer_forgets_warnings_of_deleted_objects() -> None:
    """Each not-emulated warning becomes one Warning event per object generation; once the
    object is gone the writer forgets it, so its memory stays bounded."""
    api = ObjectApi(Store(None), ResourceRegistry())
    install_course_crds(api)
    rt = api.registry.lookup("", "v1", "namespaces")
    assert rt is not None
    api.create(rt, "", {"metadata": {"name": NS}})
    writer = KubeStatusWriter(api)
    listener = http_listener(allowedRoutes={"namespaces": {"from": "Selector", "selector": {
        "matchExpressions": [{"key": "team", "operator": "Exists"}]}}})
    state = snapshot(gateways=[gateway(listener)])
    out = translate_gateway_api(state, set())
    assert len(out.not_emulated) == 1
    events = api.registry.lookup("", "v1", "events")
    assert events is not None

    def warnings() -> int:
        return sum(1 for e in api.list(events, NS)[0] if e.get("type") == "Warning")

    for _ in range(2):
        writer.reconcile(out, [], [])
    assert warnings() == 1 and len(writer._warned) == 1
    writer.reconcile(translate_gateway_api(snapshot(gateways=[]), set()), [], [])
    assert writer._warned == set()
