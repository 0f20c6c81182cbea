"""Ports on this host's loopback for the embedded cluster's listeners (API server, pods' host
ports, proxies, node ports), shared because they all must avoid ports other clusters on the host
already hold; and whether a listener there answers, checked as the kubelet's tcpSocket and
httpGet probes check it (the runtime's probes, the node forwarder's readiness).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

# Listeners take ports below Linux's ephemeral range (32768-60999 by default) and below the
# NodePort range (30000-32767). A port the OS picks for bind(port 0) comes from the ephemeral
# range, which is also where every outgoing connection gets its source port: between choosing
# such a port and binding it, a client's connection (a Prometheus scrape, an Envoy's upstream
# call) can take it, and the listener fails with "Address already in use".
LISTENER_PORTS = range(20000, 30000)


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:`port` (a plain bind fails even against
    listeners that set SO_REUSEPORT, as Envoy's do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class _Cursor:
    """Where this process looks for its next port: a random start, so that clusters and tests
    started at once rarely meet, then onwards, so that a port handed out is not handed out
    again before its listener binds it (until the whole range has gone round)."""

    next_index = random.randrange(len(LISTENER_PORTS))


def free_port(taken: Container[int] = ()) -> int:
    """A free port of `LISTENER_PORTS` on 127.0.0.1, not in `taken` (ports handed out that
    may not be bound yet)."""
    size = len(LISTENER_PORTS)
    for offset in range(size):
        index = (_Cursor.next_index + offset) % size
        port = LISTENER_PORTS[index]
        if port not in taken and port_is_free(port):
            _Cursor.next_index = (index + 1) % size
            return port
    raise RuntimeError(f"no free TCP port on 127.0.0.1 between {LISTENER_PORTS.start} and "
                       f"{LISTENER_PORTS.stop - 1}: too many pods or other listeners")


@dataclass
class ProbeResult:
    """A check's verdict; `message` says why it failed, in the kubelet's words."""

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


async def http_check(port: int, path: str, headers: list[dict[str, Any]],
                     timeout: float) -> ProbeResult:
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
