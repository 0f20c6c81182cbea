"""Does real traffic through the embedded mesh do what Istio's traffic-management tasks show?

One meshed namespace per module (bookinfo, curl, httpbin v1 + v2 for mirroring, and a `flaky`
service with one broken endpoint); each test applies the tasks' own objects (request routing,
traffic shifting, fault injection, request timeouts, circuit breaking, mirroring — adapted only
where noted; built field for field with mesh_support's builders), waits until the config reached
the proxy that acts on it (`labs.proxy`), then sends requests from a workload
(`labs.traffic.probe`) and checks what came back. Routing objects are deleted after each test
and the proxies are back to their starting config before the next one begins.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import poll
from mesh_support import (
    JASON_MATCH,
    MeshNamespace,
    destination,
    destination_rule,
    mesh_namespace_fixture,
    route,
    virtual_service,
    yaml_stream,
)

from labs import proxy
from labs.traffic import ProbeResult, probe, reviews_version

Obj = dict[str, Any]
PRODUCTPAGE = "http://productpage:9080/productpage"
JASON = {"Cookie": "session=jason"}  # what productpage's /login leaves in the browser
WATCHED = ("curl", "productpage-v1", "reviews-v2")  # the proxies that act on the tests' rules

HTTPBIN_IMAGE = "docker.io/mccutchen/go-httpbin:v2.15.0"
NO_SIDECAR = {"sidecar.istio.io/inject": "false"}


def deployment(name: str, selector: dict[str, str], container: Obj, *,
               pod_labels: dict[str, str] | None = None, **pod_spec: Any) -> Obj:
    """A one-replica Deployment of `container` whose pods carry `selector` (+ `pod_labels`)."""
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": selector},
                     "template": {"metadata": {"labels": selector | (pod_labels or {})},
                                  "spec": {**pod_spec, "containers": [container]}}}}


# httpbin-v2 (mirroring task); `flaky`: one endpoint answers, the other is a pod whose port is
# closed (Ready, no listener) — neither has a sidecar, so they cost no Envoy.
EXTRA_WORKLOADS = yaml_stream(
    deployment("httpbin-v2", {"app": "httpbin", "version": "v2"},
               {"image": HTTPBIN_IMAGE, "imagePullPolicy": "IfNotPresent", "name": "httpbin",
                "ports": [{"containerPort": 8080}]},
               serviceAccountName="httpbin"),
    {"apiVersion": "v1", "kind": "Service",
     "metadata": {"name": "flaky", "labels": {"app": "flaky"}},
     "spec": {"ports": [{"name": "http", "port": 8000, "targetPort": 8080}],
              "selector": {"app": "flaky"}}},
    deployment("flaky-good", {"app": "flaky", "version": "good"},
               {"image": HTTPBIN_IMAGE, "name": "httpbin", "ports": [{"containerPort": 8080}]},
               pod_labels=NO_SIDECAR),
    deployment("flaky-broken", {"app": "flaky", "version": "broken"},
               {"image": "curlimages/curl", "name": "broken",
                "command": ["/bin/sleep", "infinity"], "ports": [{"containerPort": 8080}],
                # Ready although nothing listens on 8080: a broken endpoint
                "readinessProbe": {"exec": {"command": ["true"]}}},
               pod_labels=NO_SIDECAR))

mesh = mesh_namespace_fixture("bookinfo", "curl", "httpbin", prefix="traffic",
                              extra_yaml=EXTRA_WORKLOADS)

# --- Istio's objects (samples/bookinfo/networking and the tasks), API v1 ------------------------

DESTINATION_RULE_ALL = yaml_stream(
    destination_rule("productpage", "v1"),
    destination_rule("reviews", "v1", "v2", "v3"),
    destination_rule("ratings", "v1", "v2", "v2-mysql", "v2-mysql-vm"),
    destination_rule("details", "v1", "v2"))

VIRTUAL_SERVICE_ALL_V1 = yaml_stream(*(virtual_service(host, route(host, "v1"))
                                      for host in ("productpage", "reviews", "ratings", "details")))

REVIEWS_50_V3 = yaml_stream(virtual_service("reviews", {"route": [
    destination("reviews", "v1", weight=50), destination("reviews", "v3", weight=50)]}))

REVIEWS_TEST_V2 = yaml_stream(virtual_service(
    "reviews", route("reviews", "v2", match=JASON_MATCH), route("reviews", "v1")))

# The task's YAML with its 7s delay shortened to 2s, so the test stays fast.
RATINGS_TEST_DELAY = yaml_stream(virtual_service(
    "ratings",
    route("ratings", "v1", match=JASON_MATCH,
          fault={"delay": {"percentage": {"value": 100.0}, "fixedDelay": "2s"}}),
    route("ratings", "v1")))

RATINGS_TEST_ABORT = yaml_stream(virtual_service(
    "ratings",
    route("ratings", "v1", match=JASON_MATCH,
          fault={"abort": {"percentage": {"value": 100.0}, "httpStatus": 500}}),
    route("ratings", "v1")))

# Request timeouts task: reviews → v2, ratings delayed 2s for everyone, reviews timeout 0.5s.
TIMEOUT_TASK = yaml_stream(
    virtual_service("ratings", route(
        "ratings", "v1", fault={"delay": {"percentage": {"value": 100}, "fixedDelay": "2s"}})),
    virtual_service("reviews", route("reviews", "v2", timeout="0.5s")))

HTTPBIN_TIMEOUT = yaml_stream(virtual_service("httpbin", route("httpbin", timeout="0.5s")))

HTTPBIN_RETRIES = yaml_stream(virtual_service("httpbin", route(
    "httpbin", retries={"attempts": 3, "perTryTimeout": "2s", "retryOn": "5xx"})))

# Retries off, so what fixes the errors below is the ejection, not a retry on the other host.
FLAKY_NO_RETRIES = yaml_stream(virtual_service("flaky", route("flaky", retries={"attempts": 0})))

FLAKY_OUTLIER_DETECTION = yaml_stream(destination_rule("flaky", trafficPolicy={
    "outlierDetection": {"consecutive5xxErrors": 1, "interval": "1s",
                         "baseEjectionTime": "3m", "maxEjectionPercent": 100}}))

HTTPBIN_MIRROR = yaml_stream(
    virtual_service("httpbin", {"route": [destination("httpbin", "v1", weight=100)],
                                "mirror": {"host": "httpbin", "subset": "v2"},
                                "mirrorPercentage": {"value": 100.0}}),
    destination_rule("httpbin", "v1", "v2"))

# TCP traffic shifting task's shape: TCP routes are not emulated (sidecars here are HTTP only).
TCP_ROUTES = yaml_stream(virtual_service("ratings", name="ratings-tcp", tcp=[
    {"match": [{"port": 9080}],
     "route": [{"destination": {"host": "ratings", "port": {"number": 9080}}}]}]))


# --- waiting for config ---------------------------------------------------------------------------

def routing_state(dump: Obj) -> str:
    """What routing objects change in a proxy: its dynamic routes and clusters."""
    configs = {c["@type"].rsplit(".", 1)[-1]: c for c in dump.get("configs", [])}
    routes = [r["route_config"] for r in
              configs.get("RoutesConfigDump", {}).get("dynamic_route_configs", [])]
    clusters = [c["cluster"] for c in
                configs.get("ClustersConfigDump", {}).get("dynamic_active_clusters", [])]
    return json.dumps([routes, sorted(clusters, key=lambda c: c["name"])], sort_keys=True)


@pytest.fixture(scope="module")
def baseline(mesh: MeshNamespace) -> dict[str, str]:
    """Routing state of the watched proxies with no VirtualService or DestinationRule."""
    return {d: routing_state(proxy.config_dump(f"deploy/{d}", mesh.name, cluster=mesh.cluster))
            for d in WATCHED}


@pytest.fixture(autouse=True)
def clean_routing(mesh: MeshNamespace, baseline: dict[str, str]) -> Iterator[None]:
    yield
    mesh.reset_routing()
    for deploy, state in baseline.items():
        proxy.wait_for_config(f"deploy/{deploy}", mesh.name,
                              lambda dump, state=state: routing_state(dump) == state,
                              timeout=20, cluster=mesh.cluster)


def converge(mesh: MeshNamespace, deploy: str, predicate: Callable[[Obj], bool]) -> Obj:
    return proxy.wait_for_config(f"deploy/{deploy}", mesh.name, predicate, timeout=20,
                                 cluster=mesh.cluster)


def vhost(dump: Obj, service: str) -> str:
    """The outbound virtual host of `service` in a proxy's config, as JSON text."""
    for config in dump.get("configs", []):
        for table in config.get("dynamic_route_configs", []):
            for host in table["route_config"].get("virtual_hosts", []):
                if host["name"].startswith(f"{service}."):
                    return json.dumps(host)
    return ""


