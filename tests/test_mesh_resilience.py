"""Does the embedded mesh implement Istio's resilience features the way Istio 1.30 + Envoy do?

Translation (no cluster): Istio's default retry policy and `retries` as pilot's
`route/retry/retry.go` (1.30) builds them. Behaviour (real sidecars, one meshed namespace with
curl, fortio, httpbin and a `flaky` Service whose second pod never answers): attempts counted
at the server's sidecar, a per-try timeout shorter than the endpoint, fortio tripping a circuit
breaker, and outlier detection held back by Envoy's default `max_ejection_percent` (10 %).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import poll
from mesh_support import (
    MeshNamespace,
    destination_rule,
    mesh_namespace_fixture,
    route,
    virtual_service,
    yaml_stream,
)

from labs import proxy
from labs.checks.public.day1.resilience import count_attempts, fortio_codes
from labs.embedded.mesh.istio.xds.virtualservice import DEFAULT_RETRY_ON, retry_policy
from labs.traffic import probe

Obj = dict[str, Any]
HTTPBIN = "http://httpbin:8000"


# --- translation -------------------------------------------------------------------------------

def test_default_policy_does_not_retry_503() -> None:
    """Istio ≥ 1.24 (istio/istio#52111): `retriable-status-codes` with no status codes."""
    policy = retry_policy(None, False, "")
    assert policy is not None
    assert (policy["num_retries"], policy["retry_on"]) == (2, DEFAULT_RETRY_ON)
    assert "retriable_status_codes" not in policy
    assert policy["retry_host_predicate"][0]["name"] == (
        "envoy.retry_host_predicates.previous_hosts")


def test_retries_without_retry_on_keep_the_default_conditions_and_no_codes() -> None:
    policy = retry_policy({"attempts": 4, "perTryTimeout": "2s"}, False, "r")
    assert policy is not None
    assert (policy["num_retries"], policy["retry_on"], policy["per_try_timeout"]) == (
        4, DEFAULT_RETRY_ON, "2s")
    assert "retriable_status_codes" not in policy


def test_status_codes_in_retry_on_become_retriable_codes() -> None:
    policy = retry_policy({"attempts": 3, "retryOn": "5xx,503"}, True, "r")
    assert policy is not None
    assert policy["retry_on"] == "5xx,retriable-status-codes"
    assert policy["retriable_status_codes"] == [503]
    assert "retry_host_predicate" not in policy  # consistent hashing keeps the host


def test_zero_attempts_turn_retries_off() -> None:
    assert retry_policy({"attempts": 0}, False, "r") is None


# --- behaviour ---------------------------------------------------------------------------------

def _deployment(name: str, version: str, container: Obj) -> Obj:
    labels = {"app": "flaky", "version": version}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [container]}}}}


# flaky-v2 is Ready but nothing listens in it, so its own sidecar answers 503 for it.
FLAKY = yaml_stream(
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "flaky"},
     "spec": {"ports": [{"name": "http", "port": 8000, "targetPort": 8080}],
              "selector": {"app": "flaky"}}},
    _deployment("flaky-v1", "v1", {"name": "httpbin",
                                   "image": "docker.io/mccutchen/go-httpbin:v2.15.0",
                                   "ports": [{"containerPort": 8080}]}),
    _deployment("flaky-v2", "v2", {"name": "httpbin", "image": "curlimages/curl",
                                   "command": ["/bin/sleep", "infinity"],
                                   "ports": [{"containerPort": 8080}],
                                   "readinessProbe": {"exec": {"command": ["true"]}}}))

mesh = mesh_namespace_fixture("curl", "httpbin", "fortio", prefix="resilience",
                              extra_yaml=FLAKY)


@pytest.fixture(autouse=True)
def clean_routing(mesh: MeshNamespace) -> Iterator[None]:
    yield
    mesh.reset_routing()


def converge(mesh: MeshNamespace, workload: str, predicate: Callable[[Obj], bool]) -> None:
    proxy.wait_for_config(f"deploy/{workload}", mesh.name, predicate, timeout=20,
                          cluster=mesh.cluster)


def dumped(*texts: str) -> Callable[[Obj], bool]:
    return lambda dump: all(text in json.dumps(dump) for text in texts)


def attempts(mesh: MeshNamespace, path: str) -> tuple[int, int]:
    seen = count_attempts(HTTPBIN + path, cluster=mesh.cluster, namespace=mesh.name)
    return seen.status, seen.count


def stat(mesh: MeshNamespace, workload: str, service: str, name: str) -> int:
    key = f"cluster.outbound|8000||{service}.{mesh.name}.svc.cluster.local.{name}"
    return proxy.stats(f"deploy/{workload}", mesh.name, cluster=mesh.cluster).get(key, 0)


