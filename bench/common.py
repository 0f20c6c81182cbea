"""What the benchmarks share: percentiles, a kept-alive HTTPS client for the API server, and
RSS/PSS per process of a cluster.

The bench scripts run as `python bench/<name>.py`, so this directory is on `sys.path` and they
import it as `common`.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import yaml


def percentile(values: list[float], q: float) -> float:
    """The `q`-th percentile (0-100) of `values`, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class Api:
    """One kept-alive HTTPS connection to the API server with the cluster's token."""

    def __init__(self, kubeconfig: Path, ca_file: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        server = config["clusters"][0]["cluster"]["server"]
        host, port = server.removeprefix("https://").split(":")
        self.token = config["users"][0]["user"]["token"]
        context = ssl.create_default_context(cafile=str(ca_file))
        self.conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)

    def request(self, method: str, path: str, body: object | None = None,
                content_type: str = "application/json") -> tuple[int, bytes]:
        """(status, body) of one request."""
        status, data, _ = self.timed_request(method, path, body, content_type)
        return status, data

    def timed_request(self, method: str, path: str, body: object | None = None,
                      content_type: str = "application/json") -> tuple[int, bytes, float]:
        """(status, body, ms): the time covers sending and reading the whole response, not
        encoding the body."""
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": content_type}
        payload = json.dumps(body).encode() if body is not None else None
        start = time.perf_counter()
        self.conn.request(method, path, body=payload, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        return response.status, data, (time.perf_counter() - start) * 1000


# -- memory of a cluster's processes ----------------------------------------------------------
@dataclass(frozen=True)
class ProcessMemory:
    """One process of a cluster: `comm` and, for a pod's container, its `owner`
    (`namespace/pod/container`);
    RSS counts every resident page, PSS splits shared ones (the Envoy binary, a forked twin's
    interpreter) between the processes sharing them, so PSS adds up across processes — and
    depends on who else maps those pages (other clusters' Envoys share the Envoy binary); USS
    counts only the pages no other process maps."""

    pid: int
    comm: str
    owner: str
    rss_kb: int
    pss_kb: int
    uss_kb: int


def process_tree(root: int) -> list[int]:
    """`root` and its descendants, from /proc/*/stat parent pids."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def _owner(pid: int) -> str:
    """`namespace/pod/container` of a pod's process: its working directory is the container's
    (`<pods dir>/<namespace>_<pod>_<uid>/<container>`, labs/embedded/workload.py); "" else."""
    try:
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return ""
    parts = cwd.parent.name.split("_")
    if cwd.parent.parent.name != "pods" or len(parts) != 3:
        return ""
    return f"{parts[0]}/{parts[1]}/{cwd.name}"


def process_memory(pid: int) -> ProcessMemory | None:
    """RSS, PSS and USS of one process from /proc/PID/smaps_rollup; None once it is gone."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return None
    values = {line.split(":")[0]: int(line.split()[1]) for line in rollup[1:]}
    if not values.get("Rss"):
        return None
    return ProcessMemory(pid, comm, _owner(pid), values["Rss"], values.get("Pss", 0),
                         values.get("Private_Clean", 0) + values.get("Private_Dirty", 0))


def cluster_memory(daemon_pid: int) -> list[ProcessMemory]:
    """Every live process of the cluster whose daemon is `daemon_pid` (its process tree)."""
    return [m for pid in process_tree(daemon_pid) if (m := process_memory(pid)) is not None]


# Istio's samples/bookinfo/networking/bookinfo-gateway.yaml (productpage routes only).
BOOKINFO_GATEWAY: list[dict[str, object]] = [
    {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
     "metadata": {"name": "bookinfo-gateway"},
     "spec": {"selector": {"istio": "ingressgateway"}, "servers": [
         {"port": {"number": 8080, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}},
    {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
     "metadata": {"name": "bookinfo"},
     "spec": {"hosts": ["*"], "gateways": ["bookinfo-gateway"], "http": [
         {"match": [{"uri": {"exact": "/productpage"}}, {"uri": {"prefix": "/static"}}],
          "route": [{"destination": {"host": "productpage", "port": {"number": 9080}}}]}]}},
]
