"""What a mesh proxy's program (Istio's sidecar, Linkerd's proxy) reads from the environment the
runtime sets (names: labs/embedded/workload.py), and the one host limit that stops an Envoy
before it says why."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from ..workload import HOST_PORTS_ENV

INOTIFY_PER_ENVOY = 5  # Envoy watches its LDS/CDS/RDS and two SDS files
INOTIFY_LIMIT = Path("/proc/sys/fs/inotify/max_user_instances")
COMFORTABLE_LIMIT = 1024


class ProxyConfigError(Exception):
    """The environment does not say enough to start this proxy."""


def required(env: Mapping[str, str], name: str, container: str) -> str:
    value = env.get(name, "")
    if not value:
        raise ProxyConfigError(
            f"{name} is not set: the {container} container is started by the embedded "
            "cluster's runtime, which sets it (run the pod in the cluster, not by hand)")
    return value


def port(env: Mapping[str, str], name: str, container: str) -> int:
    raw = required(env, name, container)
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ProxyConfigError(f"{name}={raw!r} is not a TCP port number")
    return int(raw)


def host_ports(env: Mapping[str, str]) -> dict[str, int]:
    """The pod's host-ports annotation, as the runtime passes it: container port -> host port."""
    raw = env.get(HOST_PORTS_ENV) or "{}"
    try:
        ports = json.loads(raw)
        return {str(k): int(v) for k, v in ports.items()}
    except (ValueError, TypeError, AttributeError):
        raise ProxyConfigError(f"{HOST_PORTS_ENV}={raw!r} is not a JSON object of "
                               "container port -> host port") from None


def _inotify_instances_in_use() -> int:
    count = 0
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            count += sum(1 for fd in fd_dir.iterdir()
                         if os.readlink(fd) == "anon_inode:inotify")
        except OSError:
            continue  # a process that ended, or one we may not inspect
    return count


def check_inotify() -> None:
    """Envoy aborts with a bare assertion when it cannot get an inotify instance; say why and
    how to fix it instead. Only counted when the limit is low (counting scans /proc)."""
    try:
        limit = int(INOTIFY_LIMIT.read_text())
    except (OSError, ValueError):
        return
    if limit >= COMFORTABLE_LIMIT:
        return
    if _inotify_instances_in_use() + INOTIFY_PER_ENVOY > limit:
        raise ProxyConfigError(
            f"this machine's inotify instances are used up (fs.inotify.max_user_instances="
            f"{limit}; each sidecar Envoy needs {INOTIFY_PER_ENVOY}). Raise the limit with "
            f"`sudo sysctl -w fs.inotify.max_user_instances={COMFORTABLE_LIMIT}` "
            "(`./run lab` does it when run as root), or stop other clusters (`meshlab down`)")
