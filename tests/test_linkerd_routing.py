"""Linkerd's client-side routing on the embedded cluster, with real traffic through the Envoys
playing linkerd-proxy: HTTPRoutes with a Service parent (the shape Flagger's gatewayapi router
writes: apex `podinfo`, backends `podinfo-primary`/`podinfo-canary` by weight), SMI TrafficSplits
through the linkerd-smi adaptor's ServiceProfile, ServiceProfile timeouts and retries, retry and
timeout annotations, and the status the policy controller writes. Routing is the client's:
an unmeshed client is not split.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
import yaml
from conftest import poll
from mesh_support import MeshNamespace, wait_available
from test_linkerd_dataplane import account, curl, meshed, plain, trust_anchors

from labs.cluster import ClusterRef
from labs.embedded.mesh.linkerd.routing import (
    CONTROLLER,
    RoutingError,
    annotation_retry,
    annotation_timeouts,
    condition_terms,
    port_routing,
    quantity,
)
from labs.embedded.mesh.linkerd.routing_status import adaptor_profile
from labs.embedded.mesh.linkerd.state import LinkerdState

pytestmark = pytest.mark.usefixtures("linkerd_installed")  # the cluster starts without it

Obj = dict
PORT = 9898
PODINFO = "ghcr.io/stefanprodan/podinfo:6.0.1"
ROUTING_KINDS = ("httproutes.gateway.networking.k8s.io,httproutes.policy.linkerd.io,"
                 "trafficsplits.split.smi-spec.io,serviceprofiles.linkerd.io")
HOSTNAME = re.compile(r'"hostname":\s*"podinfo-(primary|canary)-')


def podinfo() -> Obj:
    return {"name": "podinfod", "image": PODINFO,
            "ports": [{"containerPort": PORT, "name": "http"}]}


def service(name: str, namespace: str, app: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"app": app},
                     "ports": [{"name": "http", "port": PORT, "targetPort": PORT}]}}


@pytest.fixture(scope="module")
def rt(cluster: ClusterRef) -> Iterator[MeshNamespace]:
    """Meshed `curl`, `podinfo-primary` and `podinfo-canary`; unmeshed `plain-curl`; Services
    `podinfo` (the apex, selecting the primary, as Flagger makes it), `podinfo-primary` and
    `podinfo-canary`."""
    name = f"l5d-rt-{uuid.uuid4().hex[:6]}"
    assert cluster.kubectl("create", "namespace", name).returncode == 0
    mesh = MeshNamespace(cluster, name)
    anchors = trust_anchors(cluster)
    objects = [account("curl", name), account("podinfo-primary", name),
               account("podinfo-canary", name), meshed("curl", name, curl(), anchors),
               meshed("podinfo-primary", name, podinfo(), anchors),
               meshed("podinfo-canary", name, podinfo(), anchors),
               plain("plain-curl", name, curl()),
               service("podinfo", name, "podinfo-primary"),
               service("podinfo-primary", name, "podinfo-primary"),
               service("podinfo-canary", name, "podinfo-canary")]
    try:
        mesh.apply(yaml.safe_dump_all(objects, sort_keys=False))
        wait_available(cluster, name, timeout=180)
        for client in ("curl", "plain-curl"):
            for server in ("podinfo", "podinfo-canary"):
                poll(lambda c=client, s=server: mesh.curl(f"http://{s}.{name}:{PORT}/",
                                                          workload=c)[0] == 200 or None,
                     f"{client} reaching {server}", timeout=30, interval=0.3)
        yield mesh
    finally:
        cluster.kubectl("delete", "namespace", name, "--timeout=90s", timeout=120)


@pytest.fixture
def l5d(rt: MeshNamespace) -> Iterator[MeshNamespace]:
    """The namespace, its routing objects deleted after the test."""
    yield rt
    rt.kubectl("delete", ROUTING_KINDS, "--all", "--ignore-not-found")


# -- helpers ------------------------------------------------------------------------------------
def served(mesh: MeshNamespace, n: int, *args: str, workload: str = "curl") -> Counter[str]:
    """Which backend served each of `n` requests for the apex (one curl, kept-alive: its URL
    glob makes the `n` URLs)."""
    url = f"http://podinfo.{mesh.name}:{PORT}/?n=[1-{n}]"
    result = mesh.exec(workload, "curl", "-s", *args, url, timeout=120)
    counts = Counter(HOSTNAME.findall(result.stdout))
    assert sum(counts.values()) == n, result.stdout[-2000:] + result.stderr
    return counts


def assert_binomial(canary: int, n: int, p: float) -> None:
    """`canary` of `n` requests is within 4.5 standard deviations of n·p (fails by chance
    about once in 150 000 runs)."""
    sd = math.sqrt(n * p * (1 - p))
    assert abs(canary - n * p) <= 4.5 * sd, (canary, n, p)


def http_route(namespace: str, primary: int, canary: int, **extra: Obj) -> Obj:
    """Flagger's GatewayAPIV1Beta1Router HTTPRoute (FL `pkg/router/gateway_api_v1beta1.go`),
    at gateway.networking.k8s.io/v1, parent the apex Service as `gatewayRefs` name it."""
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "podinfo", "namespace": namespace, **extra.get("meta", {})},
            "spec": {"parentRefs": [{"name": "podinfo", "namespace": namespace,
                                     "group": "core", "kind": "Service", "port": PORT}],
                     "rules": extra.get("rules") or [{
                         "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                         "backendRefs": [
                             {"group": "", "kind": "Service", "name": "podinfo-primary",
                              "port": PORT, "weight": primary},
                             {"group": "", "kind": "Service", "name": "podinfo-canary",
                              "port": PORT, "weight": canary}]}]}}


def apply(mesh: MeshNamespace, *objects: Obj) -> None:
    mesh.apply(yaml.safe_dump_all(objects, sort_keys=False))


def all_to(mesh: MeshNamespace, backend: str, *args: str, workload: str = "curl") -> bool:
    return served(mesh, 20, *args, workload=workload)[backend] == 20


def backend_count(mesh: MeshNamespace, status: int) -> int:
    """podinfo-primary's own count of `/status/<status>` requests it answered (its metrics)."""
    code, body = mesh.curl(f"http://podinfo-primary.{mesh.name}:{PORT}/metrics",
                           workload="plain-curl")
    assert code == 200, body
    found = re.search(r'http_request_duration_seconds_count\{method="GET",path="status",'
                      rf'status="{status}"\}} (\d+)', body)
    return int(found.group(1)) if found else 0


