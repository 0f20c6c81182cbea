"""The course notebooks run top to bottom with nbval — solutions, hidden tests (`grader.verify`,
which checks the cluster in a fresh process) and "Check my work" — on a fresh embedded cluster,
day 1 in course order; and they are committed clean: no outputs, no sleeps."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from notebook_support import COURSE, course_notebooks, run_notebooks, run_timeout

from labs.cluster import EmbeddedCluster

DAY1 = ("day1/01-install.ipynb", "day1/02-traffic.ipynb", "day1/03-mtls.ipynb",
        "day1/04-gateways.ipynb", "day1/05-resilience.ipynb", "day1/06-observability.ipynb",
        "day1/07-architecture.ipynb")
UNSETTLED = "did not settle"


@pytest.mark.timeout(run_timeout(len(DAY1)) + 60)
def test_day1_runs_in_course_order_on_a_fresh_cluster(notebook_cluster: EmbeddedCluster,
                                                      tmp_path: Path) -> None:
    run = run_notebooks(course_notebooks(*DAY1), tmp_path)

    assert not run.failed(), run.describe_failures()
    assert UNSETTLED not in run.text(), "a probe's until= never held with the solutions"
    install = run.text(DAY1[0])
    assert "<title>Simple Bookstore App</title>" in install
    assert "istio-proxy" in install and "docker.io/istio/proxyv2" in install
    traffic = run.text(DAY1[1])
    assert "destinationrule.networking.istio.io/reviews created" in traffic
    assert "virtualservice.networking.istio.io/reviews created" in traffic
    # After the routes: all thirty requests from reviews v1, and jason's from v2.
    assert re.search(r"^v1 +30 +100\.0%$", traffic, re.M), traffic
    assert re.search(r"^v2 +30 +100\.0%$", traffic, re.M), traffic
    mtls = run.text(DAY1[2])
    assert "peerauthentication.security.istio.io/default created" in mtls
    assert re.search(r"^000 +2 +100\.0%$", mtls, re.M), mtls  # plaintext refused once STRICT
    assert "gateway.gateway.networking.k8s.io/bookinfo-gateway created" in run.text(DAY1[3])
    resilience = run.text(DAY1[4])
    # A 0.5 s timeout on reviews against a 2 s delay on ratings: Envoy's own 504.
    assert re.search(r"^504 +3 +100\.0%$", resilience, re.M), resilience
    assert "upstream request timeout\n504" in resilience
    # Attempts counted at httpbin's sidecar: 1 by default, 4 with retries, 4 failed tries of
    # /delay/1 with a 0.5 s per-try timeout, and 1 (a 200) after the fix.
    attempts = re.findall(r"^curl got (\d+) for http://httpbin:8000(/\w+/\d+)\?probe=\w+; "
                          r"httpbin's sidecar logged (\d+) attempt", resilience, re.M)
    assert attempts == [("503", "/status/503", "1"), ("503", "/status/503", "4"),
                        ("504", "/delay/1", "4"), ("200", "/delay/1", "1"),
                        ("503", "/status/503", "4")], attempts
    assert "504 URX,UT upstream_per_try_timeout" in resilience
    # Circuit breaking: both codes, and a non-zero overflow counter.
    assert re.search(r"^Code 200 : \d+", resilience, re.M) and re.search(
        r"^Code 503 : \d+", resilience, re.M), resilience
    assert re.search(r"upstream_rq_pending_overflow: [1-9]", resilience), resilience
    # Outlier detection: refused while maxEjectionPercent is 10 %, then flaky-v2 ejected.
    assert re.search(r"'ejections_overflow': [1-9]", resilience), resilience
    assert re.search(r"^200 +20 +100\.0%$", resilience, re.M), resilience
    assert "::health_flags::/failed_outlier_check" in resilience
    observability = run.text("day1/06-observability.ipynb")
    # Istio's Prometheus addon, reached as the task does; PromQL from it, the learner's query
    # saved, the charts drawn.
    assert re.search(r"^prometheus +ClusterIP +\S+ +<none> +9090/TCP", observability, re.M)
    assert re.search(r"^http://localhost:\d+\nskipping opening a browser", observability,
                     re.M), observability
    assert "configmap/golden-signals created" in observability
    assert "'destination_service': 'productpage.bookinfo.svc.cluster.local'" in observability
    assert observability.count("<Figure size") == 4, observability
    # The migration proven from metrics: plaintext refused, and none of it counted since.
    assert "peerauthentication.security.istio.io/default created" in observability
    assert re.search(r"^none +unknown +20 *$", observability, re.M), observability
    assert "plaintext requests counted since the first table: 0.0" in observability
    assert re.search(r'"GET /productpage HTTP/1\.1" 200 .* inbound\|9080\|\|', observability)
    # Istio's Grafana, Jaeger and Kiali addons applied, and each dashboard's URL printed.
    assert "deployment.apps/kiali condition met" in observability, observability
    # (istioctl ends "skipping opening a browser" without a newline, as upstream's does)
    assert len(re.findall(r"http://localhost:\d+(?:/kiali)?\nskipping opening a browser",
                          observability)) == 4, observability
    architecture = run.text("day1/07-architecture.ipynb")
    # What istiod pushed: productpage's identity, and the 80/20 VirtualService as Envoy routes.
    assert "SPIFFE:  spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage" in architecture
    assert re.search(r'"name": "outbound\|9080\|v1\|reviews\.troubleshoot\.svc\.cluster\.local",'
                     r'\s+"weight": 80', architecture), architecture
    # istioctl analyze: the seeded mistakes, then clean after the fix.
    assert ('Error [IST0101] (VirtualService troubleshoot/ratings) Referenced host not found: '
            '"rating"') in architecture
    assert "Info [IST0118] (Service troubleshoot/productpage) Port name web" in architecture
    assert "✔ No validation issues found when analyzing namespace: troubleshoot." in architecture
    # The STRICT break as the client's sidecar logs and describes it, and ratings back after.
    assert "503 UC upstream_reset_before_response_started{connection_termination}" in architecture
    assert "Traffic Policy TLS Mode: DISABLE" in architecture
    assert re.search(r"^200 +3 +100\.0%$", architecture, re.M), architecture


def test_notebooks_are_committed_without_outputs() -> None:
    for path in sorted(COURSE.glob("day*/*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path


def test_notebooks_wait_by_polling_not_sleeping() -> None:
    """Does every wait for the mesh say what it waits for (`probe(..., until=...)`), rather
    than sleep for a time that is too long on a fast machine and too short on a slow one?"""
    for path in sorted(COURSE.glob("day*/*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            assert "sleep(" not in cell.source, (path, cell.source)


def heading_ids(notebook: nbformat.NotebookNode) -> set[str]:
    """The ids JupyterLab gives markdown headings (the text, spaces replaced by '-')."""
    return {line.lstrip("#").strip().replace(" ", "-")
            for cell in notebook.cells if cell.cell_type == "markdown"
            for line in cell.source.splitlines() if line.startswith("#")}


def test_check_anchors_point_at_headings_of_their_day() -> None:
    from labs.checks.registry import find, lab_ids

    for lab in lab_ids():
        day = lab.split(".")[0]
        ids = set().union(*(heading_ids(nbformat.read(path, as_version=4))
                            for path in (COURSE / day).glob("*.ipynb")))
        for item in find(lab):
            assert not item.anchor or item.anchor in ids, (item.id, item.anchor)
