"""Which built-in twin runs a container image.

Images are simulated: nothing is pulled, and a container's `command`/`args` are not run. An
image the app catalog knows (`labs.embedded.apps.catalog`, matched by repository, any tag; the
Istio sidecar image among them, which runs a real Envoy) runs the program written for it; the
Prometheus image the host's real Prometheus (`labs.embedded.apps.prometheus`); any other image
runs the generic HTTP echo server, listening on the container's ports.
"""

from __future__ import annotations

from ..apps.catalog import App, app_for, repository
from ..apps.forkserver import ECHO_MODULE
from ..apps.http import launcher
from ..apps.prometheus import IMAGE_REPOSITORY, prometheus_app

GENERIC_ECHO = App("generic HTTP echo server", launcher(ECHO_MODULE), known=False)


def twin_for(image: str) -> App:
    """The twin for `image`: Prometheus, a catalog app (the sidecar too), or the echo server."""
    if repository(image) == IMAGE_REPOSITORY:
        return prometheus_app()
    return app_for(image) or GENERIC_ECHO