def attempts(mesh: MeshNamespace, status: int) -> int:
    """How many requests podinfo-primary saw for one client request of `/status/<status>`
    (which still fails with that status)."""
    before = backend_count(mesh, status)
    code, _ = mesh.curl(f"http://podinfo.{mesh.name}:{PORT}/status/{status}")
    assert code == status
    return backend_count(mesh, status) - before


def get(mesh: MeshNamespace, kind: str, name: str) -> Obj:
    return dict(json.loads(mesh.kubectl("get", kind, name, "-o", "json")))


# -- HTTPRoute ----------------------------------------------------------------------------------
def test_weighted_split_follows_each_weight_change(l5d: MeshNamespace) -> None:
    """90/10 and 50/50 within binomial bounds; 0/100 and 100/0 take effect for the next
    requests once the route changes."""
    n = 300
    apply(l5d, http_route(l5d.name, 90, 10))
    poll(lambda: served(l5d, 20)["canary"] > 0 or None, "the canary getting requests",
         timeout=30, interval=0.3)
    assert_binomial(served(l5d, n)["canary"], n, 0.10)
    apply(l5d, http_route(l5d.name, 0, 100))
    poll(lambda: all_to(l5d, "canary") or None, "every request on the canary", timeout=30,
         interval=0.3)
    apply(l5d, http_route(l5d.name, 50, 50))
    poll(lambda: served(l5d, 20)["primary"] > 0 or None, "the primary getting requests again",
         timeout=30, interval=0.3)
    assert_binomial(served(l5d, n)["canary"], n, 0.50)
    apply(l5d, http_route(l5d.name, 100, 0))
    poll(lambda: all_to(l5d, "primary") or None, "every request on the primary", timeout=30,
         interval=0.3)


