"""Which cluster `istioctl` talks to, and handing over to the real binary when it is not an
embedded one.

The embedded cluster is the one `meshlab` and `labs.connect` select (`labs.cluster`), or the
one whose kubeconfig `--kubeconfig` / `KUBECONFIG` names (`<state>/clusters/<name>/kubeconfig`).
Any other kubeconfig or `--context` is a real cluster: the real `istioctl` serves it, with the
same arguments.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from labs.cluster import ClusterRef, EmbeddedCluster, current_cluster
from labs.embedded.paths import NAME_PATTERN
from labs.versions import version

INSTALL_HINT = ("install Istio's istioctl {v}: `curl -L https://istio.io/downloadIstio | "
                "ISTIO_VERSION={v} sh -` and put istio-{v}/bin on PATH")


@dataclass(frozen=True)
class Selection:
    """The cluster of this invocation: an embedded `ClusterRef`, or None for a real one."""

    ref: ClusterRef | None


def _embedded_at(kubeconfig: Path) -> EmbeddedCluster | None:
    """The embedded cluster owning this kubeconfig file, if it is one."""
    path = kubeconfig.expanduser().resolve()
    if path.name != "kubeconfig" or path.parent.parent.name != "clusters":
        return None
    name = path.parent.name
    if not NAME_PATTERN.match(name):
        return None
    cluster = EmbeddedCluster(name, path.parent.parent.parent)
    return cluster if cluster.kubeconfig == path else None


def select(kubeconfig: str | None, context: str | None) -> Selection:
    """Resolve the flags and the environment to a cluster (see the module docstring)."""
    if kubeconfig or os.environ.get("KUBECONFIG"):
        first = (kubeconfig or os.environ["KUBECONFIG"]).split(os.pathsep)[0]
        embedded = _embedded_at(Path(first))
        if embedded is None or (context and context != embedded.name):
            return Selection(None)
        return Selection(ClusterRef(embedded.kubeconfig, embedded.name, embedded))
    if os.environ.get("MESHLAB_CONTEXT"):
        return Selection(None)
    ref = current_cluster(start=False)
    if context and context != ref.context:
        return Selection(None)
    return Selection(ref)


def real_istioctl() -> str | None:
    """An `istioctl` on PATH that is not this command."""
    own = {Path(sys.argv[0]).resolve()} if sys.argv and sys.argv[0] else set()
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        found = shutil.which("istioctl", path=directory) if directory else None
        if found and Path(found).resolve() not in own and not _is_console_script(Path(found)):
            return found
    return None


def _is_console_script(path: Path) -> bool:
    """True for the script pip wrote for this package (it imports labs.istioctl.cli)."""
    try:
        head = path.read_bytes()[:2048]
    except OSError:
        return False
    return b"labs.istioctl.cli" in head


def hand_over(argv: list[str]) -> int:
    """exec the real istioctl with `argv`; without one, say how to install it (exit 1)."""
    binary = real_istioctl()
    if binary is None:
        pinned = version("ISTIO_VERSION")
        print("Error: this cluster is not a meshlab embedded cluster, so the real istioctl is "
              f"needed and none is on PATH: {INSTALL_HINT.format(v=pinned)}", file=sys.stderr)
        return 1
    sys.stdout.flush()
    os.execv(binary, [binary, *argv])
    return 0  # not reached: execv replaces the process
