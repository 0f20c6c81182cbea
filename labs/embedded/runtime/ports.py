"""Host ports on 127.0.0.1 for pods: every pod shares the loopback address, so each container
port gets its own host port, chosen by the OS and remembered until the pod goes away."""

from __future__ import annotations

import socket

from labs.embedded.loopback import port_is_free


class PortAllocator:
    """Free TCP ports on 127.0.0.1, never handed out twice while in use."""

    def __init__(self) -> None:
        self._in_use: set[int] = set()

    def allocate(self, preferred: int | None = None) -> int:
        """A free port: `preferred` (e.g. the one a pod had before a daemon restart) if it still
        is, else one the OS picks (bind to port 0, read it, close)."""
        if preferred and preferred not in self._in_use and port_is_free(preferred):
            self._in_use.add(preferred)
            return preferred
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            if port not in self._in_use:
                self._in_use.add(port)
                return port
        raise RuntimeError("no free TCP port on 127.0.0.1: too many pods or other listeners")

    def release(self, ports: list[int]) -> None:
        self._in_use.difference_update(ports)
