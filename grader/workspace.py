"""A grading run's private scratch space: one temp root (0700), and below it directories a
submission cannot list (mode 0300: enter by exact name only) holding each student's course copy
and cluster state under random names — so one submission cannot find another's by guessing or
by listing its parent. (Same-user processes can still find them through `ps` or /proc; see the
README's Grading section.)"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path

from grader.targets import Target
from labs.cluster import EmbeddedCluster

_UNLISTABLE = 0o300


class Workspace:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="meshlab-grade-"))
        self.courses = self._unlistable("courses")
        self.states = self._unlistable("states")

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

    def fresh_cluster(self) -> tuple[EmbeddedCluster, Target]:
        """A new embedded cluster with a random name and state root (started)."""
        state_root = self.states / secrets.token_hex(12)
        state_root.mkdir(mode=0o700)
        cluster = EmbeddedCluster(f"g-{secrets.token_hex(8)}", state_root)
        cluster.up()
        return cluster, Target(cluster=cluster.name, state_dir=str(state_root))

    @staticmethod
    def discard_cluster(cluster: EmbeddedCluster) -> None:
        cluster.down()
        shutil.rmtree(cluster.paths.root, ignore_errors=True)

    def cleanup(self) -> None:
        for path in (self.courses, self.states):
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

