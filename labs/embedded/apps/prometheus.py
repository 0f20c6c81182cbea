"""The Prometheus addon's image, `prom/prometheus`, as the runtime runs it: the host's real
`prometheus` binary, looked up at each container start (so one installed meanwhile is used at
the next restart), behind the launcher `LAUNCHER` (labs/embedded/mesh/prometheus.py, which writes
the scrape configuration over the control plane's target files, then becomes Prometheus).
Without a binary the container fails and its `Simulated` event is a Warning saying how to
install one. Here, below the runtime, because the runtime must not import the mesh.

Prometheus dials no service through `http_proxy`: a scrape config uses the environment's proxy
only with `proxy_from_environment: true` (prometheus/common config/http_config.go, PR #462,
Prometheus >= 2.43, opt-in), which the launcher's configuration does not set; so the App says
`dials_services=False` and the Prometheus pod alone does not start the node forwarder (an exec
into it still does).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

from .catalog import App
from .http import python_module

BINARY = "prometheus"
IMAGE_REPOSITORY = "prom/prometheus"  # the addon's image, any registry and tag
LAUNCHER = "labs.embedded.mesh.prometheus"  # run as `python -m`


def prometheus_binary() -> str | None:
    return shutil.which(BINARY)


def prometheus_missing_hint() -> str:
    return ("no `prometheus` binary on the embedded cluster's PATH, so the Prometheus addon "
            "(istio-system/prometheus) cannot run (the mesh metrics are still at the telemetry "
            "server's /metrics). To get PromQL: on Debian/Ubuntu run `sudo apt-get install "
            "prometheus` (then `sudo systemctl disable --now prometheus` if you do not want the "
            "system service); elsewhere download a release from https://prometheus.io/download/ "
            "and put the `prometheus` binary on PATH. Then restart the cluster (`meshlab down && "
            "meshlab up`) or, if the binary is on the PATH the cluster started with, the pod: "
            "`kubectl -n istio-system delete pod -l app.kubernetes.io/name=prometheus`.")


def twin_argv(binary: str | None) -> Callable[[list[int]], list[str]]:
    """The container's command line for its host ports (the app's `argv`); `binary` is the
    `prometheus` the daemon found on its PATH, None when there is none."""
    def argv(ports: list[int]) -> list[str]:
        options = ["--binary", binary] if binary is not None else []
        return python_module(LAUNCHER, *options,
                             *(a for p in ports for a in ("--port", str(p))))
    return argv


def prometheus_app() -> App:
    """What the image runs now: the real binary if there is one, else a launcher that fails."""
    binary = prometheus_binary()
    if binary is None:
        return App(f"Prometheus launcher, which fails: {prometheus_missing_hint()}",
                   twin_argv(None), known=False, dials_services=False)
    return App(f"Prometheus launcher: the real Prometheus ({binary}) scraping the mesh, on "
               "the pod's host port", twin_argv(binary), dials_services=False)
