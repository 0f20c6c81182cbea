"""podinfo twin (`ghcr.io/stefanprodan/podinfo`, the app of Flagger's tutorials).

Routes, JSON shapes and metric names follow stefanprodan/podinfo 6.x `pkg/api/http/*.go`
(server.go routes; info.go `RuntimeResponse`; status.go, delay.go, env.go, headers.go, echo.go,
health.go, version.go; metrics.go): `GET /` and `/api/info` (runtime info), `/version`,
`/healthz`, `/readyz` (+ `POST /readyz/enable|disable`), `/status/{code}`, `/delay/{seconds}`,
`/env`, `/headers`, `/echo` and `/api/echo` (body back, 202), `POST /token` (token.go: an HS256
JWT for the body's user, signed with `PODINFO_JWT_SECRET`, else main.go's viper default — the
Flagger tutorials' acceptance test is `curl -sd 'test' .../token | grep token`), `/metrics`.
Every request except those to the metrics port is counted as podinfo's Prometheus middleware does:
`http_request_duration_seconds{method,path,status}` (client_golang's default buckets; `path` is the
route's name or template turned into a label, e.g. `root`, `delay`, `api_info`) and
`http_requests_total{status}` — what Flagger's builtin metrics and the tutorials' HPA read.

Configuration: the image tag is the version (podinfo's is built in), and podinfo's environment
(`PODINFO_` + flag name, viper's AutomaticEnv): `PODINFO_UI_COLOR`, `PODINFO_UI_MESSAGE`,
`PODINFO_UI_LOGO`, `PODINFO_RANDOM_DELAY`, `PODINFO_RANDOM_DELAY_MIN|MAX|UNIT`,
`PODINFO_RANDOM_ERROR`, `PODINFO_UNHEALTHY`, `PODINFO_UNREADY`, `PODINFO_LEVEL` (`debug` logs
each request), `PODINFO_PORT_METRICS` (else 9797, as Flagger's manifest sets it). Not emulated,
visibly: the container's `command` flags (the embedded runtime runs twins, not the image's
command line — use the environment variables instead), the gRPC API on `--grpc-port` (that port
answers this HTTP API), Go runtime metrics, the UI page (browsers get the JSON too), `/store`,
`/cache`, `/token/validate`, `/configs`, `/ws/echo`, `/chunked`, `/panic`, `/fault_injection`.

    python -m labs.embedded.apps.podinfo --image ghcr.io/stefanprodan/podinfo:6.0.1 --port 9898
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import platform
import random
import re
import sys
import threading
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import UTC, datetime

from . import localhost
from .http import TwinHandler, add_port_option, serve

DEFAULT_VERSION = "6.14.1"  # pkg/version/version.go at the podinfo release this twin follows
REVISION = "unknown"  # what a build without ldflags reports
METRICS_PORT = 9797  # --port-metrics in Flagger's manifest (upstream's default is 0: none)
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # DefBuckets
DEFAULT_LOGO = "https://raw.githubusercontent.com/stefanprodan/podinfo/gh-pages/cuddle_clap.gif"
RANDOM_ERRORS = (500, 400, 409)  # randomErrorMiddleware
_NAMED_ROUTES = (("delay", re.compile(r"^/delay/[0-9]+$")),
                 ("status", re.compile(r"^/status/[0-9]+$")))
_INVALID_LABEL = re.compile(r"[^a-zA-Z0-9]+")


def url_to_label(path: str) -> str:
    """metrics.go urlToLabel: `/api/info` -> `api_info`, `/` -> `root`."""
    return _INVALID_LABEL.sub("_", path).strip("_").lower() or "root"


def route_label(path: str) -> str:
    """The `path` label: a named route's name, else the path (podinfo uses the route template;
    the twin's other routes have no variables, so the path is the template)."""
    for name, pattern in _NAMED_ROUTES:
        if pattern.match(path):
            return name
    return url_to_label(path)


