"""Outbound clusters and routes: Istio's VirtualService / DestinationRule / ServiceEntry semantics
as Envoy configuration, checked on the generated dicts and with real traffic through a real Envoy
programmed from the same files a sidecar reads."""

from __future__ import annotations

import http.client
import importlib.resources
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from labs.embedded.loopback import free_port
from labs.embedded.mesh.ca import MeshCA
from labs.embedded.mesh.istio.state import MeshState
from labs.embedded.mesh.istio.xds.clusters import build_outbound
from labs.embedded.mesh.istio.xds.diagnostics import outbound_warnings
from labs.embedded.mesh.istio.xds.unsupported import unsupported_fields
from labs.embedded.mesh.kube_state import Obj
from labs.embedded.mesh.proxyfiles import ProxyFiles
from labs.embedded.mesh.tls import mutual_downstream

ENVOY = str(importlib.resources.files("envoy._bin") / "envoy")
NS = "default"
REVIEWS = "reviews.default.svc.cluster.local"
TS = "2024-01-01T00:00:0{}Z"


# -- building a MeshState ------------------------------------------------------------------------
def pod(name: str, labels: dict[str, str], *, ns: str = NS, sa: str = "default",
        meshed: bool = False) -> Obj:
    containers = [{"name": "app"}] + ([{"name": "istio-proxy"}] if meshed else [])
    return {"metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"containers": containers, "serviceAccountName": sa}}


def service(name: str, ports: list[int], *, ns: str = NS, cluster_ip: str = "") -> Obj:
    return {"metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": cluster_ip, "ports": [
                {"name": f"http-{p}", "port": p} for p in ports]}}


def endpoints(svc: Obj, backends: list[tuple[Obj, int]]) -> Obj:
    """One Endpoints subset per backend: the pod behind 127.0.0.1:<host port>, for every port."""
    meta = svc["metadata"]
    return {"metadata": {"name": meta["name"], "namespace": meta["namespace"]}, "subsets": [
        {"addresses": [{"ip": "127.0.0.1", "targetRef": {
            "kind": "Pod", "name": p["metadata"]["name"],
            "namespace": p["metadata"]["namespace"]}}],
         "ports": [{"name": sp["name"], "port": port} for sp in svc["spec"]["ports"]]}
        for p, port in backends]}


def istio(kind: str, name: str, spec: Obj, *, ns: str = NS, age: int = 0) -> Obj:
    return {"apiVersion": "networking.istio.io/v1", "kind": kind,
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": TS.format(age)},
            "spec": spec}


def mesh(services: list[tuple[Obj, list[tuple[Obj, int]]]], *objs: Obj,
         client: Obj | None = None) -> MeshState:
    pods = [p for _, backends in services for p, _ in backends] + ([client] if client else [])
    by_kind: dict[str, list[Obj]] = {}
    for obj in objs:
        by_kind.setdefault(obj["kind"], []).append(obj)
    return MeshState(
        services=[s for s, _ in services], endpoints=[endpoints(s, b) for s, b in services],
        pods=pods, virtual_services=by_kind.get("VirtualService", []),
        destination_rules=by_kind.get("DestinationRule", []),
        service_entries=by_kind.get("ServiceEntry", []),
        peer_authentications=by_kind.get("PeerAuthentication", []))


CLIENT = pod("curl", {"app": "curl"}, meshed=True)
FILES = ProxyFiles(Path("/nonexistent/xds"))


def reviews_state(*objs: Obj, meshed: bool = False, client: Obj = CLIENT) -> MeshState:
    backends = [(pod(f"reviews-{v}", {"app": "reviews", "version": v}, sa="bookinfo-reviews",
                     meshed=meshed), 20000 + i) for i, v in enumerate(("v1", "v2", "v3"))]
    return mesh([(service("reviews", [9080], cluster_ip="127.96.0.10"), backends)], *objs,
                client=client)


def subsets_dr(**policy: Obj) -> Obj:
    return istio("DestinationRule", "reviews", {"host": "reviews", **policy, "subsets": [
        {"name": v, "labels": {"version": v}} for v in ("v1", "v2", "v3")]})


def by_name(items: list[Obj]) -> dict[str, Obj]:
    return {i["name"]: i for i in items}


def vhost(routes: list[Obj], host: str = f"{REVIEWS}:9080") -> Obj:
    return by_name(routes[0]["virtual_hosts"])[host]