def test_unmeshed_client_is_not_split(l5d: MeshNamespace) -> None:
    """"Any requests coming from outside the mesh will not be shifted": the apex's own
    endpoints (the primary) serve an unmeshed client while a meshed one goes to the canary."""
    apply(l5d, http_route(l5d.name, 0, 100))
    poll(lambda: all_to(l5d, "canary") or None, "the meshed client on the canary",
         timeout=30, interval=0.3)
    assert served(l5d, 30, workload="plain-curl") == Counter({"primary": 30})


def test_header_match_routes_to_the_canary(l5d: MeshNamespace) -> None:
    """Flagger's A/B shape: a header match to the canary, then everything else to the
    primary."""
    rules = [{"matches": [{"headers": [{"type": "Exact", "name": "x-canary",
                                        "value": "insider"}]}],
              "backendRefs": [{"name": "podinfo-canary", "port": PORT}]},
             {"backendRefs": [{"name": "podinfo-primary", "port": PORT}]}]
    apply(l5d, http_route(l5d.name, 0, 0, rules=rules))
    poll(lambda: all_to(l5d, "canary", "-H", "x-canary: insider") or None,
         "the header routing to the canary", timeout=30, interval=0.3)
    assert served(l5d, 20) == Counter({"primary": 20})
    assert served(l5d, 10, "-H", "x-canary: other") == Counter({"primary": 10})


def test_policy_httproute_and_no_matching_rule(l5d: MeshNamespace) -> None:
    """A policy.linkerd.io/v1beta3 route (the traffic-shifting task's group) matching only
    `/api`: `/api/info` goes to the canary, and a path no rule matches gets the proxy's 404."""
    route = http_route(l5d.name, 0, 100, rules=[{
        "matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
        "backendRefs": [{"name": "podinfo-canary", "port": PORT}]}])
    route["apiVersion"] = "policy.linkerd.io/v1beta3"
    apply(l5d, route)

    def canary_api() -> bool | None:
        code, body = l5d.curl(f"http://podinfo.{l5d.name}:{PORT}/api/info")
        return (code == 200 and "podinfo-canary" in body) or None
    poll(canary_api, "/api on the canary", timeout=30, interval=0.3)
    code, headers = l5d.curl(f"http://podinfo.{l5d.name}:{PORT}/version", "-D", "-")
    assert code == 404
    assert "l5d-proxy-error: no route found for request" in headers.lower()


def test_status_is_written_by_the_policy_controller(l5d: MeshNamespace) -> None:
    """status.parents: the Service parent, controllerName linkerd.io/policy-controller,
    Accepted and ResolvedRefs; a backend naming no Service is BackendNotFound, and a parent
    naming no Service is NoMatchingParent."""
    route = http_route(l5d.name, 90, 10)
    route["spec"]["rules"][0]["backendRefs"].append({"name": "no-such", "port": PORT,
                                                     "weight": 0})
    apply(l5d, route)

    def parents() -> list[Obj] | None:
        status = get(l5d, "httproutes.gateway.networking.k8s.io", "podinfo").get("status")
        return (status or {}).get("parents") or None
    entries = poll(parents, "the HTTPRoute's status", timeout=30, interval=0.3)
    assert len(entries) == 1
    entry = entries[0]
    assert entry["controllerName"] == CONTROLLER == "linkerd.io/policy-controller"
    assert entry["parentRef"] == {"group": "core", "kind": "Service", "name": "podinfo",
                                  "namespace": l5d.name, "port": PORT}
    conditions = {c["type"]: c for c in entry["conditions"]}
    assert (conditions["Accepted"]["status"], conditions["Accepted"]["reason"]) == (
        "True", "Accepted")
    resolved = conditions["ResolvedRefs"]
    assert (resolved["status"], resolved["reason"]) == ("False", "BackendNotFound")
    assert "observedGeneration" not in resolved  # upstream leaves it out
    apply(l5d, http_route(l5d.name, 90, 10))  # the backend removed: resolved again

    def resolved_again() -> bool | None:
        entry = (parents() or [{}])[0]
        return any(c["type"] == "ResolvedRefs" and c["status"] == "True"
                   for c in entry.get("conditions") or []) or None
    poll(resolved_again, "ResolvedRefs True", timeout=30, interval=0.3)
    orphan = http_route(l5d.name, 100, 0)
    orphan["metadata"]["name"] = "orphan"
    orphan["spec"]["parentRefs"][0]["name"] = "no-such-parent"
    apply(l5d, orphan)

    def orphan_accepted() -> Obj | None:
        status = get(l5d, "httproutes.gateway.networking.k8s.io", "orphan").get("status") or {}
        for entry in status.get("parents") or []:
            return next(c for c in entry["conditions"] if c["type"] == "Accepted")
        return None
    accepted = poll(orphan_accepted, "the orphan route's status", timeout=30, interval=0.3)
    assert (accepted["status"], accepted["reason"]) == ("False", "NoMatchingParent")


