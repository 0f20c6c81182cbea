"""Which built-in program runs which image (the runtime asks, by image reference): the twins
of the course's sample apps, and Istio's proxy image, which runs the sidecar (a real Envoy).

Images are matched by repository: a registry prefix (`docker.io/`, `quay.io/`, …) and any tag or
digest are ignored, so the course's manifests work unchanged on kind (real images) and in the
embedded cluster (twins). An image not listed here gets the generic echo server from the runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..workload import SIDECAR_MODULE, SIDECAR_REPOSITORIES
from .http import launcher, python_module


@dataclass(frozen=True)
class App:
    description: str  # said in the `Simulated` event, e.g. "bookinfo reviews v2 twin"
    argv: Callable[[list[int]], list[str]]  # ports (one per declared containerPort) -> command
    commands: Mapping[str, list[str]] = field(default_factory=dict)  # for `kubectl exec`
    known: bool = True  # written for this image (Normal event) or a stand-in (Warning event)
    # its processes may reach services by name through `http_proxy` (in a pod without a
    # sidecar: the node forwarder, which the runtime starts before such a container)
    dials_services: bool = True


def _sidecar_argv(ports: list[int]) -> list[str]:
    """Envoy's ports come from its configuration, not from the command line."""
    return python_module(SIDECAR_MODULE)


# the proxyv2 image's pilot-agent (its entrypoint, /usr/local/bin/pilot-agent), for the commands
# Istio's docs exec in the sidecar (`pilot-agent request GET stats`)
_PILOT_AGENT = python_module("labs.embedded.apps.pilot_agent")
SIDECAR = App("Istio sidecar proxy (a real Envoy configured by the embedded control plane)",
              _sidecar_argv,
              {"pilot-agent": _PILOT_AGENT, "/usr/local/bin/pilot-agent": _PILOT_AGENT})
_FORTIO = python_module("labs.embedded.apps.fortio")
_STARS = {"v1": "no stars", "v2": "black stars", "v3": "red stars"}

APPS: dict[str, App] = {
    **dict.fromkeys(SIDECAR_REPOSITORIES, SIDECAR),
    "istio/examples-bookinfo-productpage-v1": App(
        "bookinfo productpage twin", launcher("labs.embedded.apps.bookinfo.productpage")),
    "istio/examples-bookinfo-details-v1": App(
        "bookinfo details v1 twin", launcher("labs.embedded.apps.bookinfo.details")),
    "istio/examples-bookinfo-ratings-v1": App(
        "bookinfo ratings v1 twin", launcher("labs.embedded.apps.bookinfo.ratings")),
    **{f"istio/examples-bookinfo-reviews-{v}": App(
        f"bookinfo reviews {v} twin ({stars})",
        launcher("labs.embedded.apps.bookinfo.reviews", "--version", v))
       for v, stars in _STARS.items()},
    "mccutchen/go-httpbin": App(
        "httpbin twin (go-httpbin)", launcher("labs.embedded.apps.httpbin", "--flavor", "go")),
    **{repo: App(f"httpbin twin ({repo})",
                 launcher("labs.embedded.apps.httpbin", "--flavor", "python"))
       for repo in ("kennethreitz/httpbin", "kong/httpbin")},
    **{repo: App("curl client twin (sleeps; `kubectl exec` runs the host's curl)",
                 launcher("labs.embedded.apps.sleeper"))
       for repo in ("curlimages/curl", "curl/curl")},
    "istio/ext-authz": App(
        "ext-authz twin (Istio's sample external authorizer, HTTP check only)",
        launcher("labs.embedded.apps.extauthz")),
    "fortio/fortio": App(
        "fortio twin (echo server; `fortio load`/`fortio curl` for kubectl exec)",
        launcher("labs.embedded.apps.fortio", "server"),
        {"fortio": _FORTIO, "/usr/bin/fortio": _FORTIO}),
    "jaegertracing/jaeger": App(
        "Jaeger twin (query API and a server-rendered UI over the cluster's span collector)",
        launcher("labs.embedded.apps.jaeger"), dials_services=False),  # only the collector
    "grafana/grafana": App(
        "Grafana twin (Istio's dashboards drawn from the cluster's Prometheus; HTTP API subset)",
        launcher("labs.embedded.apps.grafana")),
    "kiali/kiali": App(
        "Kiali twin (traffic graph API and page from Istio's metrics in Prometheus)",
        launcher("labs.embedded.apps.kiali")),
}


def repository(image: str) -> str:
    """`docker.io/istio/proxyv2:1.30.0@sha256:…` -> `istio/proxyv2` (registry, tag and digest
    removed; a first component with a dot or a port, or `localhost`, is a registry; Docker Hub's
    `library/` prefix is dropped)."""
    name = image.strip().split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name[: name.rindex(":")]
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    if len(parts) > 1 and parts[0] == "library":
        parts = parts[1:]
    return "/".join(parts)


def app_for(image: str) -> App | None:
    """The twin for `image`, or None when the catalog does not know it."""
    return APPS.get(repository(image))
