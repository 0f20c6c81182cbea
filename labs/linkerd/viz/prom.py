"""linkerd-viz's Prometheus, as the viz commands reach it: its pod's host port for 9090 (every
pod of the embedded cluster listens on 127.0.0.1; upstream's metrics-api asks the
`prometheus.linkerd-viz:9090` Service the same way)."""

from __future__ import annotations

from typing import Any

from labs.embedded.mesh.prometheus import SERVER_PORT, PrometheusError, query
from labs.embedded.workload import host_ports
from labs.linkerd.kube import Kube

Obj = dict[str, Any]
VIZ_NAMESPACE = "linkerd-viz"
SELECTOR = "linkerd.io/extension=viz,component=prometheus"
NOT_INSTALLED = ("could not find the linkerd-viz extension. It can be installed by running "
                 "`linkerd viz install | kubectl apply -f -`")


class VizError(Exception):
    """linkerd-viz is missing or its Prometheus does not answer."""


def prometheus_port(kube: Kube) -> int:
    if kube.get("namespaces", VIZ_NAMESPACE) is None:
        raise VizError(NOT_INSTALLED)
    running = [p for p in kube.items("pods", VIZ_NAMESPACE, SELECTOR)
               if (p.get("status") or {}).get("phase") == "Running"
               and str(SERVER_PORT) in host_ports(p)]
    if not running:
        raise VizError("linkerd-viz's prometheus pod is not running yet: wait for it with "
                       "`linkerd viz check`")
    newest = max(running, key=lambda p: p["metadata"].get("creationTimestamp", ""))
    return host_ports(newest)[str(SERVER_PORT)]


def run(kube: Kube, promql: str) -> list[Obj]:
    try:
        return query(promql, prometheus_port(kube))
    except PrometheusError as err:
        raise VizError(str(err)) from None


def labels(pairs: dict[str, str]) -> str:
    """A PromQL selector in upstream's spacing: `{direction="inbound", namespace="x"}`."""
    return "{" + ", ".join(f'{k}="{v}"' for k, v in pairs.items()) + "}"