# -- SMI TrafficSplit ---------------------------------------------------------------------------
def test_traffic_split_becomes_dst_overrides(l5d: MeshNamespace) -> None:
    """Flagger's SmiRouter TrafficSplit (FL `pkg/router/smi.go`): the adaptor writes the apex's
    ServiceProfile with `dstOverrides`, meshed clients follow it, and deleting the split clears
    them."""
    split = {"apiVersion": "split.smi-spec.io/v1alpha1", "kind": "TrafficSplit",
             "metadata": {"name": "podinfo", "namespace": l5d.name},
             "spec": {"service": "podinfo", "backends": [
                 {"service": "podinfo-primary", "weight": 0},
                 {"service": "podinfo-canary", "weight": 100}]}}
    apply(l5d, split)
    poll(lambda: all_to(l5d, "canary") or None, "the split's canary", timeout=30, interval=0.3)
    profile = get(l5d, "serviceprofiles.linkerd.io", f"podinfo.{l5d.name}.svc.cluster.local")
    overrides = profile["spec"]["dstOverrides"]
    assert [o["authority"] for o in overrides] == [
        f"podinfo-primary.{l5d.name}.svc.cluster.local",
        f"podinfo-canary.{l5d.name}.svc.cluster.local"]
    assert [quantity(o["weight"], "weight") for o in overrides] == [0, 100]
    assert served(l5d, 20, workload="plain-curl") == Counter({"primary": 20})
    l5d.kubectl("delete", "trafficsplit", "podinfo")
    poll(lambda: all_to(l5d, "primary") or None, "the apex again", timeout=30, interval=0.3)
    profile = get(l5d, "serviceprofiles.linkerd.io", f"podinfo.{l5d.name}.svc.cluster.local")
    assert not profile["spec"].get("dstOverrides")


# -- ServiceProfile ----------------------------------------------------------------------------
def profile(namespace: str, *routes: Obj) -> Obj:
    return {"apiVersion": "linkerd.io/v1alpha2", "kind": "ServiceProfile",
            "metadata": {"name": f"podinfo.{namespace}.svc.cluster.local",
                         "namespace": namespace},
            "spec": {"routes": list(routes)}}


def test_service_profile_timeout_is_a_504(l5d: MeshNamespace) -> None:
    """A route's `timeout` answers 504 with `l5d-proxy-error`; a request on no route has no
    timeout, and the ServiceProfile wins over an HTTPRoute for the same Service."""
    apply(l5d, http_route(l5d.name, 0, 100),
          profile(l5d.name, {"name": "GET /delay/{s}", "timeout": "300ms",
                             "condition": {"method": "GET", "pathRegex": "/delay/[0-9]+"}}))
    url = f"http://podinfo.{l5d.name}:{PORT}/delay/1"
    poll(lambda: l5d.curl(url)[0] == 504 or None, "the profile's timeout", timeout=30,
         interval=0.3)
    code, headers = l5d.curl(url, "-D", "-")
    assert code == 504 and "l5d-proxy-error: http response timeout" in headers.lower()
    assert served(l5d, 20) == Counter({"primary": 20})  # the profile, not the HTTPRoute
    code, _ = l5d.curl(f"http://podinfo.{l5d.name}:{PORT}/delay/1?x=1")
    assert code == 504  # the path matches without the query string
    code, _ = l5d.curl(url, "-X", "POST")  # no route: no timeout (podinfo's /delay is GET)
    assert code != 504


