"""Which built-in program runs which image (the runtime asks, by image reference): the twins
of the course's sample apps, and the proxy images of Istio and Linkerd, which run a real Envoy.

Images are matched by repository: a registry prefix (`docker.io/`, `quay.io/`, …) and any tag or
digest are ignored, so the course's manifests work unchanged on kind (real images) and in the
embedded cluster (twins). An image not listed here gets the generic echo server from the runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from ..workload import (
    LINKERD_PROXY_MODULE,
    LINKERD_PROXY_REPOSITORIES,
    SIDECAR_MODULE,
    SIDECAR_REPOSITORIES,
)
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
    # the twin's command line ends with `--image IMAGE`: the tag matters to it (podinfo reports
    # it as its version; emojivoto's voting-svc fails :doughnut: votes as that release did)
    tagged: bool = False


def _sidecar_argv(ports: list[int]) -> list[str]:
    """Envoy's ports come from its configuration, not from the command line."""
    return python_module(SIDECAR_MODULE)


# the proxyv2 image's pilot-agent (its entrypoint, /usr/local/bin/pilot-agent), for the commands
# Istio's docs exec in the sidecar (`pilot-agent request GET stats`)
_PILOT_AGENT = python_module("labs.embedded.apps.pilot_agent")
SIDECAR = App("Istio sidecar proxy (a real Envoy configured by the embedded control plane)",
              _sidecar_argv,
              {"pilot-agent": _PILOT_AGENT, "/usr/local/bin/pilot-agent": _PILOT_AGENT})
# Linkerd's proxy image (also the image of its `linkerd-init`, which is never run): an Envoy
# configured by the embedded Linkerd control plane in linkerd2-proxy's place
# Its `Simulated` event is a Warning, as for any stand-in: the issue and the course say plainly
# that what runs is Envoy, so its memory and latency are never read as linkerd2-proxy's.
LINKERD_PROXY = App(
    "Linkerd proxy: a real Envoy playing linkerd2-proxy's part, configured by the embedded "
    "Linkerd control plane (its memory and latency are Envoy's, not linkerd2-proxy's)",
    lambda ports: python_module(LINKERD_PROXY_MODULE), known=False)
_FORTIO = python_module("labs.embedded.apps.fortio")
_STARS = {"v1": "no stars", "v2": "black stars", "v3": "red stars"}
_PODCLI = python_module("labs.embedded.apps.podcli")
_HEY = python_module("labs.embedded.apps.hey")
_WGET = python_module("labs.embedded.apps.wget")  # BusyBox's, for the load tester's probes
_VOTE_BOT = python_module("labs.embedded.apps.emojivoto.vote_bot")

APPS: dict[str, App] = {
    **dict.fromkeys(SIDECAR_REPOSITORIES, SIDECAR),
    **dict.fromkeys(LINKERD_PROXY_REPOSITORIES, LINKERD_PROXY),
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
    "linkerd/controller": App(
        "Linkerd controller twin (answers probes only: the cluster daemon issues identities "
        "and configures proxies, its API server injects them; the validating webhooks are not "
        "emulated)",
        launcher("labs.embedded.apps.linkerd_controller"), dials_services=False),
    **{f"linkerd/{image}": App(
        f"linkerd-viz {image} twin (answers probes only: not emulated)",
        launcher("labs.embedded.apps.linkerd_controller"), dials_services=False)
       for image in ("metrics-api", "tap", "web")},
    "stefanprodan/podinfo": App(
        "podinfo twin (HTTP API and Prometheus metrics; version from the image tag; `podcli`)",
        launcher("labs.embedded.apps.podinfo"),
        {"podcli": _PODCLI, "/usr/local/bin/podcli": _PODCLI}, tagged=True),
    "fluxcd/flagger-loadtester": App(
        "Flagger load tester twin (webhook tasks `cmd`/`bash`, gates; `hey` for kubectl exec)",
        launcher("labs.embedded.apps.flagger_loadtester"),
        {"hey": _HEY, "/usr/bin/hey": _HEY, "wget": _WGET}),  # Alpine package hey
    "buoyantio/emojivoto-emoji-svc": App(
        "emojivoto emoji-svc twin (gRPC EmojiService)",
        launcher("labs.embedded.apps.emojivoto.emoji_svc"), dials_services=False),
    "buoyantio/emojivoto-voting-svc": App(
        "emojivoto voting-svc twin (gRPC VotingService; :doughnut: votes fail as upstream's)",
        launcher("labs.embedded.apps.emojivoto.voting_svc"), dials_services=False, tagged=True),
    "buoyantio/emojivoto-web": App(
        "emojivoto web twin (HTTP API calling emoji-svc and voting-svc over gRPC; the vote bot "
        "when only WEB_HOST is set)", launcher("labs.embedded.apps.emojivoto.web"),
        {"emojivoto-vote-bot": _VOTE_BOT, "/usr/local/bin/emojivoto-vote-bot": _VOTE_BOT}),
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
    app = APPS.get(repository(image))
    if app is None or not app.tagged:
        return app
    argv = app.argv
    return replace(app, argv=lambda ports: [*argv(ports), "--image", image.strip()])
