"""Shared fixtures: one real embedded cluster per test session, a fresh namespace per test; and
the waiters every suite uses, so a timeout reads the same wherever it happens."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from labs.cluster import ClusterRef, EmbeddedCluster

T = TypeVar("T")


def poll(check: Callable[[], T], what: str, timeout: float = 60, interval: float = 0.1) -> T:
    """Retry `check` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        _fail_if_late(deadline, timeout, what, value)
        time.sleep(interval)
    return value


async def wait_until(check: Callable[[], T], what: str, timeout: float = 15,
                     interval: float = 0.05) -> T:
    """`poll` for tests inside an event loop: sleeps without blocking the loop, so the
    controllers or the runtime under test keep running while the test waits."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        _fail_if_late(deadline, timeout, what, value)
        await asyncio.sleep(interval)
    return value


def _fail_if_late(deadline: float, timeout: float, what: str, last: object) -> None:
    if time.monotonic() > deadline:
        pytest.fail(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterRef]:
    """A running embedded cluster (daemon process, real HTTP), stopped after the session."""
    state_root = tmp_path_factory.mktemp("meshlab-state")
    embedded = EmbeddedCluster("test", state_root)
    kubeconfig = embedded.up()
    try:
        yield ClusterRef(kubeconfig, embedded.name, embedded)
    finally:
        embedded.down()


class Kubectl:
    """The pinned kubectl bound to the test cluster and namespace."""

    def __init__(self, ref: ClusterRef, namespace: str) -> None:
        self.ref = ref
        self.namespace = namespace

    def run(self, *args: str, input: str | None = None, timeout: float = 60,
            namespaced: bool = True) -> subprocess.CompletedProcess[str]:
        extra = (f"--namespace={self.namespace}",) if namespaced else ()
        return self.ref.kubectl(*extra, *args, input=input, timeout=timeout)

    def __call__(self, *args: str, input: str | None = None, timeout: float = 60) -> str:
        """Run and return stdout; fail the test with kubectl's stderr if it exits non-zero."""
        result = self.run(*args, input=input, timeout=timeout)
        if result.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} exited {result.returncode}:\n"
                        f"{result.stderr}{result.stdout}")
        return result.stdout

    def fails(self, *args: str, input: str | None = None) -> str:
        """Run expecting failure; return stderr for assertions on the message."""
        result = self.run(*args, input=input)
        assert result.returncode != 0, f"kubectl {' '.join(args)} unexpectedly succeeded"
        return result.stderr


@pytest.fixture
def namespace(cluster: ClusterRef) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    created = cluster.kubectl("create", "namespace", name)
    assert created.returncode == 0, created.stderr
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture
def kubectl(cluster: ClusterRef, namespace: str) -> Kubectl:
    return Kubectl(cluster, namespace)


@pytest.fixture
def kubeconfig(cluster: ClusterRef) -> Path:
    return cluster.kubeconfig


@pytest.fixture
def notebook_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                     ) -> Iterator[EmbeddedCluster]:
    """A fresh cluster of its own, selected through the environment the way a notebook selects
    it (a kernel started by the test inherits this process's environment)."""
    cluster = EmbeddedCluster("notebooks", tmp_path / "state")
    for variable in ("MESHLAB_CONTEXT", "KUBECONFIG"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("MESHLAB_CLUSTER", cluster.name)
    monkeypatch.setenv("MESHLAB_STATE_DIR", str(cluster.paths.root))
    try:
        yield cluster
    finally:
        cluster.down()


def without_namespaces(cluster: ClusterRef, *names: str) -> Iterator[ClusterRef]:
    """Body of a module fixture: `cluster` without the namespaces `names`, deleted again (and
    waited for: their sidecars hold inotify instances) after the module."""
    targets = [f"namespace/{name}" for name in names]

    def delete() -> None:
        done = cluster.kubectl("delete", *targets, "--ignore-not-found", "--timeout=90s",
                               timeout=120)
        assert done.returncode == 0, done.stderr

    delete()
    try:
        yield cluster
    finally:
        delete()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The wall time of each course notebook run (the issue's target: 60 s each on a fresh
    cluster), so CI's log shows it."""
    from notebook_support import WALL_TIMES

    if not WALL_TIMES:
        return
    terminalreporter.section("course notebooks: seconds their cells took")
    for (test, notebook), seconds in WALL_TIMES.items():
        terminalreporter.write_line(f"{seconds:6.1f}  {notebook}  ({test.rsplit('::', 1)[-1]})")
