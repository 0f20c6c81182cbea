"""A grading run's private scratch space: one temp root (0700), and below it directories a
submission cannot list (mode 0300: enter by exact name only) holding each student's course copy
and cluster state under random names — so one submission cannot find another's by guessing or
by listing its parent — and, when grading is sandboxed, each student's sandbox scratch space,
network namespace and cgroup. (Unsandboxed, same-user processes can still find them through
`ps` or /proc.)"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from grader.sandbox import netns
from grader.sandbox.accounts import end_processes, new_uids
from grader.sandbox.cgroup import CgroupLimits, StudentCgroup
from grader.sandbox.cluster import start_fresh
from grader.sandbox.student import StudentSandbox
from labs.cluster import ClusterAddress, EmbeddedCluster

_UNLISTABLE = 0o300


class Workspace:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="meshlab-grade-"))
        self.courses = self._unlistable("courses")
        self.states = self._unlistable("states")
        self.sandboxes = self._unlistable("sandboxes")
        self.networks: set[str] = set()  # namespaces not deleted yet (cleanup() deletes them)
        self.cgroups: dict[tuple[str, ...], StudentCgroup] = {}  # likewise, by join files

    def _unlistable(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(mode=0o700)
        os.chmod(path, _UNLISTABLE)
        return path

    def private_course(self) -> Path:
        """A new directory for one student's course copy."""
        path = self.courses / secrets.token_hex(12)
        path.mkdir(mode=0o700)
        return path

    def sandbox(self) -> StudentSandbox:
        """A new sandbox: uids, a scratch directory, a network namespace and (where one can be
        made) a cgroup of its own."""
        scratch = self.sandboxes / secrets.token_hex(12)
        scratch.mkdir(mode=0o700)
        network = netns.create()
        self.networks.add(network)
        group = StudentCgroup.create(CgroupLimits())
        if group:
            self.cgroups[group.procs_files] = group
        return StudentSandbox.create(new_uids(3), scratch, network,
                                     group.procs_files if group else ())

    def _state_root(self) -> tuple[str, Path]:
        state_root = self.states / secrets.token_hex(12)
        state_root.mkdir(mode=0o700)
        return f"g-{secrets.token_hex(8)}", state_root

    def fresh_cluster(self) -> tuple[EmbeddedCluster, ClusterAddress]:
        """A new embedded cluster with a random name and state root (started)."""
        name, state_root = self._state_root()
        cluster = EmbeddedCluster(name, state_root)
        cluster.up()
        return cluster, ClusterAddress(cluster=cluster.name, state_dir=str(state_root))

    def sandboxed_cluster(self, sandbox: StudentSandbox
                          ) -> tuple[EmbeddedCluster, ClusterAddress, StudentSandbox]:
        """A fresh cluster whose daemon runs in `sandbox` (started)."""
        name, state_root = self._state_root()
        sandbox = replace(sandbox, cluster=name, state_root=str(state_root))
        cluster = start_fresh(sandbox)
        sandbox = sandbox.with_cluster_copies(cluster.paths)
        return cluster, ClusterAddress(cluster=name, state_dir=str(state_root)), sandbox

    def discard_sandbox(self, sandbox: StudentSandbox) -> None:
        """End everything the sandbox's uids run (its cluster too), then delete its network
        namespace and its files."""
        for uid in sandbox.uids:
            end_processes(uid)
        if group := self.cgroups.pop(sandbox.cgroup_procs, None):
            group.remove()
        if sandbox.netns:
            self._delete_network(sandbox.netns)
        for path in (sandbox.state_root, sandbox.scratch):
            if path:
                shutil.rmtree(path, ignore_errors=True)

    def _delete_network(self, path: str) -> None:
        netns.delete(path)
        self.networks.discard(path)

    @staticmethod
    def discard_cluster(cluster: EmbeddedCluster) -> None:
        cluster.down()
        shutil.rmtree(cluster.paths.root, ignore_errors=True)

    def cleanup(self) -> None:
        for network in list(self.networks):
            self._delete_network(network)
        for group in self.cgroups.values():
            group.remove()
        for path in (self.courses, self.states, self.sandboxes):
            if path.exists():
                os.chmod(path, 0o700)
        shutil.rmtree(self.root, ignore_errors=True)


def cluster_pid(cluster: EmbeddedCluster) -> int | None:
    """The daemon's pid while its process lives (not a health probe, which a busy machine can
    fail): a different pid later means the cluster was stopped meanwhile."""
    endpoint = cluster.paths.read_endpoint()
    if not endpoint:
        return None
    try:
        os.kill(endpoint["pid"], 0)
    except ProcessLookupError:
        return None
    return endpoint["pid"]

