"""Lab day1.gateways runs top to bottom alone on a fresh embedded cluster, as nbgrader replays
it — catching up with `labs.deploy_bookinfo()`, then solutions, hidden tests (`grader.verify`
checks the cluster in a fresh process) and "Check my work" — and what it shows the learner is
what Istio shows: a refused connection before any Gateway, the Bookinfo page through the
istio-ingressgateway's node port and through the Gateway API Gateway's own deployment, a 404 for
a path no route matches, and the status conditions of a good and of a broken HTTPRoute."""

from __future__ import annotations

import re
from pathlib import Path

from notebook_support import course_notebooks, run_notebooks

from labs.cluster import EmbeddedCluster

TITLE = "<title>Simple Bookstore App</title>"


def test_gateways_lab_runs_alone_on_a_fresh_cluster(notebook_cluster: EmbeddedCluster,
                                                    tmp_path: Path) -> None:
    run = run_notebooks(course_notebooks("day1/04-gateways.ipynb"), tmp_path)
    assert not run.failed(), run.describe_failures()
    text = run.text()

    url = re.search(r"GATEWAY_URL = 127\.0\.0\.1:(\d+)", text)
    api_url = re.search(r"GATEWAY_API_URL = 127\.0\.0\.1:(\d+)", text)
    assert url and api_url, text
    assert 30000 <= int(url.group(1)) <= 32767 and url.group(1) != api_url.group(1)
    assert f"Failed to connect to 127.0.0.1 port {url.group(1)}" in text  # before the Gateway
    assert "gateway.networking.istio.io/bookinfo-gateway created" in text
    assert "virtualservice.networking.istio.io/bookinfo created" in text
    assert text.count(TITLE) == 2  # through each entry point
    assert "HTTP/1.1 404 Not Found" in text
    assert "outbound|9080||productpage.bookinfo.svc.cluster.local" in text  # the access log

    assert "gateway.gateway.networking.k8s.io/bookinfo-gateway created" in text
    assert "gateway.gateway.networking.k8s.io/bookinfo-gateway condition met" in text
    assert "deployment.apps/bookinfo-gateway-istio" in text
    assert re.search(r"listener http: attachedRoutes=1\n", text)
    assert re.search(r"HTTPRoute bookinfo on bookinfo-gateway\n\s+Accepted\s+True\s+Accepted", text)
    assert re.search(r"ResolvedRefs\s+False\s+BackendNotFound", text)
    assert re.search(r"listener http: attachedRoutes=2\n", text)
    assert "HTTP/1.1 500 Internal Server Error" in text
    assert 'httproute.gateway.networking.k8s.io "typo" deleted' in text
