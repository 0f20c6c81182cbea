"""Generic HTTP echo server: the twin the embedded runtime runs for an image it does not know.

Stdlib only so that it starts in tens of milliseconds. Every request on every port gets a 200 with
a JSON description of the request, so a learner can see which pod answered and which headers
(tracing, identity) arrived. One access-log line per request goes to stdout, which the runtime
keeps as the container's log (`kubectl logs`).

    python -m labs.embedded.apps.echo --port 8080 [--port 9090 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from urllib.parse import parse_qs, urlsplit

from ..workload import POD_NAME_ENV, POD_NAMESPACE_ENV

MAX_ECHOED_BODY = 64 * 1024


class EchoHandler(BaseHTTPRequestHandler):
    """Answers any method and path with a JSON echo of the request."""

    server_version = "meshlab-echo/1"
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, each keep-alive request through
    # Envoy would wait ~40 ms for a delayed ACK.
    disable_nagle_algorithm = True

    def _echo(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(length, MAX_ECHOED_BODY)) if length else b""
        url = urlsplit(self.path)
        payload = {
            "method": self.command,
            "path": url.path,
            "query": parse_qs(url.query),
            "headers": dict(self.headers.items()),
            "body": body.decode("utf-8", "replace"),
            "hostname": os.environ.get(POD_NAME_ENV, os.environ.get("HOSTNAME", "")),
            "namespace": os.environ.get(POD_NAMESPACE_ENV, ""),
            "port": self.server.server_address[1],
            "client": self.client_address[0],
        }
        data = json.dumps(payload, indent=2).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _echo

    def log_message(self, format: str, *args: object) -> None:
        """Access log to stdout (the stdlib writes to stderr), flushed so `logs -f` sees it."""
        sys.stdout.write(f"{self.address_string()} - - [{self.log_date_time_string()}] "
                         f"{format % args}\n")
        sys.stdout.flush()


def serve(ports: list[int]) -> None:
    """Serve on 127.0.0.1 on every port until SIGTERM/SIGINT, then shut down cleanly. The
    handlers come first: the runtime may stop a container the moment its port answers, and a
    SIGTERM before them would kill it with the default action (exit 143, not a clean stop)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    servers = [ThreadingHTTPServer(("127.0.0.1", port), EchoHandler) for port in ports]
    for server in servers:
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"echo server listening on {', '.join(f'127.0.0.1:{p}' for p in ports) or 'no port'}",
          flush=True)
    stop.wait()
    for server in servers:
        server.shutdown()
        server.server_close()
    print("echo server stopped", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m labs.embedded.apps.echo",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, action="append", default=[],
                        help="TCP port to listen on at 127.0.0.1 (repeatable; none = stay idle)")
    serve(parser.parse_args(argv).port)


if __name__ == "__main__":
    main()