@dataclass
class Metrics:
    """podinfo's two HTTP metrics, rendered as client_golang writes them."""

    counts: dict[str, int] = field(default_factory=dict)
    histograms: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        key = (method, path, str(status))
        with self.lock:
            self.counts[str(status)] = self.counts.get(str(status), 0) + 1
            # per bucket counts (not cumulative), then count and sum
            hist = self.histograms.setdefault(key, [0.0] * (len(DEFAULT_BUCKETS) + 2))
            index = bisect_left(DEFAULT_BUCKETS, seconds)
            if index < len(DEFAULT_BUCKETS):
                hist[index] += 1
            hist[-2] += 1
            hist[-1] += seconds

    def text(self) -> str:
        with self.lock:
            lines = ["# HELP http_request_duration_seconds Seconds spent serving HTTP requests.",
                     "# TYPE http_request_duration_seconds histogram"]
            for (method, path, status), hist in sorted(self.histograms.items()):
                labels = f'method="{method}",path="{path}",status="{status}"'
                cumulative = 0.0
                for bound, count in zip(DEFAULT_BUCKETS, hist, strict=False):
                    cumulative += count
                    lines.append(f'http_request_duration_seconds_bucket{{{labels},le="{bound:g}"}}'
                                 f" {cumulative:g}")
                lines.append(f'http_request_duration_seconds_bucket{{{labels},le="+Inf"}} '
                             f"{hist[-2]:g}")
                lines.append(f"http_request_duration_seconds_sum{{{labels}}} {hist[-1]!r}")
                lines.append(f"http_request_duration_seconds_count{{{labels}}} {hist[-2]:g}")
            lines += ["# HELP http_requests_total The total number of HTTP requests.",
                      "# TYPE http_requests_total counter"]
            lines += [f'http_requests_total{{status="{status}"}} {count}'
                      for status, count in sorted(self.counts.items())]
        return "\n".join(lines) + "\n"


def _flag(name: str, default: str) -> str:
    """A podinfo setting from its environment variable (viper: PODINFO_ + flag, `-` -> `_`)."""
    return os.environ.get("PODINFO_" + name.upper().replace("-", "_"), default)


def _bool(name: str) -> bool:
    return _flag(name, "false").strip().lower() in ("1", "t", "true", "yes")


def _int(name: str, default: int) -> int:
    value = _flag(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"podinfo: PODINFO_{name.upper().replace('-', '_')}={value!r} is not "
                         "an integer") from None


@dataclass
class Config:
    version: str
    color: str = field(default_factory=lambda: _flag("ui-color", "#34577c"))
    logo: str = field(default_factory=lambda: _flag("ui-logo", DEFAULT_LOGO))
    message: str = ""
    random_delay: bool = field(default_factory=lambda: _bool("random-delay"))
    delay_min: int = field(default_factory=lambda: _int("random-delay-min", 0))
    delay_max: int = field(default_factory=lambda: _int("random-delay-max", 5))
    delay_unit: float = field(
        default_factory=lambda: 0.001 if _flag("random-delay-unit", "s") == "ms" else 1.0)
    random_error: bool = field(default_factory=lambda: _bool("random-error"))


def log(level: str, msg: str, **fields: str) -> None:
    """A zap JSON line on stdout, as podinfo's initZap encodes it (ISO8601 time)."""
    ts = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    sys.stdout.write(json.dumps({"level": level, "ts": ts, "msg": msg, **fields}) + "\n")
    sys.stdout.flush()


CONFIG = Config(DEFAULT_VERSION)
DEBUG = _flag("level", "info") == "debug"
METRICS = Metrics()
STATE = {"healthy": not _bool("unhealthy"), "ready": not _bool("unready")}
METRICS_PORTS: set[int] = set()  # the listening ports that are the metrics server


