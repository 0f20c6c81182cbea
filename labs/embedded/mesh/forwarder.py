"""The node forwarder: one Envoy per cluster standing in for kube-proxy for pods without a sidecar.

Pods without a sidecar get `http_proxy` pointing at its `port`; the control plane writes its
listeners, clusters and routes into `files.xds_dir` like any sidecar's. This module only runs the
process: it writes the bootstrap and empty xDS files, starts Envoy (dying with the daemon, as the
runtime's containers do), restarts it when it crashes, with a back-off capped at a few seconds,
and stops it.

The daemon starts it on first need (`ensure_running`: the runtime awaits it before a container
that dials services starts in a pod without a sidecar, and before an exec into such a pod), so a
cluster whose pods are all meshed does not pay for an idle Envoy (~20 MB). Until Envoy binds
them, its two ports stay bound (not listening) by the daemon, so no pod or other cluster on the
host is handed them meanwhile; Envoy binds over those sockets with SO_REUSEADDR, as Linux allows
while they do not listen. Once started it stays up.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path

from ..loopback import http_check
from ..subprocesses import start_helper, stop_helper
from .envoy import bootstrap, envoy_command, write_bootstrap, write_empty_xds
from .kube_state import TRUST_DOMAIN
from .proxyfiles import ProxyFiles

log = logging.getLogger(__name__)
NODE_ID = f"router~127.0.0.1~forwarder.meshlab~meshlab.svc.{TRUST_DOMAIN}"
CLUSTER = "node-forwarder"
READY_TIMEOUT = 10.0
READY_POLL = 0.02
RESTART_BACKOFF = 0.2  # first delay after a crash; doubles while crashes follow each other
RESTART_BACKOFF_CAP = 5.0
STABLE_AFTER = 30.0  # a run this long resets the back-off
STOP_GRACE = 2.0


class ForwarderError(RuntimeError):
    """The forwarder's Envoy did not start."""


class NodeForwarder:
    """Runs and supervises the node forwarder's Envoy."""

    def __init__(self, state_dir: Path, port: int, admin_port: int) -> None:
        self.dir = Path(state_dir) / "forwarder"
        self.port = port
        self.admin_port = admin_port
        self.restarts = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._starting: asyncio.Task[None] | None = None  # the start `ensure_running` began
        self._held = [held for p in (port, admin_port) if (held := _hold(p)) is not None]

    @property
    def files(self) -> ProxyFiles:
        return ProxyFiles(self.dir / "xds")

    @property
    def log_path(self) -> Path:
        return self.dir / "envoy.log"

    @property
    def bootstrap_path(self) -> Path:
        return self.dir / "bootstrap.yaml"

    @property
    def pid(self) -> int | None:
        """The running Envoy's pid (None while stopped or between restarts)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    @property
    def running(self) -> bool:
        """Started (and supervised: a crashed Envoy is being restarted)."""
        return self._supervisor is not None

    async def ensure_running(self) -> None:
        """Start Envoy unless it runs; callers at once wait for the same start, which runs as
        a task of its own: a caller cancelled meanwhile (its pod deleted) does not cancel it,
        which would leave an Envoy unsupervised on the ports. A failed start is logged, not
        raised (the pod that needed it still starts, as when the forwarder failed at the
        daemon's start), and tried again at the next need."""
        if self.running:
            return
        if self._starting is None or self._starting.done():
            self._starting = asyncio.create_task(self._start_logged(),
                                                 name="node-forwarder-start")
        await asyncio.shield(self._starting)

    async def _start_logged(self) -> None:
        try:
            await self.start()
        except (ForwarderError, OSError) as exc:
            log.error("the node forwarder did not start (%s); pods without a sidecar cannot "
                      "reach services by name", exc)

    async def start(self) -> None:
        """Write the files (the xDS ones only where the control plane has not written them
        yet), start Envoy and wait until its admin says it is live."""
        if self._supervisor is not None:
            raise ForwarderError("the node forwarder is already running")
        config = bootstrap(NODE_ID, CLUSTER, self.admin_port, self.files)

        def write() -> None:
            write_empty_xds(self.files)
            write_bootstrap(self.bootstrap_path, config)
        await asyncio.to_thread(write)
        proc = await self._spawn()
        await self._until_ready(proc)
        self._release_ports()
        self._supervisor = asyncio.create_task(self._supervise(), name="node-forwarder")

    def _release_ports(self) -> None:
        for held in self._held:
            held.close()
        self._held = []

    async def _spawn(self) -> asyncio.subprocess.Process:
        self._proc = await start_helper(
            envoy_command(self.bootstrap_path, admin_log=self.log_path), self.log_path)
        return self._proc

    async def _until_ready(self, proc: asyncio.subprocess.Process) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not (await http_check(self.admin_port, "/ready", [], 1.0)).ok:
            if proc.returncode is not None or time.monotonic() > deadline:
                await stop_helper(proc, STOP_GRACE)
                raise ForwarderError(
                    f"the node forwarder's Envoy did not become ready on admin port "
                    f"127.0.0.1:{self.admin_port} (exit code {proc.returncode}); see "
                    f"{self.log_path}")
            await asyncio.sleep(READY_POLL)

    async def _supervise(self) -> None:
        delay = RESTART_BACKOFF
        while True:
            proc = self._proc
            assert proc is not None
            started = time.monotonic()
            code = await proc.wait()
            if time.monotonic() - started > STABLE_AFTER:
                delay = RESTART_BACKOFF
            log.warning("node forwarder Envoy exited with %s; restarting in %.1fs (log: %s)",
                        code, delay, self.log_path)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_BACKOFF_CAP)
            try:
                await self._spawn()
            except OSError as exc:
                log.error("node forwarder Envoy could not be restarted: %s", exc)
                continue
            self.restarts += 1

    async def stop(self) -> None:
        """Stop a start under way and supervising, then SIGTERM Envoy (SIGKILL if it lingers)."""
        if self._starting is not None:
            self._starting.cancel()
            await asyncio.gather(self._starting, return_exceptions=True)
            self._starting = None
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None
        if self._proc is not None:
            await stop_helper(self._proc, STOP_GRACE)
            self._proc = None
        self._release_ports()


def _hold(port: int) -> socket.socket | None:
    """A socket bound to 127.0.0.1:`port`, not listening, with SO_REUSEADDR: other binds fail
    (`loopback.port_is_free` says taken), Envoy's (SO_REUSEADDR too) succeeds. None when the
    port is taken already: Envoy's start then says so."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        return None
    return sock

