"""What a mesh proxy's program (Istio's sidecar, Linkerd's proxy) shares: reading the environment
the runtime sets (names: labs/embedded/workload.py), writing its bootstrap and empty xDS files
into the container's directory, the one host limit that stops an Envoy before it says why, and
becoming Envoy (`execv`: the container's pid is Envoy's, Envoy's stdout its log)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from ..workload import HOST_PORTS_ENV
from .envoy import EnvoyNotFound, bootstrap, envoy_command, write_bootstrap, write_empty_xds
from .proxyfiles import ProxyFiles

BOOTSTRAP_FILE = "bootstrap.yaml"

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


def xds_files(home: Path) -> ProxyFiles:
    """Where a proxy whose container directory is `home` reads its configuration."""
    return ProxyFiles(home / "xds")


def start_files(home: Path, node: str, cluster: str, admin: int,
                static_resources: dict[str, Any] | None = None) -> tuple[list[str], ProxyFiles]:
    """Write the bootstrap and empty xDS files (Envoy starts before the control plane has
    configured it); the Envoy command line and where its configuration will be."""
    files = xds_files(home)
    write_empty_xds(files)
    path = home / BOOTSTRAP_FILE
    write_bootstrap(path, bootstrap(node, cluster, admin, files, static_resources))
    return envoy_command(path), files


def exec_envoy(prepare: Callable[[Mapping[str, str]], list[str]], container: str) -> NoReturn:
    """Check the host, build the command line from the environment and become Envoy; what is
    missing is one line on stderr naming the container, and exit status 2."""
    try:
        check_inotify()
        argv = prepare(os.environ)
    except (ProxyConfigError, EnvoyNotFound) as exc:
        print(f"{container}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    os.execv(argv[0], argv)