def version_of(image: str) -> str:
    """The version the image reports: its tag without a leading `v` (`6.0.1`), else the
    release this twin follows."""
    name = image.split("@", 1)[0]
    tail = name.rsplit("/", 1)[-1]
    return tail.rsplit(":", 1)[1].removeprefix("v") if ":" in tail else DEFAULT_VERSION


JWT_SECRET = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"  # cmd/podinfo/main.go viper.SetDefault


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_token(user: str, secret: str, expires_at: int) -> str:
    """tokenGenerateHandler's token: golang-jwt v4 HS256 over jwtCustomClaims (`name`, then
    StandardClaims' non-empty `exp`, `iss`), compact JSON as Go's encoder writes it."""
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = _b64url(json.dumps({"name": user, "exp": expires_at, "iss": "podinfo"},
                                separators=(",", ":"), ensure_ascii=False).encode())
    signature = hmac.new(secret.encode(), f"{header}.{claims}".encode(), hashlib.sha256)
    return f"{header}.{claims}.{_b64url(signature.digest())}"


class PodinfoHandler(TwinHandler):
    """The API port: podinfo's router behind its middleware chain (metrics, random delay/error)."""

    server_version = "podinfo"

    def _json(self, status: int, payload: object) -> None:
        """JSONResponse/JSONResponseCode: two-space indented JSON, no trailing newline."""
        self.reply(status, json.dumps(payload, indent=2, ensure_ascii=False),
                   "application/json; charset=utf-8", [("X-Content-Type-Options", "nosniff")])

    def _handle(self) -> None:
        path = self.url_path
        if self.server.server_address[1] in METRICS_PORTS:
            self._metrics_port(path)
            return
        started = time.perf_counter()
        self._status = 0
        if CONFIG.random_delay:
            span = max(CONFIG.delay_max - CONFIG.delay_min, 1)
            time.sleep((random.randrange(span) + CONFIG.delay_min) * CONFIG.delay_unit)
        if CONFIG.random_error and random.randrange(3) == 0:
            self.read_body()
            self.reply(random.choice(RANDOM_ERRORS), b"")
        else:
            self._route(path)
        METRICS.observe(self.command, route_label(path), self._status,
                        time.perf_counter() - started)

    def log_message(self, format: str, *args: object) -> None:
        """logging.go: `request started` at debug level only (Flagger's manifest runs podinfo
        at `--level=info`, so its log shows no requests)."""
        if DEBUG:
            log("debug", "request started", proto=self.request_version, uri=self.path,
                method=self.command, remote=f"{self.client_address[0]}:{self.client_address[1]}",
                **{"user-agent": self.headers.get("User-Agent", "")})

    def send_response(self, code: int, message: str | None = None) -> None:
        self._status = code
        super().send_response(code, message)

    def _route(self, path: str) -> None:
        method = self.command
        if path in ("/", "/api/info") and method == "GET":
            self._json(200, info())
        elif path == "/version" and method == "GET":
            self._json(200, {"commit": REVISION, "version": CONFIG.version})
        elif path in ("/healthz", "/readyz") and method == "GET":
            if STATE["healthy" if path == "/healthz" else "ready"]:
                self._json(200, {"status": "OK"})
            else:
                self.reply(503, b"")
        elif path in ("/readyz/enable", "/readyz/disable") and method == "POST":
            STATE["ready"] = path.endswith("enable")
            self.reply(202, b"")
        elif (match := re.match(r"^/status/([0-9]+)$", path)) and method in ("GET", "POST", "PUT"):
            self.read_body()
            code = int(match.group(1))
            if not 100 <= code <= 999:
                self._json(200, {"code": 400, "message": f"invalid status code {code}"})
            else:
                self._json(code, {"status": code})
        elif (match := re.match(r"^/delay/([0-9]+)$", path)) and method == "GET":
            delay = int(match.group(1))
            time.sleep(delay)
            self._json(200, {"delay": delay})
        elif path == "/env" and method in ("GET", "POST"):
            self.read_body()
            self._json(200, [f"{k}={v}" for k, v in os.environ.items()])
        elif path == "/headers" and method in ("GET", "POST"):
            self.read_body()
            headers: dict[str, list[str]] = {}
            for name, value in self.headers.items():
                if name.lower() == "host":  # Go keeps it in r.Host, not r.Header
                    continue
                headers.setdefault("-".join(p.capitalize() for p in name.split("-")),
                                   []).append(value)
            headers.setdefault("X-Api-Version", []).append(CONFIG.version)  # versionMiddleware
            headers.setdefault("X-Api-Revision", []).append(REVISION)
            self._json(200, headers)
        elif path in ("/echo", "/api/echo") or path.startswith(("/echo/", "/api/echo/")):
            body = self.read_body()
            self.reply(202, body, "application/octet-stream",
                       [("X-Content-Type-Options", "nosniff"),
                        ("Content-Security-Policy", "default-src 'none'"),
                        ("X-Color", CONFIG.color)])
        elif path == "/token" and method == "POST":
            user = self.read_body().decode("utf-8", "replace") or "anonymous"
            expires = int(time.time()) + 60
            self._json(200, {"token": jwt_token(user, _flag("jwt-secret", JWT_SECRET), expires),
                             "expires_at": datetime.fromtimestamp(expires, UTC).isoformat()
                             .replace("+00:00", "Z")})
        elif path == "/metrics" and method == "GET":
            self.reply(200, METRICS.text(), "text/plain; version=0.0.4; charset=utf-8")
        else:
            self.read_body()
            self.reply(404, "404 page not found\n", "text/plain; charset=utf-8")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle


    def _metrics_port(self, path: str) -> None:
        """The `--port-metrics` server: `/metrics` and `/healthz` only, outside the middleware
        (Prometheus' scrapes are not counted: upstream's separate mux does not count them)."""
        self.read_body()
        if path == "/metrics":
            self.reply(200, METRICS.text(), "text/plain; version=0.0.4; charset=utf-8")
        elif path == "/healthz":
            self.reply(200, "OK")
        else:
            self.reply(404, "404 page not found\n", "text/plain; charset=utf-8")


