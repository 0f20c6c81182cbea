"""A killed daemon loses nothing: objects come back as they were, pods run again, and nothing of
the old daemon's pods is left behind.

Uses its own cluster (own name, own state root) because it kills the daemon.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Kubectl

from labs.cluster import ClusterRef, EmbeddedCluster
from labs.embedded.workload import HOST_PORTS

MANIFESTS = Path(__file__).parent / "fixtures" / "manifests"
KEPT = ["namespace/keep", "deployment/web", "configmap/web-settings", "service/web",
        "virtualservice/reviews", "destinationrule/reviews"]


def _parents() -> dict[int, int]:
    """pid -> parent pid for every process we can see."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def descendants(pid: int) -> set[int]:
    parents = _parents()
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def listeners() -> dict[int, int]:
    """Listening TCP port -> socket inode, from /proc/net/tcp{,6}."""
    ports = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                ports[int(fields[1].rsplit(":", 1)[1], 16)] = int(fields[9])
    return ports


def socket_inodes(pids: set[int]) -> dict[int, int]:
    """Socket inode -> the pid holding it, for `pids`."""
    held = {}
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                held[int(target[8:-1])] = pid
    return held


def snapshot(kubectl: Kubectl) -> dict[str, dict[str, Any]]:
    return {ref: json.loads(kubectl("get", ref, "-o", "json")) for ref in KEPT}


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[ClusterRef]:
    embedded = EmbeddedCluster("persist", tmp_path / "state")
    kubeconfig = embedded.up()
    try:
        yield ClusterRef(kubeconfig, embedded.name, embedded)
    finally:
        embedded.down()


def test_objects_and_pods_survive_kill_9(own_cluster: ClusterRef) -> None:
    """After `kill -9` of the daemon and `up()` again, is every object back with the same uid
    and resourceVersion, do the deployment's pods run again, and is no process or listener of
    the old pods left?"""
    embedded = own_cluster.embedded
    assert embedded is not None
    kubectl = Kubectl(own_cluster, "keep")
    assert own_cluster.kubectl("create", "namespace", "keep").returncode == 0
    kubectl("apply", "-f", str(MANIFESTS / "web.yaml"), "-f",
            str(MANIFESTS / "reviews-routing.yaml"))
    kubectl("wait", "--for=condition=Available", "deployment/web", "--timeout=60s")
    kubectl("wait", "--for=condition=Ready", "pod", "-l", "app=web", "--timeout=60s")
    before = snapshot(kubectl)

    endpoint = embedded.paths.read_endpoint()
    assert endpoint is not None
    old_pid = endpoint["pid"]
    old_pods = descendants(old_pid)
    held = socket_inodes(old_pods)
    old_ports = {port for port, inode in listeners().items() if inode in held}
    pods = json.loads(kubectl("get", "pods", "-l", "app=web", "-o", "json"))["items"]
    for pod in pods:  # the host ports the runtime gave each pod (see controllers/endpoints.py)
        annotation = pod["metadata"].get("annotations", {}).get(HOST_PORTS, "{}")
        old_ports |= {int(port) for port in json.loads(annotation).values()}
    assert old_ports, "the pods listen on no host port: nothing to check for strays"

    os.kill(old_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(old_pid):
        assert time.monotonic() < deadline, "the daemon survived SIGKILL"
        time.sleep(0.05)
    embedded.up()
    new_endpoint = embedded.paths.read_endpoint()
    assert new_endpoint is not None and new_endpoint["pid"] != old_pid

    after = snapshot(kubectl)
    for ref in KEPT:
        old_meta, new_meta = before[ref]["metadata"], after[ref]["metadata"]
        assert new_meta["uid"] == old_meta["uid"], ref
        if ref == "deployment/web":  # its status follows the pods restarting
            assert new_meta["generation"] == old_meta["generation"]
            assert after[ref]["spec"] == before[ref]["spec"]
        else:
            assert after[ref] == before[ref], ref

    kubectl("wait", "--for=condition=Ready", "pod", "-l", "app=web", "--timeout=60s")
    pods = json.loads(kubectl("get", "pods", "-l", "app=web", "-o", "json"))["items"]
    assert [p["status"]["phase"] for p in pods] == ["Running"] * 3

    deadline = time.monotonic() + 15
    while (survivors := {pid for pid in old_pods if alive(pid)}):
        assert time.monotonic() < deadline, f"processes of the old pods still run: {survivors}"
        time.sleep(0.1)
    new_family = descendants(new_endpoint["pid"]) | {new_endpoint["pid"]}
    owners = socket_inodes(new_family)
    strays = {port for port, inode in listeners().items()
              if port in old_ports and inode not in owners}
    assert not strays, f"ports of the old pods still listened on by someone else: {strays}"