# -- unit tests on the generated configuration -----------------------------------------------------
def test_clusters_are_named_like_istio_with_inline_endpoints_and_tls_metadata() -> None:
    clusters, routes = build_outbound(reviews_state(subsets_dr(), meshed=True), CLIENT, FILES)
    named = by_name(clusters)
    assert {f"outbound|9080||{REVIEWS}", f"outbound|9080|v2|{REVIEWS}"} <= set(named)
    main = named[f"outbound|9080||{REVIEWS}"]
    assert main["lb_policy"] == "LEAST_REQUEST"
    lb = main["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [e["endpoint"]["address"]["socket_address"]["port_value"] for e in lb] == [
        20000, 20001, 20002]
    assert lb[0]["metadata"] == {"filter_metadata": {
        "envoy.transport_socket_match": {"tlsMode": "istio"}}}
    v2 = named[f"outbound|9080|v2|{REVIEWS}"]["load_assignment"]["endpoints"][0]
    assert [e["endpoint"]["address"]["socket_address"]["port_value"]
            for e in v2["lb_endpoints"]] == [20001]
    matches = main["transport_socket_matches"]
    assert [m["match"] for m in matches] == [{"tlsMode": "istio"}, {}]
    tls = matches[0]["transport_socket"]["typed_config"]
    assert tls["sni"] == f"outbound_.9080_._.{REVIEWS}"
    sans = tls["common_tls_context"]["combined_validation_context"][
        "default_validation_context"]["match_typed_subject_alt_names"]
    assert sans == [{"san_type": "URI", "matcher": {
        "exact": "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"}}]
    assert routes[0]["name"] == "outbound"


def test_virtual_host_domains_short_names_only_in_own_namespace() -> None:
    other = service("ratings", [80], ns="other", cluster_ip="127.96.0.11")
    state = mesh([(service("reviews", [9080], cluster_ip="127.96.0.10"), []), (other, [])],
                 client=CLIENT)
    _, routes = build_outbound(state, CLIENT, FILES)
    assert set(vhost(routes)["domains"]) == {
        f"{REVIEWS}:9080", "reviews.default.svc:9080", "reviews.default:9080", "reviews:9080",
        "127.96.0.10:9080"}
    ratings = vhost(routes, "ratings.other.svc.cluster.local:80")["domains"]
    assert "ratings.other" in ratings and "ratings.other:80" in ratings
    assert "ratings" not in ratings and "ratings:80" not in ratings


def test_default_route_has_istio_retries_and_no_timeout() -> None:
    _, routes = build_outbound(reviews_state(), CLIENT, FILES)
    [route] = vhost(routes)["routes"]
    assert route["route"]["cluster"] == f"outbound|9080||{REVIEWS}"
    assert route["route"]["timeout"] == "0s"
    retry = route["route"]["retry_policy"]
    assert retry["num_retries"] == 2 and "retriable_status_codes" not in retry  # Istio ≥ 1.24
    assert retry["retry_on"] == ("connect-failure,refused-stream,unavailable,cancelled,"
                                 "retriable-status-codes")
    assert vhost(routes)["include_request_attempt_count"] is True


def test_weighted_split_and_header_match_translation() -> None:
    vs = istio("VirtualService", "reviews", {"hosts": ["reviews"], "http": [
        {"match": [{"headers": {"end-user": {"exact": "jason"}}, "uri": {"prefix": "/api"},
                    "method": {"exact": "GET"}, "queryParams": {"q": {"regex": "a.*"}},
                    "withoutHeaders": {"x-skip": {"exact": "1"}}, "ignoreUriCase": True}],
         "route": [{"destination": {"host": "reviews", "subset": "v2"}}]},
        {"route": [{"destination": {"host": "reviews", "subset": "v1"}, "weight": 80},
                   {"destination": {"host": "reviews", "subset": "v3"}, "weight": 20},
                   {"destination": {"host": "reviews", "subset": "v2"}, "weight": 0}]}]})
    _, routes = build_outbound(reviews_state(vs, subsets_dr()), CLIENT, FILES)
    header_route, split = vhost(routes)["routes"]
    match = header_route["match"]
    assert match["prefix"] == "/api" and match["case_sensitive"] is False
    assert {"name": "end-user", "string_match": {"exact": "jason"}} in match["headers"]
    assert {"name": ":method", "string_match": {"exact": "GET"}} in match["headers"]
    assert {"name": "x-skip", "string_match": {"exact": "1"}, "invert_match": True,
            "treat_missing_header_as_empty": True} in match["headers"]
    assert match["query_parameters"] == [{"name": "q", "string_match": {
        "safe_regex": {"regex": "a.*"}}}]
    assert header_route["route"]["cluster"] == f"outbound|9080|v2|{REVIEWS}"
    weighted = split["route"]["weighted_clusters"]
    assert weighted == {"clusters": [{"name": f"outbound|9080|v1|{REVIEWS}", "weight": 80},
                                     {"name": f"outbound|9080|v3|{REVIEWS}", "weight": 20}]}