def info() -> dict[str, str]:
    """info.go RuntimeResponse (the Go runtime's fields describe this Python process)."""
    return {
        "hostname": os.environ.get("HOSTNAME", platform.node()),
        "version": CONFIG.version, "revision": REVISION, "color": CONFIG.color,
        "logo": CONFIG.logo, "message": CONFIG.message, "goos": platform.system().lower(),
        "goarch": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(),
                                                              platform.machine()),
        "runtime": f"python{platform.python_version()}",
        "num_goroutine": str(threading.active_count()), "num_cpu": str(os.cpu_count() or 1),
    }


def _metrics_bind_port() -> int | None:
    """Where the pod's metrics port (PODINFO_PORT_METRICS, else Flagger's 9797) listens."""
    try:
        return localhost.dial_port("127.0.0.1", _int("port-metrics", METRICS_PORT), os.environ)
    except localhost.NotInPod:
        return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m labs.embedded.apps.podinfo")
    add_port_option(parser)
    parser.add_argument("--image", default="", help="the container image (its tag: the version)")
    args = parser.parse_args(argv)
    CONFIG.version = version_of(args.image)
    CONFIG.message = _flag("ui-message", f"greetings from podinfo v{CONFIG.version}")
    if CONFIG.delay_max < CONFIG.delay_min:
        parser.error("PODINFO_RANDOM_DELAY_MAX should be greater than PODINFO_RANDOM_DELAY_MIN")
    metrics_port = _metrics_bind_port()
    if metrics_port is not None:
        METRICS_PORTS.add(metrics_port)
    log("info", "Starting podinfo", version=CONFIG.version, revision=REVISION,
        port=_flag("port", "9898"))
    serve(PodinfoHandler, args.port, f"podinfo {CONFIG.version}")


if __name__ == "__main__":
    main()