def routes_to(service: str, *subsets: str) -> Callable[[Obj], bool]:
    """Predicate: routes to each subset cluster of `service` exist, and so do the clusters
    (routes and clusters are separate files; a route to a missing cluster gives 503 NC)."""
    def ready(dump: Obj) -> bool:
        destinations = vhost(dump, service)
        clusters = {(row["SERVICE FQDN"].split(".")[0], row["SUBSET"])
                    for row in proxy.cluster_table(dump)}
        return all(f"|{s}|{service}." in destinations and (service, s) in clusters
                   for s in subsets)
    return ready


def vhost_has(service: str, *texts: str) -> Callable[[Obj], bool]:
    def ready(dump: Obj) -> bool:
        host = vhost(dump, service)
        return all(text in host for text in texts)
    return ready


def both(*predicates: Callable[[Obj], bool]) -> Callable[[Obj], bool]:
    return lambda dump: all(p(dump) for p in predicates)


# --- acting -------------------------------------------------------------------------------------

def apply(mesh: MeshNamespace, *manifests: str) -> None:
    """Apply each manifest in turn, as a learner runs the task's `kubectl apply -f` commands."""
    for text in manifests:
        mesh.apply(text)


def send(mesh: MeshNamespace, url: str, n: int, **options: Any) -> ProbeResult:
    """`n` requests to `url` from the namespace's curl pod (`labs.traffic.probe`)."""
    return probe(url, namespace=mesh.name, n=n, cluster=mesh.cluster, **options)