def test_a_503_reaches_the_server_once_by_default_and_four_times_with_three_retries(
        mesh: MeshNamespace) -> None:
    assert attempts(mesh, "/status/503") == (503, 1)

    mesh.apply(yaml_stream(virtual_service("httpbin", route(
        "httpbin", retries={"attempts": 3, "retryOn": "5xx"}))))
    converge(mesh, "curl", dumped('"num_retries": 3', '"retry_on": "5xx"'))
    assert attempts(mesh, "/status/503") == (503, 4)

    mesh.apply(yaml_stream(virtual_service("httpbin", route(
        "httpbin", retries={"attempts": 0}))))
    converge(mesh, "curl", lambda dump: '"num_retries": 3' not in json.dumps(dump))
    assert attempts(mesh, "/status/503") == (503, 1)


def test_a_per_try_timeout_shorter_than_the_endpoint_fails_every_try(
        mesh: MeshNamespace) -> None:
    """/delay/1 with perTryTimeout 0.5s: each try ends early and is retried (a per-try timeout
    counts as 5xx), so the client gets 504 after 4 attempts; with 2s it gets 200 at once."""
    policy = {"attempts": 3, "perTryTimeout": "0.5s", "retryOn": "5xx"}
    mesh.apply(yaml_stream(virtual_service("httpbin", route("httpbin", retries=policy))))
    converge(mesh, "curl", dumped('"per_try_timeout": "0.5'))
    assert attempts(mesh, "/delay/1") == (504, 4)
    client_log = mesh.kubectl("logs", "deploy/curl", "-c", "istio-proxy", "--tail=1")
    assert " 504 URX,UT upstream_per_try_timeout " in client_log, client_log

    policy["perTryTimeout"] = "2s"
    mesh.apply(yaml_stream(virtual_service("httpbin", route("httpbin", retries=policy))))
    converge(mesh, "curl", dumped('"per_try_timeout": "2s"'))
    assert attempts(mesh, "/delay/1") == (200, 1)


def test_fortio_trips_the_circuit_breaker(mesh: MeshNamespace) -> None:
    """Circuit breaking task: both 200 and 503 come back and fortio's sidecar counts the
    pending-request overflows; one connection at a time is never refused."""
    mesh.apply(yaml_stream(destination_rule("httpbin", trafficPolicy={"connectionPool": {
        "tcp": {"maxConnections": 1},
        "http": {"http1MaxPendingRequests": 1, "maxRequestsPerConnection": 1}}})))
    converge(mesh, "fortio-deploy", dumped('"max_pending_requests": 1,'))

    codes = poll(lambda: (lambda c: c if c[503] else None)(
        fortio_codes(mesh.cluster, 3, 30, namespace=mesh.name)),
        "a 503 from fortio -c 3 -qps 0 -n 30", timeout=20)

    assert codes[200] and codes[503], codes
    assert stat(mesh, "fortio-deploy", "httpbin", "upstream_rq_pending_overflow") > 0
    assert fortio_codes(mesh.cluster, 1, 10, namespace=mesh.name) == {200: 10}


def test_outlier_detection_ejects_a_broken_pod_only_when_max_ejection_percent_allows(
        mesh: MeshNamespace) -> None:
    """Istio sets no maxEjectionPercent by default and Envoy's is 10 %: one pod of two (50 %)
    is never ejected, each attempt counted in ejections_overflow; with 100 it is."""
    url = "http://flaky:8000/get"
    outlier = {"consecutive5xxErrors": 1, "interval": "1s", "baseEjectionTime": "3m"}
    mesh.apply(yaml_stream(destination_rule("flaky", trafficPolicy={"outlierDetection":
                                                                    outlier})))
    converge(mesh, "curl", dumped('"consecutive_5xx": 1'))
    before = probe(url, namespace=mesh.name, n=20, cluster=mesh.cluster)
    assert before.codes[503] and before.codes[200], before  # the default does not retry 503
    assert stat(mesh, "curl", "flaky", "outlier_detection.ejections_overflow") > 0
    assert stat(mesh, "curl", "flaky", "outlier_detection.ejections_active") == 0

    mesh.apply(yaml_stream(destination_rule("flaky", trafficPolicy={"outlierDetection": {
        **outlier, "maxEjectionPercent": 100}})))
    converge(mesh, "curl", dumped('"max_ejection_percent": 100'))
    probe(url, namespace=mesh.name, n=6, cluster=mesh.cluster)  # one 503 ejects flaky-v2
    after = probe(url, namespace=mesh.name, n=20, cluster=mesh.cluster)

    assert after.codes == {200: 20}, after
    assert stat(mesh, "curl", "flaky", "outlier_detection.ejections_active") == 1
    flags = [line for line in proxy.admin("deploy/curl", mesh.name, "clusters",
                                          cluster=mesh.cluster).splitlines()
             if line.startswith("outbound|8000||flaky.") and "::health_flags::" in line]
    assert sorted(line.rsplit("::", 1)[1] for line in flags) == [
        "/failed_outlier_check", "healthy"], flags
