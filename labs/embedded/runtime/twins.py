"""Which built-in twin runs a container image.

Images are simulated: nothing is pulled, and a container's `command`/`args` are not run. The
Istio sidecar image runs a real Envoy (`labs.embedded.mesh.sidecar`), the Prometheus image the
host's real Prometheus (`labs.embedded.mesh.prometheus`); an image the app catalog
knows (`labs.embedded.apps.catalog`, matched by repository, any tag) runs the twin written for
it; any other image runs the generic HTTP echo server, listening on the container's ports.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..apps.catalog import app_for, repository
from ..apps.http import python_module
from ..mesh.prometheus import (
    IMAGE_REPOSITORY,
    prometheus_binary,
    prometheus_missing_hint,
    twin_argv,
)

# Istio's proxy image, with or without a registry (docker.io, gcr.io/istio-release …)
SIDECAR_REPOSITORIES = ("istio/proxyv2", "istio-release/proxyv2")


@dataclass(frozen=True)
class Twin:
    description: str  # said in the `Simulated` event, e.g. "generic HTTP echo server"
    known: bool  # written for this image (Normal event) or the fallback (Warning event)
    argv: Callable[[list[int]], list[str]]  # ports to listen on -> command line
    commands: Mapping[str, list[str]] = field(default_factory=dict)  # for `kubectl exec`


def _echo_argv(ports: list[int]) -> list[str]:
    argv = [sys.executable, "-I", "-m", "labs.embedded.apps.echo"]
    for port in ports:
        argv += ["--port", str(port)]
    return argv


def _sidecar_argv(ports: list[int]) -> list[str]:
    """Envoy's ports come from its configuration, not from the command line."""
    return [sys.executable, "-I", "-m", "labs.embedded.mesh.sidecar"]


GENERIC_ECHO = Twin("generic HTTP echo server", False, _echo_argv)
# the proxyv2 image's pilot-agent (its entrypoint, /usr/local/bin/pilot-agent), for the commands
# Istio's docs exec in the sidecar (`pilot-agent request GET stats`)
_PILOT_AGENT = python_module("labs.embedded.apps.pilot_agent")
SIDECAR = Twin("Istio sidecar proxy (a real Envoy configured by the embedded control plane)",
               True, _sidecar_argv,
               {"pilot-agent": _PILOT_AGENT, "/usr/local/bin/pilot-agent": _PILOT_AGENT})


def is_sidecar_image(image: str) -> bool:
    return repository(image) in SIDECAR_REPOSITORIES


def prometheus_twin() -> Twin:
    """Istio's Prometheus addon image: the real binary, looked up on each container start (so
    one installed meanwhile is used at the next restart); without one, a twin that fails and a
    Warning saying how to install it."""
    binary = prometheus_binary()
    if binary is None:
        return Twin(f"Prometheus launcher, which fails: {prometheus_missing_hint()}", False,
                    twin_argv(None))
    return Twin(f"Prometheus launcher: the real Prometheus ({binary}) scraping the mesh, on "
                "the pod's host port", True, twin_argv(binary))


def twin_for(image: str) -> Twin:
    """The twin for `image`: the sidecar, Prometheus, a catalog app, or the echo server."""
    if is_sidecar_image(image):
        return SIDECAR
    if repository(image) == IMAGE_REPOSITORY:
        return prometheus_twin()
    app = app_for(image)
    if app is None:
        return GENERIC_ECHO
    return Twin(app.description, True, app.argv, dict(app.commands))
