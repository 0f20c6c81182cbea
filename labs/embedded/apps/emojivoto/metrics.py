"""What emoji-svc and voting-svc share besides gRPC: Go's `log` line format and the
Prometheus endpoint on PROM_PORT (a thread beside the gRPC server)."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from http.server import ThreadingHTTPServer

from .. import localhost
from ..http import TwinHandler

NOT_EMULATED = ("# the twin exports only its own counters; upstream's grpc_prometheus and Go "
                "runtime series are not emulated\n")


def go_log(message: str) -> None:
    """A line as Go's standard logger writes it (to stderr): `2026/12/07 12:00:00 message`."""
    sys.stderr.write(f"{time.strftime('%Y/%m/%d %H:%M:%S')} {message}\n")
    sys.stderr.flush()


def start_metrics(render: Callable[[], str]) -> None:
    """Serve `/metrics` (`render()` after a note of what is not emulated) on PROM_PORT, when
    it is set and the pod declares it."""
    value = os.environ.get("PROM_PORT", "")
    if not value.isdigit():
        return
    try:
        port = localhost.dial_port("127.0.0.1", int(value), os.environ) or int(value)
    except localhost.NotInPod:
        port = int(value)

    class MetricsHandler(TwinHandler):
        def do_GET(self) -> None:
            if self.url_path == "/metrics":
                self.reply(200, NOT_EMULATED + render(), "text/plain; version=0.0.4")
            else:
                self.reply(404, "404 page not found\n")

        def log_message(self, format: str, *args: object) -> None:
            """Upstream logs no request (Prometheus' scrapes would flood the log)."""

    server = ThreadingHTTPServer(("127.0.0.1", port), MetricsHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    go_log(f"Starting prom metrics on PROM_PORT=[{value}]")
