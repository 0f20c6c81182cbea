"""Container probes (readiness, liveness, startup) against the ports the pod's processes use.

A probe names a container port (by number or name); the runtime translates it to the port it
allocated (the host port, or in capture mode the app's internal port). `httpGet` succeeds on a
status 200-399, `tcpSocket` when the port accepts a connection, `exec` when the command (run like
`kubectl exec`) exits 0. `grpc` is checked as a TCP connection (the twins do not speak the gRPC
health protocol).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .exec_user import exec_uid
from .process import child_setup

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


@dataclass
class ProbeResult:
    ok: bool
    message: str = ""


async def tcp_check(port: int, timeout: float) -> ProbeResult:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    except TimeoutError:
        return ProbeResult(False, f"dial tcp 127.0.0.1:{port}: i/o timeout")
    except OSError as exc:
        return ProbeResult(False, f"dial tcp 127.0.0.1:{port}: {exc.strerror}")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return ProbeResult(True)


async def http_check(port: int, path: str, headers: list[Obj], timeout: float) -> ProbeResult:
    url = f"http://127.0.0.1:{port}{path}"
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            # HTTP/1.1 as the kubelet sends it: Envoy refuses HTTP/1.0 (426) by default
            lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}",
                     "User-Agent: kube-probe/1.37", "Accept: */*", "Connection: close"]
            lines += [f"{h.get('name')}: {h.get('value')}" for h in headers]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            status_line = await reader.readline()
            writer.close()
    except TimeoutError:
        return ProbeResult(False, f'Get "{url}": context deadline exceeded')
    except OSError as exc:
        return ProbeResult(False, f'Get "{url}": dial tcp 127.0.0.1:{port}: {exc.strerror}')
    parts = status_line.split()
    code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    if 200 <= code < 400:
        return ProbeResult(True)
    return ProbeResult(False, f"HTTP probe failed with statuscode: {code}")


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
