"""Do the observability helpers work against the embedded cluster's real Prometheus and span
collector: Istio's "Querying Metrics from Prometheus" task run query by query, `labs.metrics`
(instant and range queries, edges, every error a learner can cause, locating Prometheus),
`labs.tracing` (one request's trace, a missing trace) and `labs.charts` (the panels, bars and
edges each figure draws)?

Real session cluster, real Envoy sidecars, real `prometheus` (Debian package): Bookinfo and a
meshed curl in one namespace, a curl without a sidecar in another, deployed once for the module.
Metrics and spans arrive a scrape or a flush later, so every read waits with `until=`/`poll`.
"""

from __future__ import annotations

import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import poll
from matplotlib.figure import Figure
from mesh_support import (
    MeshNamespace,
    destination_rule,
    mesh_namespace_fixture,
    route,
    virtual_service,
    yaml_stream,
)

from labs import charts
from labs.cluster import ClusterRef, EmbeddedCluster
from labs.metrics import (
    PROMETHEUS_URL_ENV,
    Edge,
    MetricsError,
    Sample,
    Vector,
    mesh_edges,
    prometheus_url,
    query,
    query_range,
)
from labs.tracing import ZIPKIN_URL_ENV, Span, TracingError, trace, traces, zipkin_url
from labs.traffic import probe

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None,
                                reason="no `prometheus` binary on PATH (Debian: apt-get install "
                                       "prometheus): the embedded cluster runs without one")
ROUNDS, PER_ROUND = 2, 5
# The task's queries as its page writes them (Bookinfo in `default`; here in the test's namespace).
TASK_QUERIES = (
    "istio_requests_total",
    'istio_requests_total{destination_service="productpage.default.svc.cluster.local"}',
    'istio_requests_total{destination_service="reviews.default.svc.cluster.local", destination_version="v3"}',  # noqa: E501
    'rate(istio_requests_total{destination_service=~"productpage.*", response_code="200"}[5m])',
)
mesh = mesh_namespace_fixture("bookinfo", "curl", prefix="obs")


@pytest.fixture(scope="module")
def outside(cluster: ClusterRef) -> Iterator[MeshNamespace]:
    """A namespace without injection, with curl: a client outside the mesh."""
    name = f"obs-out-{secrets.token_hex(3)}"
    assert cluster.kubectl("create", "namespace", name).returncode == 0
    client = MeshNamespace(cluster, name)
    try:
        client.deploy("curl")
        yield client
    finally:
        cluster.kubectl("delete", "namespace", name, "--timeout=60s", timeout=90)


@pytest.fixture(scope="module")
def traffic(cluster: ClusterRef, mesh: MeshNamespace, outside: MeshNamespace) -> MeshNamespace:
    """Step 2 of the task — send traffic to productpage — in rounds, each waited for in
    Prometheus (a rate only counts what a counter gained after its first scrape); reviews is
    routed to v3 so the task's v3 query has an answer; plus plaintext calls to details."""
    mesh.apply(yaml_stream(destination_rule("reviews", "v1", "v2", "v3"),
                           virtual_service("reviews", route("reviews", "v3"))))
    productpage = (f'istio_requests_total{{reporter="destination",destination_service='
                   f'"productpage.{mesh.name}.svc.cluster.local"}}')
    plaintext = (f'istio_requests_total{{reporter="destination",destination_workload="details-v1",'
                 f'destination_workload_namespace="{mesh.name}",connection_security_policy="none"}}')
    for done in range(1, ROUNDS + 1):
        sent = probe("http://productpage:9080/productpage", namespace=mesh.name, n=PER_ROUND,
                     cluster=cluster)
        assert sent.fraction(200) == 1, sent
        plain = probe(f"http://details.{mesh.name}:9080/details/0", namespace=outside.name,
                      n=2, cluster=cluster)
        assert plain.fraction(200) == 1, plain
        for promql, total in ((f"sum({productpage})", done * PER_ROUND),
                              (f"sum({plaintext})", done * 2)):
            counted = query(promql, cluster=cluster, deadline=20,
                            until=lambda rows, n=total: rows.total() >= n)
            assert counted.settled, counted
    return mesh


# --- Istio's task, query by query (`default` is this test's namespace) ----------------------