def test_service_profile_retries_retryable_route(l5d: MeshNamespace) -> None:
    """`isRetryable` retries 5xx within the retry budget (its per-second allowance of 10 per
    request here); a route without it is tried once."""
    apply(l5d, profile(l5d.name,
                       {"name": "GET /status/500", "isRetryable": True,
                        "condition": {"method": "GET", "pathRegex": "/status/500"}},
                       {"name": "GET /status/502",
                        "condition": {"method": "GET", "pathRegex": "/status/502"}}))
    poll(lambda: attempts(l5d, 500) > 1 or None, "retries of /status/500", timeout=30,
         interval=0.5)
    assert attempts(l5d, 500) == 1 + 10
    assert attempts(l5d, 502) == 1


# -- annotations ------------------------------------------------------------------------------
def test_httproute_retry_and_timeout_annotations(l5d: MeshNamespace) -> None:
    """`retry.linkerd.io/http: 5xx` with `limit: "2"` tries three times; the route's
    `timeout.linkerd.io/request` applies to every rule, overriding a rule's `timeouts.request`,
    which applies once the annotation is gone."""
    rules = [{"matches": [{"path": {"type": "PathPrefix", "value": "/delay/1"}}],
              "timeouts": {"request": "400ms"},
              "backendRefs": [{"name": "podinfo-primary", "port": PORT}]},
             {"backendRefs": [{"name": "podinfo-primary", "port": PORT}]}]
    annotations = {"retry.linkerd.io/http": "5xx", "retry.linkerd.io/limit": "2",
                   "timeout.linkerd.io/request": "1500ms"}
    apply(l5d, http_route(l5d.name, 0, 0, rules=rules, meta={"annotations": annotations}))
    poll(lambda: attempts(l5d, 503) > 1 or None, "retries of /status/503", timeout=30,
         interval=0.5)
    assert attempts(l5d, 503) == 3
    base = f"http://podinfo.{l5d.name}:{PORT}"
    assert l5d.curl(f"{base}/delay/1")[0] == 200  # 1 s: within the annotation's 1.5 s
    code, headers = l5d.curl(f"{base}/delay/2", "-D", "-")
    assert code == 504 and "l5d-proxy-error" in headers.lower()
    annotations.pop("timeout.linkerd.io/request")
    apply(l5d, http_route(l5d.name, 0, 0, rules=rules, meta={"annotations": annotations}))
    poll(lambda: l5d.curl(f"{base}/delay/1")[0] == 504 or None,
         "the rule's timeouts.request on /delay/1", timeout=30, interval=0.3)
    assert l5d.curl(f"{base}/delay/2")[0] == 200  # no timeout on the other rule now


