"""Is a pod's `localhost` its own, as in a shared pod network namespace: does `localhost:PORT`
in `kubectl exec` reach the pod's app and its sidecar's 15000/15020/15021/15090, and does
`pilot-agent request` work in `istio-proxy` the way Istio's circuit-breaking task runs it
(https://istio.io/latest/docs/tasks/traffic-management/circuit-breaking/)?"""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from conftest import poll
from mesh_support import MeshNamespace, mesh_namespace_fixture, yaml_stream

from labs.embedded.runtime import network
from labs.embedded.runtime.ports import PortAllocator
from labs.istio_names import SIDECAR_CONTAINER

mesh = mesh_namespace_fixture("httpbin", "fortio", "curl", prefix="podlo")

# the task's DestinationRule, field for field
CIRCUIT_BREAKER = {
    "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
    "metadata": {"name": "httpbin"},
    "spec": {"host": "httpbin", "trafficPolicy": {
        "connectionPool": {"tcp": {"maxConnections": 1},
                           "http": {"http1MaxPendingRequests": 1,
                                    "maxRequestsPerConnection": 1}},
        "outlierDetection": {"consecutive5xxErrors": 1, "interval": "1s",
                             "baseEjectionTime": "3m", "maxEjectionPercent": 100}}}}
LOAD = ("/usr/bin/fortio", "load", "-c", "2", "-qps", "0", "-n", "20", "-loglevel", "Warning",
        "http://httpbin:8000/get")
CURL_CODE = ("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}")


def kexec(mesh: MeshNamespace, app: str, container: str, *command: str
          ) -> subprocess.CompletedProcess[str]:
    """`kubectl exec POD -c CONTAINER -- command...` in the running pod of `app`."""
    return mesh.kubectl.run("exec", mesh.pod(app), "-c", container, "--", *command, timeout=90)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}{result.stdout}"
    return result.stdout


def test_a_pods_localhost_map_covers_its_app_and_sidecar_ports() -> None:
    """Does a meshed pod's `localhost` send the app's port to where the app listens (not the
    sidecar's inbound), 15000 to the Envoy admin and 15020/15021/15090 to their host ports,
    and does curl get the same map?"""
    pod = {"metadata": {"name": "web", "namespace": "default", "uid": "u1"},
           "spec": {"containers": [{"name": "app", "ports": [{"containerPort": 8080}]},
                                   {"name": SIDECAR_CONTAINER}]}}
    ports = network.allocate(pod, pod["spec"]["containers"], PortAllocator())
    local = ports.localhost()
    assert set(local) == {8080, 15000, 15020, 15021, 15090}
    assert local[8080] == ports.app[8080] != ports.host[8080]
    assert local[15000] == ports.proxy["admin"]
    assert all(local[p] == ports.host[p] for p in (15020, 15021, 15090))
    rc = network.curlrc(ports, forwarder_port=None)
    assert f'connect-to = "localhost:15000:127.0.0.1:{local[15000]}"' in rc.splitlines()
    assert f'connect-to = "[::1]:8080:127.0.0.1:{local[8080]}"' in rc.splitlines()


def test_circuit_breaking_task_counts_pending_overflow(mesh: MeshNamespace) -> None:
    """The task step by step: with the DestinationRule applied, does fortio's load see both
    200 and 503, and does `pilot-agent request GET stats` in the fortio pod's sidecar show the
    httpbin cluster's `upstream_rq_pending_overflow` counting them?"""
    mesh.apply(yaml_stream(CIRCUIT_BREAKER))
    try:
        def configured() -> bool:
            clusters = ok(kexec(mesh, "fortio", SIDECAR_CONTAINER,
                                "pilot-agent", "request", "GET", "clusters"))
            return bool(re.search(r"^outbound\|8000\|\|httpbin\.[^:]+::default_priority::"
                                  r"max_pending_requests::1$", clusters, re.M))
        poll(configured, "the circuit breaker in the fortio sidecar's /clusters", timeout=60)
        assert "HTTP/1.1 200" in ok(kexec(mesh, "fortio", "fortio", "/usr/bin/fortio", "curl",
                                          "-quiet", "http://httpbin:8000/get"))

        def overflowed() -> str | None:
            report = ok(kexec(mesh, "fortio", "fortio", *LOAD))
            return report if "Code 503" in report else None
        report = poll(overflowed, "503s in fortio's report", timeout=120, interval=0.5)
        assert "Code 200" in report

        stats = ok(kexec(mesh, "fortio", SIDECAR_CONTAINER,
                         "pilot-agent", "request", "GET", "stats"))
        pending = [line for line in stats.splitlines() if "httpbin" in line and "pending" in line]
        overflow = [line for line in pending
                    if re.search(r"\.upstream_rq_pending_overflow: [1-9][0-9]*$", line)]
        assert overflow and overflow[0].startswith(f"cluster.outbound|8000||httpbin.{mesh.name}")
        assert any(".upstream_rq_pending_total: " in line for line in pending)
    finally:
        mesh.reset_routing()