def test_source_labels_drop_the_route_for_other_proxies_and_gateways_only_vs_is_ignored() -> None:
    vs = istio("VirtualService", "reviews", {"hosts": ["reviews"], "http": [
        {"match": [{"sourceLabels": {"app": "productpage"}}],
         "route": [{"destination": {"host": "reviews", "subset": "v2"}}]},
        {"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]})
    productpage = pod("productpage", {"app": "productpage"}, meshed=True)
    _, for_pp = build_outbound(reviews_state(vs, client=productpage), productpage, FILES)
    _, for_curl = build_outbound(reviews_state(vs), CLIENT, FILES)
    # for productpage the sourceLabels route is a catch-all, so nothing follows it (as in Istio)
    assert [r["route"]["cluster"] for r in vhost(for_pp)["routes"]] == [
        f"outbound|9080|v2|{REVIEWS}"]
    assert [r["route"]["cluster"] for r in vhost(for_curl)["routes"]] == [
        f"outbound|9080|v1|{REVIEWS}"]
    gateway_only = istio("VirtualService", "gw", {"hosts": ["reviews"], "gateways": ["bookinfo"],
                                                  "http": [{"fault": {}, "route": [
                                                      {"destination": {"host": "x"}}]}]})
    _, routes = build_outbound(reviews_state(gateway_only), CLIENT, FILES)
    assert vhost(routes)["routes"][0]["name"] == "default"


def test_export_to_dot_hides_the_virtual_service_from_other_namespaces() -> None:
    vs = istio("VirtualService", "reviews", {
        "hosts": ["reviews.default.svc.cluster.local"], "exportTo": ["."],
        "http": [{"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]})
    stranger = pod("curl", {"app": "curl"}, ns="other", meshed=True)
    _, routes = build_outbound(reviews_state(vs, client=stranger), stranger, FILES)
    assert vhost(routes)["routes"][0]["name"] == "default"
    _, routes = build_outbound(reviews_state(vs), CLIENT, FILES)
    assert vhost(routes)["routes"][0]["route"]["cluster"].startswith("outbound|9080|v1|")


def test_oldest_virtual_service_wins_and_the_other_is_reported() -> None:
    old = istio("VirtualService", "a", {"hosts": ["reviews"], "http": [
        {"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]}, age=1)
    new = istio("VirtualService", "b", {"hosts": ["reviews"], "http": [
        {"route": [{"destination": {"host": "reviews", "subset": "v2"}}]}]}, age=2)
    state = reviews_state(new, old)
    _, routes = build_outbound(state, CLIENT, FILES)
    assert vhost(routes)["routes"][0]["route"]["cluster"] == f"outbound|9080|v1|{REVIEWS}"
    assert any(obj is new and "older VirtualService default/a" in msg
               for obj, msg in outbound_warnings(state))


def test_timeout_retries_fault_mirror_rewrite_headers() -> None:
    vs = istio("VirtualService", "reviews", {"hosts": ["reviews"], "http": [{
        "timeout": "1.5s",
        "retries": {"attempts": 3, "perTryTimeout": "500ms", "retryOn": "gateway-error,503"},
        "fault": {"delay": {"fixedDelay": "7s", "percentage": {"value": 0.1}},
                  "abort": {"httpStatus": 500, "percentage": {"value": 50}}},
        "mirror": {"host": "reviews", "subset": "v3"}, "mirrorPercentage": {"value": 25},
        "rewrite": {"uri": "/v2", "authority": "reviews.internal"},
        "headers": {"request": {"set": {"x-a": "1"}, "remove": ["x-b"]},
                    "response": {"add": {"x-c": "2"}}},
        "route": [{"destination": {"host": "reviews", "subset": "v1"},
                   "headers": {"request": {"add": {"x-d": "3"}}}}]}]})
    _, routes = build_outbound(reviews_state(vs, subsets_dr()), CLIENT, FILES)
    [route] = vhost(routes)["routes"]
    action = route["route"]
    assert action["timeout"] == "1.5s"
    assert action["retry_policy"]["num_retries"] == 3
    assert action["retry_policy"]["per_try_timeout"] == "0.5s"
    assert action["retry_policy"]["retry_on"] == "gateway-error,retriable-status-codes"
    assert action["retry_policy"]["retriable_status_codes"] == [503]
    fault = route["typed_per_filter_config"]["envoy.filters.http.fault"]
    assert fault["delay"] == {"fixed_delay": "7s",
                              "percentage": {"numerator": 1000, "denominator": "MILLION"}}
    assert fault["abort"] == {"http_status": 500,
                              "percentage": {"numerator": 500000, "denominator": "MILLION"}}
    assert action["request_mirror_policies"] == [{
        "cluster": f"outbound|9080|v3|{REVIEWS}", "trace_sampled": False,
        "runtime_fraction": {"default_value": {"numerator": 250000, "denominator": "MILLION"}}}]
    assert action["prefix_rewrite"] == "/v2"
    assert action["host_rewrite_literal"] == "reviews.internal"
    assert [h["header"]["key"] for h in route["request_headers_to_add"]] == ["x-a", "x-d"]
    assert route["request_headers_to_remove"] == ["x-b"]
    assert route["response_headers_to_add"][0]["append_action"] == "APPEND_IF_EXISTS_OR_ADD"


def test_retries_attempts_zero_disables_and_redirect() -> None:
    vs = istio("VirtualService", "reviews", {"hosts": ["reviews"], "http": [
        {"match": [{"uri": {"exact": "/old"}}],
         "redirect": {"uri": "/new", "authority": "ratings:9080", "redirectCode": 302}},
        {"retries": {"attempts": 0}, "route": [{"destination": {"host": "reviews"}}]}]})
    _, routes = build_outbound(reviews_state(vs), CLIENT, FILES)
    redirect, plain = vhost(routes)["routes"]
    assert redirect["redirect"] == {"path_redirect": "/new", "host_redirect": "ratings:9080",
                                    "response_code": "FOUND"}
    assert redirect["match"]["path"] == "/old"
    assert "retry_policy" not in plain["route"]


def test_destination_rule_policies() -> None:
    dr = subsets_dr(trafficPolicy={
        "loadBalancer": {"simple": "ROUND_ROBIN"},
        "connectionPool": {"tcp": {"maxConnections": 1, "connectTimeout": "250ms"},
                           "http": {"http1MaxPendingRequests": 2, "http2MaxRequests": 3,
                                    "maxRequestsPerConnection": 4, "maxRetries": 5}},
        "outlierDetection": {"consecutive5xxErrors": 2, "interval": "1s",
                             "baseEjectionTime": "3m", "maxEjectionPercent": 100},
        "portLevelSettings": [{"port": {"number": 9080},
                               "loadBalancer": {"simple": "RANDOM"}}]})
    dr["spec"]["subsets"][1]["trafficPolicy"] = {
        "loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}}}
    clusters, routes = build_outbound(reviews_state(dr), CLIENT, FILES)
    named = by_name(clusters)
    main = named[f"outbound|9080||{REVIEWS}"]
    assert main["lb_policy"] == "RANDOM"  # port-level settings override the rule's
    assert main["connect_timeout"] == "0.25s"
    assert main["circuit_breakers"]["thresholds"][0] == {
        "max_connections": 1, "max_pending_requests": 2, "max_requests": 3, "max_retries": 5,
        "track_remaining": True}
    options = main["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert options["common_http_protocol_options"] == {"max_requests_per_connection": 4}
    assert main["outlier_detection"] == {
        "enforcing_success_rate": 0, "consecutive_5xx": 2, "enforcing_consecutive_5xx": 100,
        "interval": "1s", "base_ejection_time": "180s", "max_ejection_percent": 100}
    assert main["common_lb_config"] == {"healthy_panic_threshold": {"value": 0}}
    v2 = named[f"outbound|9080|v2|{REVIEWS}"]
    assert v2["lb_policy"] == "RING_HASH"
    assert v2["circuit_breakers"]["thresholds"][0]["max_connections"] == 1  # inherited
    vs = istio("VirtualService", "reviews", {"hosts": ["reviews"], "http": [
        {"route": [{"destination": {"host": "reviews", "subset": "v2"}}]}]})
    _, routes = build_outbound(reviews_state(dr, vs), CLIENT, FILES)
    action = vhost(routes)["routes"][0]["route"]
    assert action["hash_policy"] == [{"header": {"header_name": "x-user"}}]
    assert "retry_host_predicate" not in action["retry_policy"]


def test_tls_modes_and_namespace_mtls_inference() -> None:
    for mode, expect in (("ISTIO_MUTUAL", "transport_socket"), ("DISABLE", None)):
        dr = istio("DestinationRule", "r", {"host": "reviews", "trafficPolicy": {
            "tls": {"mode": mode}}})
        clusters, _ = build_outbound(reviews_state(dr, meshed=True), CLIENT, FILES)
        main = by_name(clusters)[f"outbound|9080||{REVIEWS}"]
        assert "transport_socket_matches" not in main
        assert (expect in main) if expect else "transport_socket" not in main
    disabled = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                "metadata": {"name": "default", "namespace": NS},
                "spec": {"mtls": {"mode": "DISABLE"}}}
    clusters, _ = build_outbound(reviews_state(disabled, meshed=True), CLIENT, FILES)
    assert "transport_socket_matches" not in by_name(clusters)[f"outbound|9080||{REVIEWS}"]


def test_destination_rule_lookup_prefers_the_proxy_namespace_then_the_host_namespace() -> None:
    in_host_ns = istio("DestinationRule", "host-ns", {"host": "reviews", "trafficPolicy": {
        "loadBalancer": {"simple": "RANDOM"}}})
    elsewhere = istio("DestinationRule", "elsewhere", {
        "host": REVIEWS, "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}},
        ns="third")
    own = istio("DestinationRule", "own", {"host": REVIEWS, "trafficPolicy": {
        "loadBalancer": {"simple": "ROUND_ROBIN"}}}, ns="other")
    stranger = pod("curl", {"app": "curl"}, ns="other", meshed=True)
    for rules, proxy, expect in (((in_host_ns, elsewhere), CLIENT, "RANDOM"),
                                 ((in_host_ns, elsewhere), stranger, "RANDOM"),
                                 ((in_host_ns, own), stranger, "ROUND_ROBIN")):
        clusters, _ = build_outbound(reviews_state(*rules, client=proxy), proxy, FILES)
        assert by_name(clusters)[f"outbound|9080||{REVIEWS}"]["lb_policy"] == expect


def test_forwarder_is_plain_round_robin_with_connect_tunnels() -> None:
    clusters, routes = build_outbound(reviews_state(subsets_dr(), meshed=True), None, None)
    assert [c["name"] for c in clusters] == [f"outbound|9080||{REVIEWS}"]
    assert clusters[0]["lb_policy"] == "ROUND_ROBIN"
    assert "transport_socket_matches" not in clusters[0]
    assert routes[0]["name"] == "forwarder"
    connect, plain = routes[0]["virtual_hosts"][0]["routes"]
    assert connect["match"] == {"connect_matcher": {}}
    assert connect["route"]["upgrade_configs"] == [{"upgrade_type": "CONNECT",
                                                    "connect_config": {}}]
    assert "reviews:9080" in routes[0]["virtual_hosts"][0]["domains"]
    assert "retry_policy" not in plain["route"]


def test_service_entry_loopback_endpoints_only() -> None:
    entry = istio("ServiceEntry", "ext", {
        "hosts": ["api.example.com"], "location": "MESH_EXTERNAL", "resolution": "STATIC",
        "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
        "endpoints": [{"address": "127.0.0.1", "ports": {"http": 18080}},
                      {"address": "203.0.113.7"}]})
    state = reviews_state(entry)
    clusters, routes = build_outbound(state, CLIENT, FILES)
    cluster = by_name(clusters)["outbound|80||api.example.com"]
    [endpoint] = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert endpoint["endpoint"]["address"]["socket_address"] == {
        "address": "127.0.0.1", "port_value": 18080}
    assert "transport_socket_matches" not in cluster  # mesh-external: no auto-mTLS
    assert "api.example.com" in vhost(routes, "api.example.com:80")["domains"]
    assert any(obj is entry and "203.0.113.7" in msg for obj, msg in outbound_warnings(state))
    assert "spec.endpoints[1].address=203.0.113.7" in unsupported_fields(entry)


def test_unsupported_fields_and_bad_values_are_reported() -> None:
    vs = istio("VirtualService", "v", {"hosts": ["reviews.default"], "tcp": [{}], "http": [
        {"corsPolicy": {"allowOrigins": []}, "timeout": "soon",
         "route": [{"destination": {"host": "reviews"}}]}]})
    assert unsupported_fields(vs) == ["spec.tcp", "spec.http[0].corsPolicy"]
    dr = istio("DestinationRule", "d", {"host": "reviews", "trafficPolicy": {
        "tls": {"mode": "SIMPLE"}}})
    assert unsupported_fields(dr) == ["spec.trafficPolicy.tls.mode=SIMPLE"]
    messages = [m for o, m in outbound_warnings(reviews_state(vs, dr)) if o is vs]
    assert any("'soon' is not a duration" in m for m in messages)
    assert any("matches no Service" in m and "single-label" in m for m in messages)


# -- real Envoy ----------------------------------------------------------------------------------
def wrap(resources: list[Obj], type_name: str) -> str:
    return json.dumps({"resources": [{"@type": f"type.googleapis.com/{type_name}", **r}
                                     for r in resources]})


def proxy_listener(port: int, rds_file: Path) -> Obj:
    from labs.embedded.mesh.tls import file_config_source
    return {"name": "outbound", "address": {"socket_address": {
        "address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network."
                     "http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "outbound",
            "rds": {"route_config_name": "outbound", "config_source": file_config_source(rds_file)},
            "http_filters": [
                {"name": "envoy.filters.http.fault", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3."
                             "HTTPFault"}},
                {"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3."
                             "Router"}}]}}]}]}


def validate(clusters: list[Obj], routes: list[Obj], tmp: Path) -> None:
    """`envoy --mode validate` on the clusters and routes as static resources."""
    listener = proxy_listener(free_port(), tmp / "unused.yaml")
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    del hcm["rds"]
    hcm["route_config"] = routes[0]
    path = tmp / "validate.json"
    path.write_text(json.dumps({"node": {"id": "validate", "cluster": "test"},
                                "static_resources": {"clusters": clusters,
                                                     "listeners": [listener]}}))
    result = subprocess.run([ENVOY, "--mode", "validate", "-c", str(path), "--log-level",
                             "error"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


class Envoy:
    """A real Envoy reading file-based xDS like a sidecar: lds/cds/rds files in one directory."""

    def __init__(self, files: ProxyFiles, clusters: list[Obj], routes: list[Obj]) -> None:
        self.port, self.admin = free_port(), free_port()
        files.xds_dir.mkdir(parents=True, exist_ok=True)
        files.cds.write_text(wrap(clusters, "envoy.config.cluster.v3.Cluster"))
        files.rds.write_text(wrap(routes, "envoy.config.route.v3.RouteConfiguration"))
        files.lds.write_text(wrap([proxy_listener(self.port, files.rds)],
                                  "envoy.config.listener.v3.Listener"))
        self.process = start_envoy(files.xds_dir, self.admin, files)

    def stats(self) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=5)
        conn.request("GET", "/stats")
        return conn.getresponse().read().decode()

    def stop(self) -> None:
        stop(self.process)


def start_envoy(directory: Path, admin: int, files: ProxyFiles) -> subprocess.Popen[bytes]:
    from labs.embedded.mesh.tls import file_config_source
    bootstrap = directory / "bootstrap.json"
    bootstrap.write_text(json.dumps({
        "node": {"id": directory.name, "cluster": "test"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "dynamic_resources": {"lds_config": file_config_source(files.lds),
                              "cds_config": file_config_source(files.cds)}}))
    process = subprocess.Popen(
        [ENVOY, "-c", str(bootstrap), "--concurrency", "1", "--disable-hot-restart",
         "--reject-unknown-dynamic-fields", "--drain-time-s", "1", "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=open(directory / "envoy.log", "wb"))  # noqa: SIM115
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=1)
            conn.request("GET", "/ready")
            if conn.getresponse().status == 200:
                return process
        except OSError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.02)
    stop(process)
    pytest.fail(f"Envoy did not become ready:\n{(directory / 'envoy.log').read_text()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Client:
    """An app calling through its sidecar: absolute-form HTTP/1.1 on one kept-alive connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def get(self, url: str, headers: dict[str, str] | None = None,
            ) -> tuple[int, dict[str, str], str]:
        authority = url.split("/")[2]
        self.conn.request("GET", url, headers={"Host": authority, **(headers or {})})
        response = self.conn.getresponse()
        return response.status, dict(response.headers), response.read().decode()

    def pod(self, url: str, headers: dict[str, str] | None = None) -> str:
        status, _, body = self.get(url, headers)
        return json.loads(body)["hostname"] if status == 200 else str(status)


def pods_answering(port: int, url: str, n: int, workers: int = 10) -> Counter[str]:
    """`n` requests over `workers` parallel connections (the echo twin answers in two TCP
    writes, so one kept-alive connection pays a delayed-ACK wait per request)."""
    def batch(count: int) -> list[str]:
        client = Client(port)
        return [client.pod(url) for _ in range(count)]

    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(batch, [n // workers] * workers)
    return Counter(name for names in results for name in names)


@pytest.fixture(scope="module")
def echo_ports() -> Iterator[dict[str, int]]:
    """Three echo servers standing in for reviews v1, v2, v3 (each names its pod)."""
    ports = {v: free_port() for v in ("v1", "v2", "v3")}
    processes = [subprocess.Popen(
        [sys.executable, "-m", "labs.embedded.apps.echo", "--port", str(port)],
        env={**os.environ, "MESHLAB_POD_NAME": f"reviews-{v}"}, stdout=subprocess.DEVNULL)
        for v, port in ports.items()]
    try:
        for port in ports.values():
            deadline = time.monotonic() + 10
            while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
                assert time.monotonic() < deadline, "echo server did not start"
                time.sleep(0.02)
        yield ports
    finally:
        for process in processes:
            process.terminate()
            process.wait(5)


class Scripted(BaseHTTPRequestHandler):
    """A backend whose answer is a function of the request count: flaky, slow or recording."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        server: ScriptedServer = self.server  # type: ignore[assignment]
        with server.lock:
            server.seen.append((self.path, self.headers.get("Host", "")))
            count = len(server.seen)
        status, delay = server.behaviour(count)
        time.sleep(delay)
        body = json.dumps({"hostname": server.name}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, name: str, behaviour: Callable[[int], tuple[int, float]]) -> None:
        super().__init__(("127.0.0.1", 0), Scripted)
        self.name, self.behaviour = name, behaviour
        self.seen: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@pytest.fixture
def scripted() -> Iterator[Callable[[str, Callable[[int], tuple[int, float]]], ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def make(name: str, behaviour: Callable[[int], tuple[int, float]]) -> ScriptedServer:
        servers.append(ScriptedServer(name, behaviour))
        return servers[-1]

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def run_envoy(tmp_path: Path) -> Iterator[Callable[[MeshState], Client]]:
    """Build a sidecar's outbound config from a MeshState, validate it, serve it from a real
    Envoy and return a client of its outbound HTTP-proxy listener."""
    envoys: list[Envoy] = []

    def run(state: MeshState) -> Client:
        files = ProxyFiles(tmp_path / f"xds{len(envoys)}")
        MeshCA.load_or_create(tmp_path / "ca").write_sds(
            files, MeshCA.load_or_create(tmp_path / "ca").issue(NS, "curl"))
        clusters, routes = build_outbound(state, CLIENT, files)
        validate(clusters, routes, tmp_path)
        envoys.append(Envoy(files, clusters, routes))
        return Client(envoys[-1].port)

    run.envoys = envoys  # type: ignore[attr-defined]
    yield run
    for envoy in envoys:
        envoy.stop()


def echo_state(ports: dict[str, int], *objs: Obj) -> MeshState:
    backends = [(pod(f"reviews-{v}", {"app": "reviews", "version": v}), port)
                for v, port in ports.items()]
    return mesh([(service("reviews", [9080]), backends)], *objs, client=CLIENT)


URL = "http://reviews:9080"


def test_real_envoy_weighted_split_and_header_routing(echo_ports: dict[str, int],
                                                      run_envoy: Callable) -> None:
    vs = istio("VirtualService", "reviews", {"hosts": ["reviews"], "http": [
        {"match": [{"headers": {"end-user": {"exact": "jason"}}}],
         "route": [{"destination": {"host": "reviews", "subset": "v2"}}]},
        {"route": [{"destination": {"host": "reviews", "subset": "v1"}, "weight": 80},
                   {"destination": {"host": "reviews", "subset": "v3"}, "weight": 20}]}]})
    client = run_envoy(echo_state(echo_ports, vs, subsets_dr()))
    counts = pods_answering(client.port, f"{URL}/reviews/0", 300)
    assert set(counts) == {"reviews-v1", "reviews-v3"}
    assert 0.72 <= counts["reviews-v1"] / 300 <= 0.88, counts
    assert {client.pod(f"{URL}/", {"end-user": "jason"}) for _ in range(20)} == {"reviews-v2"}


def test_real_envoy_prefix_match_rewrite_redirect_and_404(echo_ports: dict[str, int],
                                                         run_envoy: Callable) -> None:
    vs = istio("VirtualService", "reviews", {"hosts": ["reviews"], "http": [
        {"match": [{"uri": {"exact": "/old"}}], "redirect": {"uri": "/new"}},
        {"match": [{"uri": {"prefix": "/api/"}}], "rewrite": {"uri": "/"},
         "headers": {"request": {"set": {"x-routed": "api"}}},
         "route": [{"destination": {"host": "reviews", "subset": "v3"}}]}]})
    client = run_envoy(echo_state(echo_ports, vs, subsets_dr()))
    status, _, body = client.get(f"{URL}/api/ratings")
    echoed = json.loads(body)
    assert (status, echoed["hostname"], echoed["path"]) == (200, "reviews-v3", "/ratings")
    assert echoed["headers"]["x-routed"] == "api"
    status, headers, _ = client.get(f"{URL}/old")
    assert status == 301 and headers["location"].endswith("/new")
    assert client.get(f"{URL}/other")[0] == 404  # no VirtualService route matches: NR


def test_real_envoy_fault_abort_and_delay(echo_ports: dict[str, int],
                                          run_envoy: Callable) -> None:
    vs = istio("VirtualService", "reviews", {"hosts": ["reviews"], "http": [
        {"match": [{"uri": {"prefix": "/abort"}}],
         "fault": {"abort": {"httpStatus": 503, "percentage": {"value": 100}}},
         "route": [{"destination": {"host": "reviews"}}]},
        {"fault": {"delay": {"fixedDelay": "300ms", "percentage": {"value": 100}}},
         "route": [{"destination": {"host": "reviews"}}]}]})
    client = run_envoy(echo_state(echo_ports, vs))
    assert client.get(f"{URL}/abort")[0] == 503
    started = time.monotonic()
    assert client.get(f"{URL}/slow")[0] == 200
    assert time.monotonic() - started >= 0.28  # Envoy's timers have millisecond granularity


def test_real_envoy_timeout_gives_504(scripted: Callable, run_envoy: Callable) -> None:
    slow = scripted("slow", lambda n: (200, 1.0))
    vs = istio("VirtualService", "reviews", {"hosts": ["reviews"], "http": [
        {"timeout": "0.2s", "route": [{"destination": {"host": "reviews"}}]}]})
    client = run_envoy(mesh([(service("reviews", [9080]), [(pod("slow", {}), slow.port)])],
                            vs, client=CLIENT))
    started = time.monotonic()
    assert client.get(f"{URL}/")[0] == 504
    assert time.monotonic() - started < 0.9


def test_real_envoy_retries_lower_the_error_rate(scripted: Callable,
                                                 run_envoy: Callable) -> None:
    """A backend failing every other request: no retries → half fail; retries → none."""
    flaky = scripted("flaky", lambda n: (503 if n % 2 else 200, 0.0))
    state = mesh([(service("reviews", [9080]), [(pod("flaky", {}), flaky.port)])],
                 istio("VirtualService", "reviews", {"hosts": ["reviews"], "http": [
                     {"match": [{"uri": {"prefix": "/none"}}], "retries": {"attempts": 0},
                      "route": [{"destination": {"host": "reviews"}}]},
                     {"retries": {"attempts": 3, "retryOn": "5xx"},
                      "route": [{"destination": {"host": "reviews"}}]}]}), client=CLIENT)
    client = run_envoy(state)
    without = Counter(client.get(f"{URL}/none")[0] for _ in range(40))
    with_retries = Counter(client.get(f"{URL}/retried")[0] for _ in range(40))
    assert without[503] >= 15
    assert with_retries == {200: 40}


def test_real_envoy_mirror(echo_ports: dict[str, int], scripted: Callable,
                           run_envoy: Callable) -> None:
    shadow = scripted("shadow", lambda n: (200, 0.0))
    state = mesh([(service("reviews", [9080]), [(pod("r1", {}), echo_ports["v1"])]),
                  (service("shadow", [9080]), [(pod("s1", {}), shadow.port)])],
                 istio("VirtualService", "reviews", {"hosts": ["reviews"], "http": [
                     {"mirror": {"host": "shadow"}, "mirrorPercentage": {"value": 100},
                      "route": [{"destination": {"host": "reviews"}}]}]}), client=CLIENT)
    client = run_envoy(state)
    assert {client.pod(f"{URL}/m{i}") for i in range(5)} == {"reviews-v1"}
    deadline = time.monotonic() + 5
    while len(shadow.seen) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sorted(p for p, _ in shadow.seen) == [f"/m{i}" for i in range(5)]
    assert all(host.startswith("reviews-shadow") for _, host in shadow.seen)


def test_real_envoy_outlier_detection_ejects_the_failing_host(
        echo_ports: dict[str, int], scripted: Callable, run_envoy: Callable) -> None:
    broken = scripted("broken", lambda n: (500, 0.0))
    dr = istio("DestinationRule", "reviews", {"host": "reviews", "trafficPolicy": {
        "loadBalancer": {"simple": "ROUND_ROBIN"},
        "outlierDetection": {"consecutive5xxErrors": 1, "interval": "1s",
                             "baseEjectionTime": "30s", "maxEjectionPercent": 100}}})
    vs = istio("VirtualService", "reviews", {"hosts": ["reviews"], "http": [
        {"retries": {"attempts": 0}, "route": [{"destination": {"host": "reviews"}}]}]})
    state = mesh([(service("reviews", [9080]), [(pod("good", {}), echo_ports["v1"]),
                                                (pod("bad", {}), broken.port)])],
                 dr, vs, client=CLIENT)
    client = run_envoy(state)
    first = [client.get(f"{URL}/")[0] for _ in range(4)]
    assert 500 in first
    assert {client.get(f"{URL}/")[0] for _ in range(20)} == {200}
    stats = run_envoy.envoys[-1].stats()  # type: ignore[attr-defined]
    counter = "outlier_detection.ejections_enforced_consecutive_5xx"
    assert f"cluster.outbound|9080||{REVIEWS}.{counter}: 1" in stats


def test_real_envoy_auto_mtls_to_a_sidecar(tmp_path: Path, echo_ports: dict[str, int],
                                           run_envoy: Callable) -> None:
    """Auto-mTLS: a meshed endpoint gets Istio mTLS with the pod's SPIFFE SAN checked."""
    server_files = ProxyFiles(tmp_path / "server")
    ca = MeshCA.load_or_create(tmp_path / "ca")
    ca.write_sds(server_files, ca.issue(NS, "bookinfo-reviews"))
    inbound, admin = free_port(), free_port()
    listener = {"name": "inbound", "address": {"socket_address": {
        "address": "127.0.0.1", "port_value": inbound}},
        "filter_chains": [{"transport_socket": mutual_downstream(server_files),
                           "filters": [{"name": "envoy.filters.network.tcp_proxy",
                                        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": "inbound", "cluster": "app"}}]}]}
    app = {"name": "app", "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
        "cluster_name": "app", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
            "socket_address": {"address": "127.0.0.1", "port_value": echo_ports["v2"]}}}}]}]}}
    server_files.cds.write_text(wrap([app], "envoy.config.cluster.v3.Cluster"))
    server_files.lds.write_text(wrap([listener], "envoy.config.listener.v3.Listener"))
    server = start_envoy(server_files.xds_dir, admin, server_files)
    try:
        meshed = pod("reviews-v2", {"app": "reviews"}, sa="bookinfo-reviews", meshed=True)
        client = run_envoy(mesh([(service("reviews", [9080]), [(meshed, inbound)])],
                                client=CLIENT))
        assert client.pod(f"{URL}/") == "reviews-v2"
        assert "ssl.handshake: 1" in run_envoy.envoys[-1].stats()  # type: ignore[attr-defined]
        wrong = pod("reviews-v2", {"app": "reviews"}, sa="someone-else", meshed=True)
        client = run_envoy(mesh([(service("reviews", [9080]), [(wrong, inbound)])],
                                client=CLIENT))
        assert client.get(f"{URL}/")[0] == 503  # SAN mismatch: the handshake is refused
    finally:
        stop(server)
