"""Ports on this host's loopback for the embedded cluster's listeners (API server, pods' host
ports, proxies, node ports), shared because they all must avoid ports other clusters on the host
already hold."""

from __future__ import annotations

import random
import socket
from collections.abc import Container

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
