"""What one student cluster costs, per backend, with where each figure comes from.

A measured figure that a host falls short of is a failure; a documented or estimated one only
a warning, since it may be generous. Update a figure together with its source when a bench is
run again.
"""

from __future__ import annotations

from dataclasses import dataclass

MB = 1024 * 1024
GB = 1024 * MB


@dataclass(frozen=True)
class Figure:
    value: float
    source: str
    measured: bool  # measured by this project (a shortfall fails) or documented/estimated (warns)


# Embedded backend: one idle student cluster with Bookinfo + curl meshed and the bookinfo Gateway.
# bench/memory.py (`.venv/bin/python bench/memory.py`, 2026-12-07): PSS 356 MB alone on a host
# (daemon 58, 7 twins 49, 8 Envoys 190, fork server 7, Prometheus 52).
EMBEDDED_MEMORY = Figure(356 * MB, "PSS measured by bench/memory.py, Prometheus included", True)
# bench/capacity.py (`.venv/bin/python bench/capacity.py`): 1.7-2.0 % of one core per idle
# student cluster (process CPU time over 25 s, N=1 and N=3).
EMBEDDED_IDLE_CPU = Figure(0.02, "idle, measured by bench/capacity.py", True)
# A used cluster's state directory measured 20 MB (du -sh ~/.meshlab/clusters/meshlab),
# rounded up for Prometheus's data growing over a course day.
EMBEDDED_DISK = Figure(50 * MB, "estimate", False)
# Each sidecar Envoy holds 5 inotify instances (its watched xDS and SDS files: README, `./run`);
# a student cluster runs 8 Envoys (6 Bookinfo sidecars, curl's, the ingress gateway; the node
# forwarder's only once a pod without a sidecar needs it: bench/memory.py).
EMBEDDED_INOTIFY = Figure(9 * 5, "8 Envoys, 9 with the node forwarder, x 5 each", True)

# Budgets, as bench/capacity.py estimates host capacity: memory left for the OS, JupyterLab
# and the kernels; the share of the cores idle clusters may take so active learners get the rest.
MEMORY_SHARE = 0.8
IDLE_CPU_SHARE = 0.25

# kind backend: not measured here (this project's hosts have no Docker). istio.io
# docs/setup/platform-setup/docker: "Set the resources to 8.0 GB of memory and 4 CPUs ... 8 GB is
# sufficient to run Istio and Bookinfo" (one Kubernetes cluster in Docker, like one kind node).
KIND_MEMORY = Figure(8 * GB, "istio.io's Docker Desktop guide; not measured here", False)
KIND_CPUS = Figure(4, "istio.io's Docker Desktop guide; not measured here", False)
# The kindest/node image and the Istio, Linkerd and sample images each cluster's node pulls.
KIND_DISK = Figure(4 * GB, "estimate, not measured here", False)
# kind site/content/docs/user/known-issues.md, "Pod errors due to too many open files":
# `sudo sysctl fs.inotify.max_user_watches=524288` and `fs.inotify.max_user_instances=512`.
KIND_INOTIFY_INSTANCES = 512
KIND_INOTIFY_WATCHES = 524288
KIND_INOTIFY_SOURCE = "kind docs, known issues: \"Pod errors due to too many open files\""

# The inotify instances ./run asks for on embedded hosts (README: 128 allows about 24 Envoys).
EMBEDDED_INOTIFY_LIMIT = 1024

# Ports on 127.0.0.1. JupyterLab: `meshlab lab --port` (8888 by default). The kind backend gives
# student i (0-based) its API server on KIND_API_PORT + i and its ingress (HTTP) on
# KIND_INGRESS_PORT + i, away from the ports people's own servers usually take.
JUPYTERLAB_PORT = 8888
KIND_API_PORT = 16443
KIND_INGRESS_PORT = 18080


def kind_ports(student: int) -> tuple[int, int]:
    """The (API server, ingress HTTP) host ports of student `student`'s kind cluster."""
    return KIND_API_PORT + student, KIND_INGRESS_PORT + student
