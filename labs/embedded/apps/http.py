"""HTTP pieces the app twins share: a request handler with an access log on stdout, serving on
loopback ports until SIGTERM, and outbound calls through the pod's `http_proxy`.

Stdlib only, so a twin starts in tens of milliseconds. Outbound calls go through the proxy named
by the environment (`http_proxy` / `no_proxy`, set by the runtime: the sidecar's outbound listener
in a meshed pod, the node forwarder otherwise), which is how `http://reviews:9080` resolves
without DNS.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from urllib.parse import parse_qs, urlsplit


def python_module(module: str, *args: str) -> list[str]:
    """The command line running `python -m module args` with this interpreter, isolated from
    the caller's PYTHON* variables and working directory."""
    return [sys.executable, "-I", "-m", module, *args]


def launcher(module: str, *args: str) -> Callable[[list[int]], list[str]]:
    """ports -> `python -m module args --port P ...` (a catalog App's `argv`)."""
    def argv(ports: list[int]) -> list[str]:
        return python_module(module, *args, *(a for p in ports for a in ("--port", str(p))))
    return argv


def add_port_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, action="append", default=[],
                        help="TCP port to listen on at 127.0.0.1 (repeatable)")


class TwinHandler(BaseHTTPRequestHandler):
    """Base handler: HTTP/1.1 keep-alive, small reply helpers, one access-log line per request."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # see echo.py: avoids ~40 ms stalls on keep-alive requests

    @property
    def url_path(self) -> str:
        return urlsplit(self.path).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query, keep_blank_values=True)

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def reply(self, status: int, body: bytes | str, content_type: str = "text/plain",
              headers: Iterable[tuple[str, str]] = ()) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def reply_json(self, status: int, payload: object, indent: int | None = None,
                   headers: Iterable[tuple[str, str]] = (), compact: bool = False) -> None:
        """JSON reply; `compact` drops the spaces (as Node's and Ruby's serialisers do)."""
        separators = (",", ":") if compact else None
        text = json.dumps(payload, indent=indent, separators=separators) + ("\n" if indent else "")
        self.reply(status, text, "application/json", headers)

    def log_message(self, format: str, *args: object) -> None:
        """Access log to stdout (the stdlib writes to stderr), flushed so `logs -f` sees it."""
        sys.stdout.write(f"{self.address_string()} - - [{self.log_date_time_string()}] "
                         f"{format % args}\n")
        sys.stdout.flush()


# How often serve_forever wakes to look for a stop request (the stdlib's default). A stop wakes
# it at once instead (`_stop`): polling 20 times a second for a quick stop kept every idle twin
# busy for nothing.
SHUTDOWN_POLL = 0.5


def _stop(server: ThreadingHTTPServer) -> None:
    """Stop `server.serve_forever` now: ask it to stop, then shut the listening socket, which
    wakes its poll on Linux (elsewhere it notices within `SHUTDOWN_POLL`)."""
    stopper = threading.Thread(target=server.shutdown, daemon=True)
    stopper.start()
    with contextlib.suppress(OSError):
        server.socket.shutdown(socket.SHUT_RDWR)
    stopper.join()
    server.server_close()


def serve(handler: type[BaseHTTPRequestHandler], ports: list[int], name: str) -> None:
    """Serve `handler` on 127.0.0.1 on every port until SIGTERM/SIGINT, then stop cleanly."""
    servers = [ThreadingHTTPServer(("127.0.0.1", port), handler) for port in ports]
    for server in servers:
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(SHUTDOWN_POLL,), daemon=True).start()
    wait_for_termination(f"{name} listening on "
                         f"{', '.join(f'127.0.0.1:{p}' for p in ports) or 'no port'}")
    for server in servers:
        _stop(server)
    print(f"{name} stopped", flush=True)


def wait_for_termination(banner: str = "") -> None:
    """Block until SIGTERM or SIGINT (the kubelet's stop signal, or Ctrl-C)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if banner:
        print(banner, flush=True)
    stop.wait()


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


def http_get(url: str, headers: Mapping[str, str], timeout: float) -> Reply | None:
    """GET `url` via the pod's proxy; None when no HTTP answer came (refused, reset, timeout).

    The proxies come from the environment explicitly (no_proxy still honoured); urllib is
    imported here because only the twins that call out need it (startup time)."""
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler(urllib.request.getproxies()))
    request = urllib.request.Request(url, headers=dict(headers))
    try:
        with opener.open(request, timeout=timeout) as response:
            return Reply(response.status, response.read())
    except urllib.error.HTTPError as error:
        with error:
            return Reply(error.code, error.read())
    except (OSError, ValueError):  # URLError, timeouts and resets are OSErrors
        return None
