"""Container probes (readiness, liveness, startup) against the ports the pod's processes use.

A probe names a container port (by number or name); the runtime translates it to the port it
allocated (the host port, or in capture mode the app's internal port). `httpGet` succeeds on a
status 200-399, `tcpSocket` when the port accepts a connection, `exec` when the command (run like
`kubectl exec`) exits 0. `grpc` is checked as a TCP connection (the twins do not speak the gRPC
health protocol).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..loopback import ProbeResult, http_check, tcp_check
from ..subprocesses import child_setup
from .exec_user import exec_uid

Obj = dict[str, Any]


def container_port(container: Obj, port: Any) -> int | None:
    """A probe's `port` (number or the name of one of the container's ports) as a number."""
    if isinstance(port, int):
        return port
    if isinstance(port, str):
        if port.isdigit():
            return int(port)
        for declared in container.get("ports") or []:
            if declared.get("name") == port:
                return int(declared["containerPort"])
    return None


def probe_ports(container: Obj) -> list[int]:
    """Container ports the probes use (they need host ports even if not declared)."""
    found = []
    for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
        probe = container.get(kind) or {}
        for handler in ("httpGet", "tcpSocket", "grpc"):
            if handler in probe:
                port = container_port(container, probe[handler].get("port"))
                if port is not None:
                    found.append(port)
    return found


async def exec_check(command: list[str], env: dict[str, str], cwd: Path,
                     timeout: float) -> ProbeResult:
    try:
        proc = await asyncio.create_subprocess_exec(
            *command, env=env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True, preexec_fn=child_setup(run_as=exec_uid()))
    except OSError as exc:
        return ProbeResult(False, f"exec {command[:1]}: {exc.strerror}")
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return ProbeResult(False, f"command {command!r} timed out")
    if proc.returncode == 0:
        return ProbeResult(True)
    return ProbeResult(False, output.decode("utf-8", "replace").strip()
                       or f"command {command!r} exited with {proc.returncode}")


@dataclass
class Probe:
    """One probe of one container, with the kubelet's timing fields and defaults."""

    kind: str  # Readiness | Liveness | Startup
    spec: Obj
    container: Obj
    bind_ports: dict[int, int]  # container port -> where the process listens on 127.0.0.1

    @property
    def initial_delay(self) -> float:
        return float(self.spec.get("initialDelaySeconds", 0))

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds", 10))

    @property
    def failure_threshold(self) -> int:
        return int(self.spec.get("failureThreshold", 3))

    @property
    def timeout(self) -> float:
        return float(self.spec.get("timeoutSeconds", 1))

    async def check(self, env: dict[str, str], cwd: Path) -> ProbeResult:
        spec = self.spec
        if "exec" in spec:
            return await exec_check(list(spec["exec"].get("command") or []), env, cwd,
                                    self.timeout)
        for handler in ("httpGet", "tcpSocket", "grpc"):
            if handler in spec:
                port = container_port(self.container, spec[handler].get("port"))
                host_port = self.bind_ports.get(port) if port is not None else None
                if host_port is None:
                    return ProbeResult(False, f"{handler} port {spec[handler].get('port')!r} "
                                       "is not a port of this container")
                if handler == "httpGet":
                    return await http_check(host_port, spec[handler].get("path", "/"),
                                            spec[handler].get("httpHeaders") or [], self.timeout)
                return await tcp_check(host_port, self.timeout)
        return ProbeResult(False, "probe has no handler: set httpGet, tcpSocket, exec or grpc")