@pytest.mark.parametrize("container", ["curl", SIDECAR_CONTAINER])
def test_localhost_reaches_the_sidecar_ports(mesh: MeshNamespace, container: str) -> None:
    """From the app container and the sidecar's own, do localhost:15000 (admin), :15021 and
    :15020 `/healthz/ready`, :15090 and :15020 `/stats/prometheus` answer as in Istio?"""
    clusters = ok(kexec(mesh, "curl", container, "curl", "-s", "localhost:15000/clusters"))
    assert re.search(r"^outbound\|8000\|\|httpbin\.", clusters, re.M)
    for url in ("localhost:15021/healthz/ready", "http://127.0.0.1:15020/healthz/ready"):
        assert ok(kexec(mesh, "curl", container, *CURL_CODE, url)) == "200", url
    for port in (15090, 15020):
        metrics = ok(kexec(mesh, "curl", container, "curl", "-s",
                           f"localhost:{port}/stats/prometheus"))
        assert "# TYPE envoy_cluster_upstream_rq_total counter" in metrics, port
    assert ok(kexec(mesh, "curl", container, *CURL_CODE, "localhost:15090/clusters")) == "404"


def test_localhost_reaches_the_app_itself(mesh: MeshNamespace) -> None:
    """Does `curl localhost:8080` in httpbin's container reach httpbin directly (loopback is not
    captured by the sidecar: no Envoy request id), and fortio's its own echo server?"""
    body = ok(kexec(mesh, "httpbin", "httpbin", "curl", "-s", "localhost:8080/headers"))
    headers = {name.lower() for name in json.loads(body)["headers"]}
    assert "host" in headers and "x-request-id" not in headers
    assert ok(kexec(mesh, "fortio", "fortio", *CURL_CODE, "localhost:8080/")) == "200"


def test_pilot_agent_request_posts_and_reports_errors(mesh: MeshNamespace) -> None:
    """Does `pilot-agent request POST 'logging?level=...'` change Envoy's log level (absolute
    path as in the image too), and does a status above 399 fail as pilot-agent fails?"""
    out = ok(kexec(mesh, "curl", SIDECAR_CONTAINER, "/usr/local/bin/pilot-agent", "request",
                   "POST", "logging?level=debug"))
    assert "active loggers:" in out and "upstream: debug" in out
    out = ok(kexec(mesh, "curl", SIDECAR_CONTAINER, "pilot-agent", "request", "POST",
                   "logging?level=warning"))
    assert "upstream: warning" in out
    failed = kexec(mesh, "curl", SIDECAR_CONTAINER, "pilot-agent", "request", "GET",
                   "stats?format=nonsense")
    assert failed.returncode == 255
    assert failed.stderr.startswith("Error: received unsuccessful status code 400")
    refused = kexec(mesh, "curl", SIDECAR_CONTAINER, "pilot-agent", "request", "GET",
                    "stats", "--debug-port", "15004")
    assert refused.returncode == 255
    assert 'Get "http://localhost:15004/stats": dial tcp' in refused.stderr


def test_unknown_pilot_agent_command_gives_its_usage_error(mesh: MeshNamespace) -> None:
    """Does an unknown subcommand fail with cobra's error, suggestion and usage hint?"""
    result = kexec(mesh, "curl", SIDECAR_CONTAINER, "pilot-agent", "requets", "GET", "stats")
    assert result.returncode == 255
    assert result.stderr.startswith('Error: unknown command "requets" for "pilot-agent"\n\n'
                                    "Did you mean this?\n\trequest\n")
    assert "\nRun 'pilot-agent --help' for usage.\ncommand terminated with exit code 255" \
        in result.stderr  # kubectl's own last line
    assert "\terror\tunknown command" in result.stdout


def test_pilot_agent_wait_returns_once_the_proxy_is_ready(mesh: MeshNamespace) -> None:
    """Does `pilot-agent wait` poll localhost:15021/healthz/ready and say Envoy is ready, and
    time out with pilot-agent's error against a port where nothing answers?"""
    out = ok(kexec(mesh, "curl", SIDECAR_CONTAINER, "pilot-agent", "wait",
                   "--periodMillis", "100"))
    assert out.rstrip().endswith("\tinfo\tEnvoy is ready!")
    failed = kexec(mesh, "curl", SIDECAR_CONTAINER, "pilot-agent", "wait", "--timeoutSeconds",
                   "1", "--periodMillis", "200", "--url", "http://localhost:15004/ready")
    assert failed.returncode == 255
    assert failed.stderr.startswith("Error: timeout waiting for Envoy proxy to become ready. "
                                    'Last error: Get "http://localhost:15004/ready": dial tcp')