def test_task_queries_answer_as_the_task_describes(cluster: ClusterRef,
                                                   traffic: MeshNamespace) -> None:
    ns = traffic.name
    everything, productpage, v3, rate = (
        query(promql.replace(".default.", f".{ns}."), cluster=cluster) for promql in TASK_QUERIES)
    assert {"reporter", "source_workload", "destination_workload", "response_code",
            "connection_security_policy"} <= set(everything[0].labels)

    assert productpage.value(reporter="destination") >= ROUNDS * PER_ROUND
    assert {s.labels["destination_workload"] for s in productpage} == {"productpage-v1"}

    assert v3.value(reporter="destination") >= ROUNDS * PER_ROUND
    assert {s.labels["destination_version"] for s in v3} == {"v3"}

    ours = [s for s in rate if s.labels["destination_workload_namespace"] == ns]
    assert ours and all(s.value > 0 for s in ours), rate


# --- labs.metrics ---------------------------------------------------------------------------

def test_query_range_returns_points_within_the_range(cluster: ClusterRef,
                                                     traffic: MeshNamespace) -> None:
    end = poll(lambda: query("time()", cluster=cluster)[0].value, "Prometheus' time")
    promql = f'sum(istio_requests_total{{destination_workload_namespace="{traffic.name}"}})'
    series = query_range(promql, end - 30, end, 2, cluster=cluster)
    assert len(series) == 1
    times = [t for t, _ in series[0].points]
    assert times == sorted(times) and end - 30 <= times[0] and times[-1] <= end
    values = [v for _, v in series[0].points]
    assert values[-1] >= ROUNDS * PER_ROUND and values == sorted(values)  # a counter only grows


def test_mesh_edges_tell_mutual_tls_from_plaintext(cluster: ClusterRef, traffic: MeshNamespace,
                                                   outside: MeshNamespace) -> None:
    edges = {(e.source, e.destination): e for e in mesh_edges([traffic.name], cluster=cluster)}
    assert edges[("curl", "productpage-v1")].security == "mutual_tls"
    assert edges[("productpage-v1", "reviews-v3")].security == "mutual_tls"
    plaintext = edges[("unknown", "details-v1")]
    assert plaintext.security == "none" and plaintext.rate > 0
    assert all(e.destination_namespace == traffic.name for e in edges.values())


def test_a_syntax_error_says_what_prometheus_said(cluster: ClusterRef) -> None:
    with pytest.raises(MetricsError) as caught:
        query('sum(rate(istio_requests_total{reporter="destination"}[1m])', cluster=cluster)
    message = str(caught.value)
    assert message.startswith("Prometheus rejected the query (bad_data): ")
    assert "unclosed left parenthesis" in message and "Fix the PromQL" in message
    assert caught.value._render_traceback_() == [f"MetricsError: {message}"]


def test_query_range_refuses_a_backwards_range(cluster: ClusterRef) -> None:
    with pytest.raises(MetricsError, match="start <= end and a positive step"):
        query_range("up", 100, 50, 1, cluster=cluster)


def test_until_that_never_holds_returns_the_last_answer_marked(cluster: ClusterRef) -> None:
    rows = query("vector(1)", cluster=cluster, until=lambda r: r.total() > 1, deadline=1.5,
                 interval=0.5)
    assert not rows.settled and rows.total() == 1
    assert str(rows).startswith("did not settle within 1.5 s")