def pages(mesh: MeshNamespace, n: int, classify: Callable[[str], str | None] = reviews_version,
          **options: Any) -> ProbeResult:
    """`n` productpage requests, labelled by the reviews version they show."""
    return send(mesh, PRODUCTPAGE, n, classify=classify, **options)


# --- behaviours -----------------------------------------------------------------------------------

def test_weighted_split_sends_half_to_v1_and_half_to_v3(mesh: MeshNamespace) -> None:
    """Traffic shifting task: reviews 50 % v1 / 50 % v3, seen through productpage."""
    apply(mesh, DESTINATION_RULE_ALL, REVIEWS_50_V3)
    converge(mesh, "productpage-v1", routes_to("reviews", "v1", "v3"))

    result = pages(mesh, 100)

    assert result.codes == {200: 100}, result
    assert set(result.labels) == {"v1", "v3"}, result
    assert 0.35 <= result.fraction("v1") <= 0.65, result
    assert 0.35 <= result.fraction("v3") <= 0.65, result


def test_header_routing_sends_jason_to_v2_and_others_to_v1(mesh: MeshNamespace) -> None:
    """Request routing task: end-user jason → reviews v2, everyone else → v1."""
    apply(mesh, DESTINATION_RULE_ALL, VIRTUAL_SERVICE_ALL_V1, REVIEWS_TEST_V2)
    converge(mesh, "productpage-v1", both(routes_to("reviews", "v1", "v2"),
                                          vhost_has("reviews", "end-user")))

    jason = pages(mesh, 20, headers=JASON)
    anonymous = pages(mesh, 20)

    assert jason.labels == {"v2": 20}, jason
    assert anonymous.labels == {"v1": 20}, anonymous


