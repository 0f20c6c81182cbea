"""Do the day1.gateways checks judge a real cluster correctly: fatal without Bookinfo; failing
with the learner's usual mistakes — a Gateway selecting Helm's `istio: ingress` label, a
VirtualService bound to a misspelt Gateway, an HTTPRoute whose parent does not exist yet or with a
misspelt backend — saying what is wrong; and passing with Istio's two Bookinfo gateways?

Real session cluster, real kubectl, real Envoys (the istio-ingressgateway, the Gateway API
Gateway's own deployment, the sidecars). The namespace is the lab's own (`bookinfo`), so the
tests run in file order and delete it at the start and the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from mesh_support import MeshNamespace
from test_checks_day1 import QUICK, reason, run, statuses

from labs.checks import Status
from labs.cluster import ClusterRef

BOOKINFO = "bookinfo"
LAB = "day1.gateways"
PRODUCTPAGE_ROUTE = {"destination": {"host": "productpage", "port": {"number": 9080}}}


def istio_gateway(selector: dict[str, str]) -> dict[str, Any]:
    """samples/bookinfo/networking/bookinfo-gateway.yaml's Gateway, with this selector."""
    return {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
            "metadata": {"name": "bookinfo-gateway"},
            "spec": {"selector": selector, "servers": [
                {"port": {"number": 8080, "name": "http", "protocol": "HTTP"},
                 "hosts": ["*"]}]}}


def bookinfo_virtual_service(gateways: list[str]) -> dict[str, Any]:
    """The sample's VirtualService for hosts "*", /productpage only, bound to `gateways`."""
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "bookinfo"},
            "spec": {"hosts": ["*"], "gateways": gateways, "http": [
                {"match": [{"uri": {"exact": "/productpage"}}], "route": [PRODUCTPAGE_ROUTE]}]}}


API_GATEWAY = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
               "metadata": {"name": "bookinfo-gateway"},
               "spec": {"gatewayClassName": "istio", "listeners": [
                   {"name": "http", "port": 80, "protocol": "HTTP",
                    "allowedRoutes": {"namespaces": {"from": "Same"}}}]}}


def http_route(*rules: tuple[str, str]) -> dict[str, Any]:
    """HTTPRoute `bookinfo` on bookinfo-gateway: one rule per (path prefix, Service:9080)."""
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "bookinfo"},
            "spec": {"parentRefs": [{"name": "bookinfo-gateway"}], "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": path}}],
                 "backendRefs": [{"name": service, "port": 9080}]} for path, service in rules]}}


@pytest.fixture(scope="module")
def lab(cluster: ClusterRef) -> Iterator[ClusterRef]:
    """The session cluster without `bookinfo`, its istio-ingressgateway rolled out; `bookinfo`
    deleted again (and waited for: its Envoys hold inotify instances) after the module."""
    delete = ("delete", f"namespace/{BOOKINFO}", "--ignore-not-found", "--timeout=60s")
    cluster.kubectl(*delete, timeout=90)
    rollout = cluster.kubectl("-n", "istio-system", "rollout", "status",
                              "deployment/istio-ingressgateway", "--timeout=60s", timeout=90)
    assert rollout.returncode == 0, rollout.stderr
    try:
        yield cluster
    finally:
        cluster.kubectl(*delete, timeout=90)


def apply(cluster: ClusterRef, *objects: dict[str, Any]) -> None:
    MeshNamespace(cluster, BOOKINFO).apply(yaml.safe_dump_all(objects, sort_keys=False))


def test_without_bookinfo_the_lab_fails_fatally(lab: ClusterRef) -> None:
    report = run(lab, LAB)
    assert statuses(report) == {"bookinfo": Status.FAIL, "istio-gateway": Status.SKIP,
                                "ingress-productpage": Status.SKIP, "gateway-api": Status.SKIP,
                                "httproute": Status.SKIP, "gateway-api-productpage": Status.SKIP}
    assert reason(report, "bookinfo") == ("no deployment productpage-v1 in bookinfo; "
                                          "no deployment ratings-v1 in bookinfo")