def test_no_prometheus_at_the_address_is_one_clear_error(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv(PROMETHEUS_URL_ENV, f"http://127.0.0.1:{port}/")
    assert prometheus_url() == f"http://127.0.0.1:{port}"
    with pytest.raises(MetricsError, match=r"did not answer .*`meshlab status`"):
        query("up")


def test_other_clusters_are_told_how_to_reach_prometheus_and_zipkin(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(PROMETHEUS_URL_ENV, raising=False)
    monkeypatch.delenv(ZIPKIN_URL_ENV, raising=False)
    kind = ClusterRef(tmp_path / "kubeconfig", "kind-istio")
    with pytest.raises(MetricsError, match=r"kubectl port-forward -n istio-system svc/prometheus "
                                           r"9090:9090`, then set MESHLAB_PROMETHEUS_URL="):
        prometheus_url(kind)
    with pytest.raises(TracingError, match=r"svc/zipkin 9411:9411`, then set MESHLAB_ZIPKIN_URL"):
        zipkin_url(kind)
    stopped = EmbeddedCluster("stopped", tmp_path / "state")
    ref = ClusterRef(stopped.kubeconfig, stopped.name, stopped)
    with pytest.raises(MetricsError, match="is not running: start it with `meshlab up --name "
                                           "stopped`"):
        prometheus_url(ref)
    with pytest.raises(TracingError, match="is not running"):
        zipkin_url(ref)


def test_a_vector_shows_the_labels_that_vary() -> None:
    rows = Vector("q", [Sample({"reporter": "source", "job": "istio-mesh", "app": "x"}, 3.0),
                        Sample({"reporter": "destination", "job": "istio-mesh", "app": "x"}, 0.25)])
    assert str(rows).splitlines() == ["reporter     value", "source       3    ",
                                      "destination  0.25 "]
    assert rows.total() == 3.25 and rows.value(reporter="source") == 3.0
    assert "<td>destination</td>" in rows._repr_html_()
    assert str(Vector("q", [])).startswith("no series matched")


# --- labs.tracing ---------------------------------------------------------------------------

def send_traced(mesh: MeshNamespace, cluster: ClusterRef) -> str:
    trace_id = secrets.token_hex(16)
    sent = probe("http://productpage:9080/productpage", namespace=mesh.name, n=1,
                 cluster=cluster, headers={"x-b3-traceid": trace_id,
                                            "x-b3-spanid": trace_id[:16], "x-b3-sampled": "1"})
    assert sent.fraction(200) == 1, sent
    return trace_id


def test_a_trace_joins_the_spans_of_one_request(cluster: ClusterRef,
                                                traffic: MeshNamespace) -> None:
    ns = traffic.name
    trace_id = send_traced(traffic, cluster)
    spans = trace(trace_id, services=[f"productpage.{ns}", f"reviews.{ns}", f"ratings.{ns}"],
                  cluster=cluster)
    assert {s.trace_id for s in spans} == {trace_id}
    assert [s.start_us for s in spans] == sorted(s.start_us for s in spans)
    by_id = {s.id: s for s in spans}
    ratings = next(s for s in spans if s.service == f"ratings.{ns}" and s.kind == "SERVER")
    chain = []
    while ratings.parent_id in by_id:
        ratings = by_id[ratings.parent_id]
        chain.append(ratings.service)
    assert chain.index(f"reviews.{ns}") < chain.index(f"productpage.{ns}")
    assert any(t[0].trace_id == trace_id for t in traces(f"productpage.{ns}", limit=50,
                                                         cluster=cluster))


def test_no_such_trace_says_what_to_send(cluster: ClusterRef) -> None:
    with pytest.raises(TracingError, match=r"no trace 0+1 after 1 s\. Was a request sent with "
                                           r"this trace id \(header x-b3-traceid"):
        trace("0" * 31 + "1", wait=1, cluster=cluster)


# --- labs.charts ----------------------------------------------------------------------------

def line_labels(figure: Figure, title: str) -> list[str]:
    ax = next(a for a in figure.axes if a.get_title() == title)
    return [str(line.get_label()) for line in ax.get_lines()]


def test_service_dashboard_draws_istio_panels(cluster: ClusterRef,
                                              traffic: MeshNamespace) -> None:
    figure = charts.service_dashboard(f"productpage.{traffic.name}.svc.cluster.local",
                                      minutes=2, cluster=cluster)
    assert [a.get_title() for a in figure.axes] == [p.title for p in charts.SERVICE_PANELS]
    assert line_labels(figure, "Client Request Duration") == ["P50", "P90", "P99"]
    assert line_labels(figure, "Client Request Volume") == ["Client Request Volume"]
    assert f"curl.{traffic.name} : 200 (mTLS)" in line_labels(
        figure, "Incoming Requests By Source And Response Code")
    volume = next(a for a in figure.axes if a.get_title() == "Client Request Volume")
    assert max(volume.get_lines()[0].get_ydata()) > 0


def test_workload_dashboard_shows_plaintext_callers_apart(cluster: ClusterRef,
                                                          traffic: MeshNamespace) -> None:
    figure = charts.workload_dashboard("details-v1", traffic.name, minutes=2, cluster=cluster)
    assert [a.get_title() for a in figure.axes] == [p.title for p in charts.WORKLOAD_PANELS]
    callers = line_labels(figure, "Incoming Requests By Source And Response Code")
    assert f"productpage-v1.{traffic.name} : 200 (mTLS)" in callers
    assert "unknown.unknown : 200" in callers


def test_a_panel_without_data_says_so(cluster: ClusterRef) -> None:
    figure = charts.workload_dashboard("nothing-here", "nowhere", minutes=1, cluster=cluster)
    assert all(not a.get_lines() and a.texts[0].get_text() == "No data" for a in figure.axes)


def test_dashboard_queries_are_istios_with_the_variables_filled_in() -> None:
    duration = charts.SERVICE_PANELS[2].targets[1][1]
    assert duration == (
        '(histogram_quantile(0.90, sum(irate(istio_request_duration_milliseconds_bucket{reporter=~"$qrep",destination_service="$service"}[$__rate_interval])) by (le)) / 1000) '  # noqa: E501 - upstream's text
        'or histogram_quantile(0.90, sum(irate(istio_request_duration_seconds_bucket{reporter=~"$qrep",destination_service="$service"}[$__rate_interval])) by (le))')  # noqa: E501
    filled = charts.fill(charts.SERVICE_PANELS[3].targets[0][1],
                         {"service": "a.b.svc.cluster.local", "qrep": "destination",
                          "__rate_interval": "1m"})
    assert filled == (
        'round(sum(irate(istio_requests_total{connection_security_policy="mutual_tls", '
        'destination_service="a.b.svc.cluster.local", reporter=~"destination", '
        'source_workload=~".*", source_workload_namespace=~".*"}[1m])) by (source_workload, '
        'source_workload_namespace, response_code), 0.001)')


def span(id: str, parent: str | None, service: str, kind: str, start: int, duration: int
         ) -> Span:
    return Span("t1", id, parent, f"{service}:9080/*", service, kind, start, duration)


def test_waterfall_has_one_bar_per_span_children_under_parents() -> None:
    spans = [span("c", "b", "reviews.ns", "SERVER", 1_300, 400),
             span("a", None, "productpage.ns", "SERVER", 1_000, 2_000),
             span("d", "a", "productpage.ns", "CLIENT", 1_100, 100),
             span("b", "a", "productpage.ns", "CLIENT", 1_250, 500)]
    figure = charts.trace_waterfall(spans)
    ax = figure.axes[0]
    bars = ax.patches
    assert len(bars) == 4
    assert [(round(b.get_x(), 2), round(b.get_width(), 2)) for b in bars] == [
        (0.0, 2.0), (0.1, 0.1), (0.25, 0.5), (0.3, 0.4)]  # a, d, b, c in ms from the start
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0].startswith("productpage.ns server") and labels[3].startswith(
        "    reviews.ns server")
    assert ax.get_title() == "trace t1: 4 spans, 2.0 ms"
    with pytest.raises(ValueError, match="at least one span"):
        charts.trace_waterfall([])


def test_service_graph_draws_each_edge_with_its_security() -> None:
    edges = [Edge("curl", "a", "productpage-v1", "b", "mutual_tls", 2.0),
             Edge("productpage-v1", "b", "details-v1", "b", "mutual_tls", 1.0),
             Edge("unknown", "unknown", "details-v1", "b", "none", 0.5),
             Edge("curl", "a", "details-v1", "b", "none", 0.1),
             Edge("curl", "a", "details-v1", "b", "mutual_tls", 0.2)]
    ax = charts.service_graph(edges).axes[0]
    arrows = {t.get_gid(): t.arrow_patch for t in ax.texts if str(t.get_gid()).startswith("edge:")}
    assert set(arrows) == {
        "edge:curl\na->productpage-v1\nb:mutual_tls",
        "edge:productpage-v1\nb->details-v1\nb:mutual_tls",
        "edge:unknown->details-v1\nb:none", "edge:curl\na->details-v1\nb:none",
        "edge:curl\na->details-v1\nb:mutual_tls"}
    plaintext = arrows["edge:unknown->details-v1\nb:none"]
    assert plaintext.get_linestyle() == "dashed" and plaintext.get_edgecolor()[:3] == pytest.approx(
        (0xc6 / 255, 0x28 / 255, 0x28 / 255))
    assert arrows["edge:curl\na->productpage-v1\nb:mutual_tls"].get_linestyle() == "solid"
    nodes = {t.get_text(): t.get_position() for t in ax.texts
             if str(t.get_gid()).startswith("node:")}
    assert nodes["curl\na"][0] < nodes["productpage-v1\nb"][0] < nodes["details-v1\nb"][0]
    assert {t.get_text() for t in ax.texts} >= {"mTLS 2/s", "plaintext 0.5/s"}
    with pytest.raises(ValueError, match="send some requests first"):
        charts.service_graph([])