def test_delay_fault_slows_jason_by_the_injected_delay(mesh: MeshNamespace) -> None:
    """Fault injection task (delay 2s instead of 7s): ratings is delayed for jason only."""
    apply(mesh, DESTINATION_RULE_ALL, VIRTUAL_SERVICE_ALL_V1, REVIEWS_TEST_V2, RATINGS_TEST_DELAY)
    converge(mesh, "productpage-v1", routes_to("reviews", "v2"))
    converge(mesh, "reviews-v2", both(routes_to("ratings", "v1"),
                                      vhost_has("ratings", "fixed_delay", "end-user")))

    jason = pages(mesh, 2, headers=JASON)
    others = pages(mesh, 3)

    assert jason.codes == {200: 2} and jason.labels == {"v2": 2}, jason
    assert min(jason.latencies_ms) >= 2000, jason
    assert max(others.latencies_ms) < 2000, others


def test_abort_fault_shows_ratings_unavailable_to_jason(mesh: MeshNamespace) -> None:
    """Fault injection task: ratings answers 500 for jason; the page says so, others are fine."""
    apply(mesh, DESTINATION_RULE_ALL, VIRTUAL_SERVICE_ALL_V1, REVIEWS_TEST_V2, RATINGS_TEST_ABORT)
    converge(mesh, "productpage-v1", routes_to("reviews", "v2"))
    converge(mesh, "reviews-v2", vhost_has("ratings", '"http_status": 500', "end-user"))

    def page(*args: str) -> str:
        code, body = mesh.curl(PRODUCTPAGE, *args)
        assert code == 200, body
        return body

    assert "Ratings service is currently unavailable" in page("-H", "Cookie: session=jason")
    anonymous = page()
    assert "Ratings service is currently unavailable" not in anonymous
    assert reviews_version(anonymous) == "v1"


def test_timeout_cuts_slow_reviews_short(mesh: MeshNamespace) -> None:
    """Request timeouts task: reviews (v2) times out after 0.5s while ratings takes 2s, so
    productpage shows its 'reviews unavailable' message well before the 2s delay."""
    apply(mesh, DESTINATION_RULE_ALL, TIMEOUT_TASK)
    converge(mesh, "productpage-v1", both(routes_to("reviews", "v2"),
                                          vhost_has("reviews", '"timeout": "0.5')))
    converge(mesh, "reviews-v2", vhost_has("ratings", "fixed_delay"))

    result = pages(mesh, 2, classify=lambda body: "sorry" if "Sorry, product reviews are "
                   "currently unavailable for this book." in body else None)

    assert result.labels == {"sorry": 2}, result
    assert max(result.latencies_ms) < 2000, result


def test_timeout_answers_504_from_the_client_sidecar(mesh: MeshNamespace) -> None:
    """httpbin /delay/2 behind a 0.5s VirtualService timeout: 504 after about 0.5s."""
    mesh.apply(HTTPBIN_TIMEOUT)
    converge(mesh, "curl", vhost_has("httpbin", '"timeout": "0.5'))

    code, body = mesh.curl("http://httpbin:8000/delay/2")
    result = send(mesh, "http://httpbin:8000/delay/2", 2)

    assert (code, body) == (504, "upstream request timeout")
    assert result.codes == {504: 2}, result
    assert max(result.latencies_ms) < 1500, result


def test_retries_lower_the_error_rate(mesh: MeshNamespace) -> None:
    """httpbin /status/500,200 fails half the time; `retries: attempts 3, retryOn 5xx` hides
    most failures (Istio's default retry policy does not retry a 500)."""
    url = "http://httpbin:8000/status/500,200"
    without = send(mesh, url, 60)
    mesh.apply(HTTPBIN_RETRIES)
    converge(mesh, "curl", vhost_has("httpbin", '"num_retries": 3', "5xx"))
    with_retries = send(mesh, url, 60)

    assert without.error_rate >= 0.3, without
    assert with_retries.error_rate <= 0.2, with_retries
    assert with_retries.error_rate < without.error_rate / 2, (without, with_retries)


