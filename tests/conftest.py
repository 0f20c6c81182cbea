"""Shared fixtures: one real embedded cluster per test session, a fresh namespace per test."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from labs.cluster import ClusterRef, EmbeddedCluster


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
