"""A replay cluster whose daemon runs in the student's sandbox: the daemon executes what the
submission asks of it (pods, `kubectl exec`), so it runs as the sandbox's daemon uid, sees only
its own state, on the student's own loopback (its network namespace, see netns.py), and runs
each `kubectl exec` as the sandbox's exec uid. Its state root is the daemon's; others may only
pass through it (0711) to the container directories an exec works in. The grader never trusts
that state afterwards: its own checks use credentials it copied before any student code ran,
and it stops the cluster by ending the sandbox's uids' processes, never through a pid the
(writable) state names."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from grader.sandbox.accounts import hand_over
from grader.sandbox.environment import sandbox_env
from grader.sandbox.netns import entered
from grader.sandbox.student import StudentSandbox, with_port
from labs.cluster import ClusterAddress, ClusterError, EmbeddedCluster
from labs.embedded.runtime.exec_user import EXEC_UID_ENV

START_TIMEOUT_S = 60.0


def sandboxed_cluster(sandbox: StudentSandbox) -> EmbeddedCluster:
    assert sandbox.cluster and sandbox.state_root
    return EmbeddedCluster(sandbox.cluster, sandbox.state_root)


def start(sandbox: StudentSandbox, timeout: float = START_TIMEOUT_S) -> EmbeddedCluster:
    """Start the daemon in the sandbox and wait until its API answers — asked from inside the
    student's network namespace, the only place where it listens."""
    with entered(sandbox.netns):
        return _start(sandbox, timeout)


def _start(sandbox: StudentSandbox, timeout: float) -> EmbeddedCluster:
    cluster = sandboxed_cluster(sandbox)
    cluster.paths.dir.mkdir(parents=True, exist_ok=True)
    hand_over(cluster.paths.root, sandbox.daemon_uid)
    os.chmod(cluster.paths.root, 0o711)
    argv = [sys.executable, "-m", "labs.embedded.daemon", "--name", cluster.name,
            "--state-dir", str(cluster.paths.root)]
    with open(sandbox.daemon_log, "ab") as log:
        process = subprocess.Popen(
            sandbox.daemon_jail().command(argv, cluster.paths.dir), stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            cwd=cluster.paths.dir, env={**sandbox_env(os.environ, str(cluster.paths.root)),
                                        EXEC_UID_ENV: str(sandbox.exec_uid)})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cluster.status().running:
            return cluster
        if process.poll() is not None:
            tail = sandbox.daemon_log.read_text(errors="replace").strip().splitlines()[-5:]
            raise ClusterError(f"the sandboxed cluster {cluster.name!r} stopped while "
                               f"starting (exit {process.returncode}): " + " | ".join(tail))
        time.sleep(0.05)
    raise ClusterError(f"the sandboxed cluster {cluster.name!r} did not become ready within "
                       f"{timeout:g}s")


def start_fresh(sandbox: StudentSandbox) -> EmbeddedCluster:
    """Start the cluster and keep a copy of its credentials for the grader's checks."""
    cluster = start(sandbox)
    fd = os.open(sandbox.verifier_kubeconfig, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(cluster.kubeconfig.read_text())
    return cluster


def verifier_target(sandbox: StudentSandbox) -> ClusterAddress:
    """The cluster as the grader's checks reach it, started again (in the sandbox) if the
    submission stopped it: the copied credentials, at the port the daemon listens on now.
    Called in the nbgrader process, which runs in the student's network namespace."""
    cluster = sandboxed_cluster(sandbox)
    status = cluster.status()
    port = status.port if status.running else start(sandbox).status().port
    if port is None:
        raise ClusterError(f"the sandboxed cluster {cluster.name!r} is not running")
    current = Path(sandbox.scratch) / "verifier-now.kubeconfig"
    current.write_text(with_port(sandbox.verifier_kubeconfig.read_text(), port))
    return ClusterAddress(context=cluster.name, kubeconfig=str(current))
