"""Does the embedded Prometheus scrape every proxy: the sidecars and the gateways
(istio-ingressgateway), each at its Envoy admin `/stats/prometheus` with kubernetes_sd-like
labels?"""

from __future__ import annotations

import json

from labs.embedded.mesh.prometheus import proxy_targets
from labs.embedded.mesh.state import PROXY_PORTS, MeshState, Obj


def proxy_pod(name: str, namespace: str, admin: int, labels: dict[str, str],
              args: list[str]) -> Obj:
    return {"metadata": {"name": name, "namespace": namespace, "uid": name, "labels": labels,
                         "annotations": {PROXY_PORTS: json.dumps({"admin": admin})}},
            "spec": {"containers": [{"name": "istio-proxy", "args": args}]}}


def test_sidecars_and_gateways_are_targets() -> None:
    sidecar = proxy_pod("httpbin-1", "default", 15001, {"app": "httpbin", "version": "v1"},
                        ["proxy", "sidecar"])
    gateway = proxy_pod("istio-ingressgateway-1", "istio-system", 15002,
                        {"app": "istio-ingressgateway", "istio": "ingressgateway"},
                        ["proxy", "router"])
    unstarted = proxy_pod("pending", "default", 0, {}, ["proxy", "router"])
    groups = proxy_targets(MeshState(pods=[gateway, sidecar, unstarted]))
    assert groups == [
        {"targets": ["127.0.0.1:15001"],
         "labels": {"namespace": "default", "pod": "httpbin-1", "workload": "httpbin-1",
                    "app": "httpbin", "version": "v1"}},
        {"targets": ["127.0.0.1:15002"],
         "labels": {"namespace": "istio-system", "pod": "istio-ingressgateway-1",
                    "workload": "istio-ingressgateway-1", "app": "istio-ingressgateway"}}]