def test_outlier_detection_ejects_the_broken_endpoint(mesh: MeshNamespace) -> None:
    """Circuit breaking task's outlierDetection with consecutive5xxErrors 1: after the broken
    endpoint fails once it is ejected, later requests all succeed, and the client's sidecar
    counts the ejection."""
    url = "http://flaky:8000/status/200"
    stat = (f"cluster.outbound|8000||flaky.{mesh.name}.svc.cluster.local."
            f"outlier_detection.ejections_enforced_total")
    mesh.apply(FLAKY_NO_RETRIES)
    def retries_off(dump: Obj) -> bool:
        host = vhost(dump, "flaky")
        return bool(host) and "retry_policy" not in host
    converge(mesh, "curl", retries_off)
    before = send(mesh, url, 20)
    assert before.fraction(200) < 0.9, f"the broken endpoint should fail requests: {before}"

    mesh.apply(FLAKY_OUTLIER_DETECTION)
    converge(mesh, "curl", lambda dump: "consecutive_5xx" in json.dumps(dump))
    warm_up = send(mesh, url, 10)
    ejections = poll(lambda: proxy.stats("deploy/curl", mesh.name, cluster=mesh.cluster)
                     .get(stat, 0), f"{stat} ≥ 1 (after {warm_up.codes})", timeout=10)
    after = send(mesh, url, 20)

    assert ejections >= 1
    assert after.codes == {200: 20}, after


def test_mirroring_copies_requests_to_v2_with_shadow_host(mesh: MeshNamespace) -> None:
    """Mirroring task: all traffic to v1, a copy to v2 whose proxy logs `httpbin-shadow`."""
    mesh.apply(HTTPBIN_MIRROR)
    converge(mesh, "curl", both(routes_to("httpbin", "v1", "v2"),
                                vhost_has("httpbin", "request_mirror_policies")))
    marker = uuid.uuid4().hex

    code, body = mesh.curl(f"http://httpbin:8000/headers?probe={marker}")
    assert code == 200, body

    def mirrored() -> str:
        log = mesh.kubectl("logs", "deploy/httpbin-v2", "-c", "istio-proxy")
        return next((line for line in log.splitlines() if marker in line), "")
    line = poll(mirrored, f"a request with {marker} in httpbin-v2's proxy log", timeout=10)
    assert '"httpbin-shadow:8000"' in line, line


def test_tcp_routes_are_reported_not_emulated(mesh: MeshNamespace) -> None:
    """A field the mesh cannot apply shows up on the object: condition Reconciled=False
    (NotEmulated) naming `spec.tcp`, and a Warning event in `kubectl describe`."""
    mesh.apply(TCP_ROUTES)

    def condition() -> Obj | None:
        out = mesh.kubectl("get", "virtualservice", "ratings-tcp", "-o",
                           "jsonpath={.status.conditions[?(@.type==\"Reconciled\")]}")
        return json.loads(out) if out.strip() else None
    reconciled = poll(condition, "a Reconciled condition on ratings-tcp", timeout=15)
    assert (reconciled["status"], reconciled["reason"]) == ("False", "NotEmulated"), reconciled
    assert "spec.tcp" in reconciled["message"], reconciled

    described = poll(lambda: (lambda text: text if "NotEmulated" in text else "")(
        mesh.kubectl("describe", "virtualservice", "ratings-tcp")),
        "the NotEmulated event in kubectl describe", timeout=10)
    assert "Warning" in described and "spec.tcp" in described, described
    events = mesh.kubectl("get", "events", "--field-selector",
                          "involvedObject.name=ratings-tcp,type=Warning", "-o",
                          "jsonpath={.items[*].reason}")
    assert "NotEmulated" in events.split(), events
