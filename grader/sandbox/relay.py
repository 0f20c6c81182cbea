"""Live mode: the student's own cluster already runs on the host's loopback, so the kernel cannot
simply share its network namespace (as in replay mode) — yet on the host's network it could
reach every other student's Envoy admin ports, which need no credentials. Instead the kernel
gets a namespace of its own too, and the grader relays into it exactly its cluster's ports:
the API server; for an embedded cluster also its services (telemetry, Prometheus), its pods'
and gateways' host ports and admin ports, and its Services' node ports — rechecked every second,
so a pod the submission creates becomes reachable. Each is listened on at the same port inside
the namespace and copied to that port of the host's loopback; nothing else is reachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import subprocess
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from grader.sandbox.netns import entered
from labs.cluster import ClusterAddress, EmbeddedCluster, kubectl_binary
from labs.embedded.workload import HOST_PORTS, PROXY_PORTS

log = logging.getLogger(__name__)
REFRESH_S = 1.0
CONNECT_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 10.0
CHUNK = 64 * 1024
PORT_ANNOTATIONS = (HOST_PORTS, PROXY_PORTS)


class LoopbackRelay:
    """Relays each port `ports()` names from 127.0.0.1 inside `netns` to 127.0.0.1 outside."""

    def __init__(self, netns: str, ports: Callable[[], set[int]],
                 refresh: float = REFRESH_S) -> None:
        self.netns, self.ports, self.refresh = netns, ports, refresh
        self._thread = threading.Thread(target=self._run, name="loopback-relay", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()

    def __enter__(self) -> LoopbackRelay:
        self._thread.start()
        self._started.wait(STOP_TIMEOUT_S)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(STOP_TIMEOUT_S)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        servers: dict[int, asyncio.Server] = {}
        first = True
        try:
            while not self._stop.is_set():
                try:
                    wanted = await asyncio.to_thread(self.ports)
                except Exception as exc:  # a busy or restarting cluster: try again next round
                    log.warning("relay: listing the cluster's ports failed: %s", exc)
                    wanted = set()
                for port in sorted(wanted - servers.keys()):
                    if server := await self._listen(port):
                        servers[port] = server
                if first:
                    self._started.set()
                    first = False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.refresh)
        finally:
            self._started.set()
            for server in servers.values():
                server.close()

    async def _listen(self, port: int) -> asyncio.Server | None:
        """A listener inside the namespace (this thread enters it just to make the socket; the
        connections it relays are then opened on the host's network)."""
        try:
            with entered(self.netns):
                sock = socket.create_server(("127.0.0.1", port))
        except OSError as exc:  # the kernel itself listens there: its own port wins
            log.warning("relay: cannot listen on %d in the sandbox: %s", port, exc)
            return None
        return await asyncio.start_server(lambda r, w: _relay(r, w, port), sock=sock)


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
    try:
        up_reader, up_writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError):
        writer.close()
        return
    try:
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
    finally:
        writer.close()
        up_writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream, then pass the end on (a half-close, as TCP allows)."""
    with contextlib.suppress(OSError, RuntimeError):
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


def cluster_ports(target: ClusterAddress) -> Callable[[], set[int]]:
    """What a student's live cluster listens on, as the grader (not the kernel) sees it."""
    if target.cluster:
        return lambda: _embedded_ports(EmbeddedCluster(target.cluster, target.state_dir))
    api = _loopback_api_port(target)
    return lambda: {api} if api else set()


def _embedded_ports(cluster: EmbeddedCluster) -> set[int]:
    endpoint = cluster.paths.read_endpoint() or {}
    ports = {value for key, value in endpoint.items() if key != "pid"}
    listed = _kubectl_json(cluster.kubeconfig, "get", "pods,services", "--all-namespaces")
    for item in listed.get("items", []):
        if item.get("kind") == "Service":
            ports |= {int(p["nodePort"]) for p in item["spec"].get("ports") or []
                      if p.get("nodePort")}
            continue
        annotations = item["metadata"].get("annotations") or {}
        for name in PORT_ANNOTATIONS:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                ports |= {int(p) for p in json.loads(annotations.get(name, "{}")).values()}
    return ports


def _kubectl_json(kubeconfig: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run([kubectl_binary(), f"--kubeconfig={kubeconfig}", *args, "-o", "json"],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip())
    return dict(json.loads(done.stdout))


def _loopback_api_port(target: ClusterAddress) -> int | None:
    """The API server's port when a kubeconfig context points at this machine's loopback
    (kind publishes it there)."""
    config = yaml.safe_load(Path(target.kubeconfig or Path("~/.kube/config").expanduser())
                            .read_text()) or {}
    contexts = {c["name"]: c["context"] for c in config.get("contexts") or []}
    clusters = {c["name"]: c["cluster"] for c in config.get("clusters") or []}
    context = contexts.get(target.context or config.get("current-context", ""), {})
    server = urllib.parse.urlsplit(clusters.get(context.get("cluster", ""), {}).get("server", ""))
    return server.port if server.hostname in ("127.0.0.1", "localhost") else None