def test_retry_timeout_retries_slow_attempts(l5d: MeshNamespace) -> None:
    """`retry.linkerd.io/timeout` cancels an attempt that is too slow and tries again, up to
    the limit; the client then gets the proxy's 504."""
    annotations = {"retry.linkerd.io/timeout": "300ms", "retry.linkerd.io/limit": "2"}
    apply(l5d, http_route(l5d.name, 100, 0, meta={"annotations": annotations}))
    url = f"http://podinfo.{l5d.name}:{PORT}/delay/1"
    poll(lambda: l5d.curl(url)[0] == 504 or None, "the retry timeout", timeout=30,
         interval=0.3)

    def inbound() -> int:
        """podinfo-primary's proxy's count of inbound requests (aborted attempts included:
        podinfo itself counts only those it answered)."""
        code, body = l5d.curl("http://localhost:4191/metrics", workload="podinfo-primary")
        assert code == 200, body
        return sum(int(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                   if line.startswith('request_total{direction="inbound"'))

    def settled() -> tuple[int] | None:
        first = inbound()
        time.sleep(1.2)
        return (first,) if inbound() == first else None
    (before,) = poll(settled, "the server proxy's count settling", timeout=20)
    code, headers = l5d.curl(url, "-D", "-")
    assert code == 504 and "l5d-proxy-error" in headers.lower()
    def grown() -> tuple[int] | None:
        count = settled()
        return count if count and count[0] - before >= 3 else None
    (after,) = poll(grown, "three attempts of /delay/1", timeout=20)
    assert after - before == 3


# -- without a cluster -------------------------------------------------------------------------
def test_retry_annotations_parse_like_linkerd() -> None:
    assert annotation_retry({"retry.linkerd.io/http": "gateway-error,429,500-501"}, "x") == {
        "num_retries": 1, "retry_on": "retriable-status-codes",
        "retriable_status_codes": [429, 500, 501, 502, 503, 504]}
    assert annotation_retry({"retry.linkerd.io/limit": "3"}, "x") is None  # no condition
    with pytest.raises(RoutingError, match=r"retry.linkerd.io/limit '-1' is not a whole number"):
        annotation_retry({"retry.linkerd.io/http": "5xx", "retry.linkerd.io/limit": "-1"}, "x")
    with pytest.raises(RoutingError, match=r"retry.linkerd.io/http: '5xy' is not a status code"):
        annotation_retry({"retry.linkerd.io/http": "5xy"}, "HTTPRoute a/b")
    with pytest.raises(RoutingError, match=r"timeout.linkerd.io/request: 'soon' is not a "
                                           r"duration; write it like 10s"):
        annotation_timeouts({"timeout.linkerd.io/request": "soon"}, None, "HTTPRoute a/b")
    assert annotation_timeouts({"timeout.linkerd.io/response": "1s",
                                "timeout.linkerd.io/idle": "1m"}, 2.0, "x") == {
        "timeout": "1s", "idle_timeout": "60s"}


def test_profile_conditions_become_envoy_matches() -> None:
    """`not` is pushed down (De Morgan) and `any` becomes one Envoy route per alternative."""
    path = {"name": ":path", "string_match": {"safe_regex": {"regex": "(?:/x)(?:\\?.*)?"}}}
    get_ = {"name": ":method", "string_match": {"exact": "GET"}}
    terms = condition_terms({"not": {"any": [{"method": "GET"}, {"pathRegex": "^/x$"}]}}, "w")
    assert terms == [[{**get_, "invert_match": True}, {**path, "invert_match": True}]]
    assert condition_terms({"any": [{"method": "get"}, {"pathRegex": "/x"}]}, "w") == [
        [get_], [path]]
    with pytest.raises(RoutingError, match="a condition needs pathRegex"):
        condition_terms({}, "ServiceProfile a/b: routes[0]")
    assert [quantity(w, "w") for w in ("100", 0, "900m", "1k")] == [100, 0, 0.9, 1000]
    with pytest.raises(RoutingError, match="'ten' is not a quantity"):
        quantity("ten", "ServiceProfile a/b: dstOverrides[0].weight")


def test_adaptor_writes_weights_as_quantities() -> None:
    """linkerd-smi's toServiceProfile: the apex's profile name, one dstOverride per backend,
    weights as resource.Quantity strings (v1alpha2 splits may weigh 0.5)."""
    split = {"metadata": {"name": "podinfo", "namespace": "test"},
             "spec": {"service": "podinfo", "backends": [
                 {"service": "podinfo-primary", "weight": 100},
                 {"service": "podinfo-canary", "weight": 0.5}]}}
    assert adaptor_profile(split) == ("podinfo.test.svc.cluster.local", [
        {"authority": "podinfo-primary.test.svc.cluster.local", "weight": "100"},
        {"authority": "podinfo-canary.test.svc.cluster.local", "weight": "500m"}])


def test_consumer_route_overrides_producer_routes() -> None:
    """A route in the client's namespace applies to its clients only; others keep the
    Service namespace's route."""
    def svc(name: str) -> Obj:
        return {"metadata": {"name": name, "namespace": "shop"},
                "spec": {"ports": [{"port": 80}]}}

    def route(namespace: str, backend: str) -> Obj:
        return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": {"name": "r", "namespace": namespace},
                "spec": {"parentRefs": [{"group": "core", "kind": "Service", "name": "web",
                                         "namespace": "shop"}],
                         "rules": [{"backendRefs": [{"name": backend, "namespace": "shop",
                                                     "port": 80}]}]}}
    state = LinkerdState(services=[svc("web"), svc("web-v2"), svc("web-v3")],
                         gateway_http_routes=[route("shop", "web-v2"), route("ops", "web-v3")])
    for client, backend in (("shop", "web-v2"), ("other", "web-v2"), ("ops", "web-v3")):
        routes = port_routing(state, svc("web"), 80, client).routes
        assert routes[0]["route"]["cluster"] == f"{backend}.shop.svc.cluster.local:80"
        assert routes[-1]["direct_response"] == {"status": 404}


