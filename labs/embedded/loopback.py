"""Whether a port on this host's loopback is free — shared by the runtime's host ports and the
API server's node ports, which both must avoid ports other clusters on the host already hold."""

from __future__ import annotations

import socket


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:`port` (a plain bind fails even against
    listeners that set SO_REUSEPORT, as Envoy's do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
