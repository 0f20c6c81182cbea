"""Host ports on 127.0.0.1 for pods: every pod shares the loopback address, so each container
port gets its own host port (see `labs.embedded.loopback`), remembered until the pod goes away."""

from __future__ import annotations

from labs.embedded.loopback import free_port, port_is_free


class PortAllocator:
    """Free TCP ports on 127.0.0.1, never handed out twice while in use."""

    def __init__(self) -> None:
        self._in_use: set[int] = set()

    def allocate(self, preferred: int | None = None) -> int:
        """A free port: `preferred` (e.g. the one a pod had before a daemon restart) if it still
        is, else a free one (see `labs.embedded.loopback`)."""
        if preferred and preferred not in self._in_use and port_is_free(preferred):
            self._in_use.add(preferred)
            return preferred
        port = free_port(self._in_use)
        self._in_use.add(port)
        return port

    def release(self, ports: list[int]) -> None:
        self._in_use.difference_update(ports)