def test_filters_and_unsupported_filter() -> None:
    """RequestHeaderModifier and RequestRedirect become Envoy route fields; a route with a
    filter Linkerd does not support is left out, with a warning saying which."""
    service = {"metadata": {"name": "web", "namespace": "shop"},
               "spec": {"ports": [{"port": 80}]}}

    def route(name: str, *filters: Obj) -> Obj:
        return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": {"name": name, "namespace": "shop"},
                "spec": {"parentRefs": [{"group": "core", "kind": "Service", "name": "web"}],
                         "rules": [{"matches": [{"path": {"type": "Exact",
                                                          "value": f"/{name}"}}],
                                    "filters": list(filters)}]}}
    headers = {"type": "RequestHeaderModifier", "requestHeaderModifier": {
        "set": [{"name": "x-team", "value": "blue"}], "remove": ["x-debug"]}}
    redirect = {"type": "RequestRedirect", "requestRedirect": {
        "path": {"type": "ReplaceFullPath", "replaceFullPath": "/new"}, "statusCode": 301}}
    rewrite = {"type": "URLRewrite", "urlRewrite": {"hostname": "elsewhere"}}
    state = LinkerdState(services=[service], gateway_http_routes=[
        route("headers", headers), route("redirect", redirect), route("rewrite", rewrite)])
    result = port_routing(state, service, 80, "shop")
    by_path = {r["match"].get("path"): r for r in result.routes}
    assert by_path["/headers"]["request_headers_to_add"] == [
        {"header": {"key": "x-team", "value": "blue"},
         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
    assert by_path["/headers"]["request_headers_to_remove"] == ["x-debug"]
    assert by_path["/headers"]["route"]["cluster"] == "web.shop.svc.cluster.local:80"
    assert by_path["/redirect"]["redirect"] == {"response_code": "MOVED_PERMANENTLY",
                                                "path_redirect": "/new"}
    assert "/rewrite" not in by_path
    assert result.warnings == ["HTTPRoute shop/rewrite: filter type 'URLRewrite' is not "
                               "supported by Linkerd (RequestHeaderModifier, "
                               "ResponseHeaderModifier, RequestRedirect): the route is ignored"]


def test_service_annotations_apply_unless_the_route_has_its_own() -> None:
    """Retry/timeout annotations on the Service apply to its default route and to HTTPRoutes
    without any of that family; a route's own annotations replace the whole family."""
    service = {"metadata": {"name": "web", "namespace": "shop", "annotations": {
                   "retry.linkerd.io/http": "503", "timeout.linkerd.io/request": "2s"}},
               "spec": {"ports": [{"port": 80}]}}
    alone = port_routing(LinkerdState(services=[service]), service, 80, "shop").routes
    assert alone[0]["route"]["timeout"] == "2s"
    assert alone[0]["route"]["retry_policy"]["retriable_status_codes"] == [503]
    route = {"apiVersion": "policy.linkerd.io/v1beta3", "kind": "HTTPRoute",
             "metadata": {"name": "r", "namespace": "shop",
                          "annotations": {"retry.linkerd.io/timeout": "100ms"}},
             "spec": {"parentRefs": [{"group": "core", "kind": "Service", "name": "web"}],
                      "rules": [{}]}}
    routed = port_routing(LinkerdState(services=[service], linkerd_http_routes=[route]),
                          service, 80, "shop").routes
    assert routed[0]["route"]["timeout"] == "2s"  # no timeout annotation on the route
    assert routed[0]["route"]["retry_policy"] == {"num_retries": 1, "retry_on": "reset",
                                                  "per_try_timeout": "0.1s"}