def test_bookinfo_alone_has_no_entry_point(lab: ClusterRef) -> None:
    for args in (("create", "namespace", BOOKINFO),
                 ("label", "namespace", BOOKINFO, "istio-injection=enabled")):
        done = lab.kubectl(*args)
        assert done.returncode == 0, done.stderr
    MeshNamespace(lab, BOOKINFO).deploy("bookinfo")

    report = run(lab, LAB, retry=QUICK)
    assert statuses(report) == {"bookinfo": Status.PASS, "istio-gateway": Status.FAIL,
                                "ingress-productpage": Status.FAIL, "gateway-api": Status.FAIL,
                                "httproute": Status.FAIL,
                                "gateway-api-productpage": Status.FAIL}
    assert reason(report, "istio-gateway") == (
        "no Istio Gateway (gateways.networking.istio.io) in bookinfo")
    assert reason(report, "ingress-productpage").startswith(
        "3 requests from deploy/ratings-v1 (bookinfo) to "
        "http://istio-ingressgateway.istio-system/productpage: ")
    assert "200" not in reason(report, "ingress-productpage")
    assert reason(report, "gateway-api") == (
        "no Gateway (gateway.networking.k8s.io) of class istio in bookinfo")
    assert reason(report, "httproute") == "no HTTPRoute in bookinfo has a backendRef to productpage"


def test_istio_gateway_mistakes_are_named_then_the_sample_passes(lab: ClusterRef) -> None:
    apply(lab, istio_gateway({"istio": "ingress"}),
          bookinfo_virtual_service(["bookinfo-gateway"]))
    report = run(lab, f"{LAB}.istio-gateway")
    assert reason(report, "istio-gateway") == (
        "no Gateway selects the istio-ingressgateway pods (labels include istio: "
        "ingressgateway): bookinfo-gateway selects {'istio': 'ingress'}")

    apply(lab, istio_gateway({"istio": "ingressgateway"}),
          bookinfo_virtual_service(["bookinfo-gw"]))
    report = run(lab, f"{LAB}.istio-gateway")
    assert reason(report, "istio-gateway") == (
        "no VirtualService in bookinfo lists Gateway bookinfo-gateway under gateways: "
        "(bookinfo lists ['bookinfo-gw'])")
    report = run(lab, f"{LAB}.ingress-productpage", retry=QUICK)
    assert reason(report, "ingress-productpage").endswith(": 404 ×3; unclassified ×3")

    apply(lab, bookinfo_virtual_service(["bookinfo-gateway"]))
    report = run(lab, f"{LAB}.istio-gateway")
    assert statuses(report) == {"istio-gateway": Status.PASS}
    report = run(lab, f"{LAB}.ingress-productpage")
    assert statuses(report) == {"ingress-productpage": Status.PASS}, report


def test_gateway_api_status_is_read_then_the_sample_passes(lab: ClusterRef) -> None:
    apply(lab, http_route(("/productpage", "productpage"), ("/ratings", "rating")))
    report = run(lab, f"{LAB}.httproute", retry=QUICK)
    assert reason(report, "httproute") == (
        "HTTPRoute bookinfo has parentRefs ['bookinfo-gateway'], none of them a Gateway of "
        "class istio in bookinfo")

    apply(lab, API_GATEWAY)
    for passing in ("gateway-api", "gateway-api-productpage"):  # the misspelt rule aside
        report = run(lab, f"{LAB}.{passing}")
        assert statuses(report) == {passing: Status.PASS}, report
    report = run(lab, f"{LAB}.httproute", retry=QUICK)
    assert reason(report, "httproute") == (
        "HTTPRoute bookinfo on Gateway bookinfo-gateway: ResolvedRefs=False (BackendNotFound: "
        "backend(rating.bookinfo.svc.cluster.local) not found)")

    apply(lab, http_route(("/productpage", "productpage")))
    report = run(lab, LAB)
    assert report.ok and report.earned == report.possible == 6, report
