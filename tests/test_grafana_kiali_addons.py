"""Do Istio's Grafana and Kiali addons work on the embedded cluster as Istio's docs use them?
`kubectl apply -f` the (trimmed) addon manifests, `istioctl dashboard grafana|kiali`, Grafana's
health, search and dashboard API, Istio's Service dashboard drawn from the cluster's Prometheus,
and Kiali's graph API with mutual TLS per edge, after real requests from a meshed curl to a
meshed httpbin.

The real kubectl and the project's istioctl run as subprocesses against the session cluster; the
addons are deleted again at the end of the module.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import poll
from mesh_support import MANIFESTS, MeshNamespace, mesh_namespace_fixture

from labs.cluster import ClusterRef
from labs.embedded.apps.catalog import app_for
from labs.embedded.apps.grafana import DASHBOARDS_DIR
from labs.embedded.apps.grafana_view import (
    ALL,
    DashboardError,
    Variable,
    interpolate,
    merge_rows,
    parse_time,
)
from labs.embedded.apps.kiali import BadRequest, GraphQuery, graph_config

ISTIOCTL = str(Path(sys.executable).parent / "istioctl")
ADDONS = {"grafana": "app.kubernetes.io/name=grafana", "kiali": "app=kiali"}
SERVICE_PANEL = "Incoming Requests By Source And Response Code"
REQUESTS = 10
TIMEOUT_S = 20

needs_prometheus = pytest.mark.skipif(shutil.which("prometheus") is None,
                                      reason="no `prometheus` binary on PATH (Debian: apt-get "
                                             "install prometheus); both addons read it")
mesh = mesh_namespace_fixture("httpbin", "curl", prefix="obs")


def get(url: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET from the test process."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as reply:
            return reply.status, reply.headers.get("Content-Type", ""), reply.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers.get("Content-Type", ""), error.read().decode()


def get_json(url: str, status: int = 200) -> object:
    code, kind, body = get(url)
    assert code == status, body
    assert kind.startswith("application/json"), kind
    return json.loads(body)


def dashboard_url(cluster: ClusterRef, name: str) -> str:
    """What `istioctl dashboard NAME --browser=false` prints, for the test process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHLAB_")}
    env["KUBECONFIG"] = str(cluster.kubeconfig)
    result = subprocess.run([ISTIOCTL, "dashboard", name, "--browser=false"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    url, _, rest = result.stdout.partition("\n")
    assert url.startswith("http://localhost:") and rest == "skipping opening a browser"
    return url.replace("localhost", "127.0.0.1")


def test_manifests_are_upstreams_addons_not_installed_at_start(cluster: ClusterRef) -> None:
    """Do the manifests keep upstream's names, selectors, ports and images (each image a twin
    of the catalog), and does the cluster start without them, as Istio's does?"""
    for name, port, image, twin in (("grafana", 3000, "docker.io/grafana/grafana:12.0.1",
                                     "Grafana twin"),
                                    ("kiali", 20001, "quay.io/kiali/kiali:v2.26", "Kiali twin")):
        docs = {d["kind"]: d for d in yaml.safe_load_all((MANIFESTS / f"{name}.yaml").read_text())}
        assert set(docs) == {"ServiceAccount", "Service", "Deployment"}
        assert {d["metadata"]["namespace"] for d in docs.values()} == {"istio-system"}
        assert docs["Service"]["spec"]["ports"][0]["port"] == port
        pod = docs["Deployment"]["spec"]["template"]
        assert pod["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"
        key, value = ADDONS[name].split("=")
        assert pod["metadata"]["labels"][key] == value
        container = pod["spec"]["containers"][0]
        assert container["image"] == image and container["ports"][0]["containerPort"] == port
        app = app_for(image)
        assert app is not None and app.known and twin in app.description
        absent = cluster.kubectl("-n", "istio-system", "get", "deployment", name)
        assert absent.returncode != 0 and "NotFound" in absent.stderr


@pytest.fixture(scope="module")
def addons(cluster: ClusterRef, mesh: MeshNamespace) -> Iterator[dict[str, str]]:
    """Both addons applied and Ready; their URLs as `istioctl dashboard` prints them."""
    files = [str(MANIFESTS / f"{name}.yaml") for name in ADDONS]
    try:
        for path in files:
            applied = cluster.kubectl("apply", "-f", path)
            assert applied.returncode == 0, applied.stderr
        for selector in ADDONS.values():
            ready = cluster.kubectl("-n", "istio-system", "wait", "--for=condition=Ready", "pod",
                                    "-l", selector, "--timeout=90s", timeout=120)
            assert ready.returncode == 0, ready.stderr + cluster.kubectl(
                "-n", "istio-system", "get", "pods", "-o", "wide").stdout
        yield {name: dashboard_url(cluster, name) for name in ADDONS}
    finally:
        for path in files:
            cluster.kubectl("delete", "-f", path, "--ignore-not-found", "--timeout=60s",
                            timeout=90)


@pytest.fixture(scope="module")
def traffic(mesh: MeshNamespace) -> str:
    """REQUESTS requests from the meshed curl to the meshed httpbin; httpbin's service name."""
    for _ in range(REQUESTS):
        code, body = mesh.curl("http://httpbin:8000/get")
        assert code == 200, body
    return f"httpbin.{mesh.name}.svc.cluster.local"


@needs_prometheus
def test_istioctl_dashboard_urls_answer_html(addons: dict[str, str]) -> None:
    """Do `istioctl dashboard grafana|kiali --browser=false` print URLs that answer 200 with
    an HTML page saying whose view it is?"""
    assert addons["kiali"].endswith("/kiali")
    for name, says in (("grafana", "Grafana-compatible view"), ("kiali", "Kiali-compatible")):
        status, kind, body = get(addons[name])
        assert status == 200, body
        assert kind.startswith("text/html") and says in body


@needs_prometheus
def test_grafana_api(addons: dict[str, str]) -> None:
    """Grafana's /api/health, /api/search (Istio's dashboards in folder istio) and
    /api/dashboards/uid/UID (the dashboard's JSON as Istio ships it; an unknown uid is
    Grafana's 404)."""
    base = addons["grafana"]
    assert get_json(f"{base}/api/health") == {"database": "ok", "version": "12.0.1"}
    hits = get_json(f"{base}/api/search?query=Istio%20Service")
    assert isinstance(hits, list)
    assert [(h["title"], h["type"], h["folderTitle"]) for h in hits] == [
        ("Istio Service Dashboard", "dash-db", "istio")]
    titles = {h["title"] for h in get_json(f"{base}/api/search?type=dash-db")}  # type: ignore[attr-defined]
    assert titles == {"Istio Mesh Dashboard", "Istio Service Dashboard",
                      "Istio Workload Dashboard"}
    answer = get_json(f"{base}/api/dashboards/uid/{hits[0]['uid']}")
    shipped = json.loads((DASHBOARDS_DIR / "istio-service-dashboard.json").read_text())
    assert answer["dashboard"]["panels"] == shipped["panels"]  # type: ignore[index]
    assert answer["meta"]["provisioned"] is True  # type: ignore[index]
    assert get_json(f"{base}/api/dashboards/uid/no-such-dashboard", 404) == {
        "message": "Dashboard not found"}
    status, _, page = get(f"{base}/d/istio-service-dashboard/x?from=yesterday")
    assert status == 400 and "now-15m" in page  # says what a time looks like


def _panel(page: str, title: str) -> str:
    found = re.search(rf'<section class="panel"[^>]*data-title="{re.escape(title)}"'
                      r'[^>]*>.*?</section>', page, re.S)
    assert found is not None, f"no panel {title!r} in the page"
    return found[0]


@needs_prometheus
def test_service_dashboard_draws_request_rate(addons: dict[str, str], traffic: str,
                                              mesh: MeshNamespace) -> None:
    """After requests from curl, does Istio's Service dashboard for httpbin draw the
    request-rate panel from Prometheus: a series named by Istio's legend format, as a line?"""
    query = urllib.parse.urlencode({"var-service": traffic, "from": "now-5m", "to": "now"})
    url = f"{addons['grafana']}/d/istio-service-dashboard/istio-service-dashboard?{query}"

    def drawn() -> tuple[str, str] | None:
        status, _, page = get(url)
        assert status == 200, page
        panel = _panel(page, SERVICE_PANEL)
        return (page, panel) if 'data-series="0"' not in panel else None
    page, panel = poll(drawn, "the service dashboard's request panel to have a series",
                       timeout=60, interval=1)
    assert "<polyline" in panel or "<circle" in panel
    assert f"curl.{mesh.name} : 200 (\N{CLOSED LOCK WITH KEY}mTLS)" in panel
    assert f"SERVICE: {traffic}" in page  # the text panel, its variable filled in
    status, _, mesh_page = get(f"{addons['grafana']}/d/1a9a8ea49444aae205c7737573e894f9/"
                               "istio-mesh-dashboard?from=now-5m")
    assert status == 200, mesh_page
    workloads = _panel(mesh_page, "HTTP/gRPC Workloads")  # a table: Istio's merged queries
    assert f"<td>httpbin.{mesh.name}</td>" in workloads and "<th>P50 Latency</th>" in workloads
    query = urllib.parse.urlencode({"var-namespace": mesh.name, "var-workload": "httpbin",
                                    "from": "now-5m"})
    status, _, workload_page = get(f"{addons['grafana']}/d/istio-workload-dashboard/x?{query}")
    assert status == 200, workload_page
    assert 'data-series="0"' not in _panel(workload_page, SERVICE_PANEL)


def _graph(base: str, namespace: str, graph_type: str,
           mesh: MeshNamespace | None = None) -> dict[str, object]:
    """Kiali's graph of the last 60 s. With `mesh`, one more curl -> httpbin request first:
    the graph shows rates, and a series whose every scrape saw the same count (all of the
    `traffic` fixture's requests before its first scrape) has a rate of 0 until it grows."""
    if mesh is not None:
        mesh.curl("http://httpbin:8000/get")
    query = urllib.parse.urlencode({"namespaces": namespace, "graphType": graph_type,
                                    "duration": "60s"})
    answer = get_json(f"{base}/api/namespaces/graph?{query}")
    assert isinstance(answer, dict)
    return answer


@needs_prometheus
def test_kiali_graph_has_mtls_edge(addons: dict[str, str], traffic: str,
                                   mesh: MeshNamespace) -> None:
    """Does Kiali's graph API give an edge from the curl workload to the httpbin workload with
    its request rate, its 200s and isMTLS 100 (Kiali's percentage), in Kiali's JSON layout?"""
    def edge() -> tuple[dict[str, object], dict[str, object]] | None:
        graph = _graph(addons["kiali"], mesh.name, "workload", mesh)
        nodes = {n["data"]["id"]: n["data"]
                 for n in graph["elements"]["nodes"]}  # type: ignore[index]
        for e in graph["elements"]["edges"]:  # type: ignore[index]
            pair = (nodes[e["data"]["source"]].get("workload"),
                    nodes[e["data"]["target"]].get("workload"))
            if pair == ("curl", "httpbin"):
                return graph, e["data"]
        return None
    graph, data = poll(edge, "Kiali's graph to have the curl -> httpbin edge", timeout=60,
                       interval=1)
    assert graph["graphType"] == "workload" and graph["duration"] == 60
    assert data["isMTLS"] == "100"
    traffic_data = data["traffic"]
    assert traffic_data["protocol"] == "http"  # type: ignore[index]
    assert float(traffic_data["rates"]["http"]) > 0  # type: ignore[index]
    assert set(traffic_data["responses"]) == {"200"}  # type: ignore[index]
    assert data["sourcePrincipal"] == f"spiffe://cluster.local/ns/{mesh.name}/sa/curl"
    status, _, page = get(f"{addons['kiali']}?namespaces={mesh.name}&duration=60s")
    edge_drawn = re.search(r'<g class="edge-label"[^>]*data-mtls="100">.*?</g>', page, re.S)
    assert status == 200 and edge_drawn is not None and 'class="padlock"' in edge_drawn[0]
    listed = get_json(f"{addons['kiali']}/api/namespaces")
    assert {"name": mesh.name, "cluster": "Kubernetes", "isAmbient": False,
            "isControlPlane": False, "labels": {}, "annotations": {},
            "revision": ""} in listed  # type: ignore[operator]


@needs_prometheus
def test_kiali_versioned_app_and_service_graphs(addons: dict[str, str], traffic: str,
                                                mesh: MeshNamespace) -> None:
    """Are the other graph types Kiali's: app nodes with their version, service nodes?"""
    def graph_of(kind: str, node_type: str) -> dict[str, object] | None:
        graph = _graph(addons["kiali"], mesh.name, kind, mesh)
        nodes = [n["data"] for n in graph["elements"]["nodes"]]  # type: ignore[index]
        return graph if any(n["nodeType"] == node_type for n in nodes) else None
    versioned = poll(lambda: graph_of("versionedApp", "app"), "a versionedApp graph",
                     timeout=60, interval=1)
    apps = {(n["data"]["app"], n["data"].get("version"))
            for n in versioned["elements"]["nodes"]  # type: ignore[index]
            if n["data"]["nodeType"] == "app"}
    assert ("httpbin", "v1") in apps
    service = poll(lambda: graph_of("service", "service"), "a service graph", timeout=30)
    names = {n["data"].get("service") for n in service["elements"]["nodes"]}  # type: ignore[index]
    assert "httpbin" in names


@needs_prometheus
def test_kiali_errors_and_empty_graph(addons: dict[str, str]) -> None:
    """Bad parameters get Kiali's 400 JSON; a namespace without traffic an empty graph, and
    the page says there was no traffic."""
    base = addons["kiali"]
    assert get_json(f"{base}/api/namespaces/graph?namespaces=default&graphType=bogus", 400) == {
        "error": "Invalid graphType [bogus]"}
    assert get_json(f"{base}/api/namespaces/graph?graphType=app", 400) == {
        "error": "At least one namespace must be specified via the namespaces query parameter."}
    assert get_json(f"{base}/api/namespaces/graph?namespaces=default&duration=soon", 400) == {
        "error": "Invalid duration [soon]"}
    empty = _graph(base, "no-traffic-here", "workload")
    assert empty["elements"] == {"nodes": [], "edges": []}
    status, _, page = get(f"{base}?namespaces=no-traffic-here&duration=60s")
    assert status == 200 and "no traffic in the last 60 s" in page
    assert get(f"{base}/healthz")[0] == 200
    listed = {n["name"] for n in get_json(f"{base}/api/namespaces")}  # type: ignore[attr-defined]
    assert "istio-system" in listed


# -- without a cluster: the pieces the cluster tests cannot steer -------------------------------

def test_grafana_variables_as_prometheus_datasource_writes_them() -> None:
    """One plain value as is; multi-value or include-All variables as a regex escaped for a
    PromQL string (`\\\\.`), `(a|b)` for several values; All as every option, or the variable's
    allValue; built-ins too."""
    service = Variable("service", "Service", "query", False, False, None, ["a.b"], ["a.b"])
    qrep = Variable("qrep", "Reporter", "custom", True, False, None,
                    ["source", "destination"], ["destination"])
    srcwl = Variable("srcwl", "Client", "query", True, True, None, ["curl", "sleep.v1"], [ALL])
    anyns = Variable("srcns", "NS", "query", True, True, ".*", ["x"], [ALL])
    expr = ('x{destination_service="$service",reporter=~"$qrep",source_workload=~"${srcwl}",'
            'ns=~"[[srcns]]"}[$__rate_interval] $unknown')
    assert interpolate(expr, [service, qrep, srcwl, anyns], {"__rate_interval": "60s"}) == (
        'x{destination_service="a.b",reporter=~"destination",'
        'source_workload=~"(curl|sleep\\\\.v1)",ns=~".*"}[60s] $unknown')


def test_grafana_time_range_and_table_merge() -> None:
    """`now-5m` and epoch milliseconds parse, anything else is a clear error; the table's rows
    from several queries merge where the labels they share agree (Grafana's `merge`)."""
    assert parse_time("now-5m", 1000.0) == 700.0 and parse_time("1500", 0) == 1.5
    with pytest.raises(DashboardError, match="now-15m"):
        parse_time("yesterday", 0)
    rows: list[tuple[dict[str, str], dict[str, float]]] = []
    merge_rows(rows, {"wl": "a", "svc": "a.ns"}, "Value #requests", 2.0)
    merge_rows(rows, {"wl": "b", "svc": "b.ns"}, "Value #requests", 1.0)
    merge_rows(rows, {"wl": "b"}, "Value #p50", 7.0)
    assert rows == [({"wl": "a", "svc": "a.ns"}, {"Value #requests": 2.0}),
                    ({"wl": "b", "svc": "b.ns"}, {"Value #requests": 1.0, "Value #p50": 7.0})]


def _sample(source: str, dest: str, code: str, security: str) -> dict[str, str]:
    return {"source_workload": source, "source_workload_namespace": "ns",
            "source_canonical_service": source, "source_canonical_revision": "v1",
            "destination_workload": f"{dest}-v1", "destination_workload_namespace": "ns",
            "destination_canonical_service": dest, "destination_canonical_revision": "v1",
            "destination_service_name": dest, "destination_service_namespace": "ns",
            "destination_service": f"{dest}.ns.svc.cluster.local", "request_protocol": "http",
            "response_code": code, "response_flags": "-" if code != "0" else "DC",
            "connection_security_policy": security}


def test_kiali_graph_rates_errors_and_mtls_share() -> None:
    """Kiali's rate names and precisions: 5xx and no-response count as errors
    (httpPercentErr), isMTLS is the mutual-TLS share in percent, responses in percent; a
    service graph keeps the traffic generator and turns the called workloads into services."""
    samples = [(_sample("web", "api", "200", "mutual_tls"), 3.0),
               (_sample("web", "api", "503", "none"), 1.0),
               (_sample("api-v1", "db", "0", "mutual_tls"), 0.5)]
    query = GraphQuery(("ns",), "versionedApp", 60)
    graph = graph_config(samples, query, 1000.0)
    nodes = {n["data"]["id"]: n["data"] for n in graph["elements"]["nodes"]}
    edges = {(nodes[e["data"]["source"]]["app"], nodes[e["data"]["target"]]["app"]): e["data"]
             for e in graph["elements"]["edges"]}
    web_api = edges[("web", "api")]
    assert web_api["isMTLS"] == "75"
    assert web_api["traffic"]["rates"] == {"http": "4.00", "http5xx": "1.00",
                                           "httpPercentErr": "25.0", "httpPercentReq": "100.0"}
    assert web_api["traffic"]["responses"]["503"] == {
        "flags": {"-": "25.0"}, "hosts": {"api.ns.svc.cluster.local": "25.0"}}
    assert edges[("api", "db")]["traffic"]["rates"]["httpNoResponse"] == "0.50"
    service = graph_config(samples, GraphQuery(("ns",), "service", 60), 1000.0)
    kinds = sorted((n["data"]["nodeType"], n["data"].get("service") or n["data"]["workload"])
                   for n in service["elements"]["nodes"])
    assert kinds == [("service", "api"), ("service", "db"), ("workload", "web")]


def test_kiali_graph_query_errors_are_kialis() -> None:
    for query, message in (({"namespaces": ["a"], "graphType": ["x"]}, "Invalid graphType [x]"),
                           ({"namespaces": ["a"], "duration": ["1 min"]},
                            "Invalid duration [1 min]"),
                           ({}, "At least one namespace must be specified"),
                           ({"namespaces": ['a"b']}, 'Invalid namespace [a"b]')):
        with pytest.raises(BadRequest, match=re.escape(message)):
            GraphQuery.parse(query)
