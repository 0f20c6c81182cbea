"""The Jaeger addon's image, `jaegertracing/jaeger` (labs/manifests/jaeger.yaml, from istio/istio
samples/addons/jaeger.yaml): Jaeger all-in-one whose span storage is the embedded cluster's
span collector.

Jaeger all-in-one with in-memory storage keeps the spans it receives in its own process and
answers its UI from them. Here every sidecar and gateway already reports its Zipkin v2 spans to
the daemon's collector (labs/embedded/mesh/telemetry.py), which keeps them in memory, bounded:
that collector is this Jaeger's storage. The container serves, on the pod's host ports:
- 16686, the query service: Jaeger's HTTP API (apps/jaeger_query.py) and a web UI
  (apps/jaeger_ui.py, server-rendered: meshlab's Jaeger-compatible view, not Jaeger's React UI);
  also under `/jaeger`, the `base_path` upstream's configuration sets, so a URL written for the
  real addon works too, while `istioctl dashboard jaeger`'s URL (no path) opens the UI;
- 9411, the Zipkin receiver (the `zipkin` and `jaeger-collector` Services): spans POSTed to
  `/api/v2/spans` go to the same storage;
- 13133, the health check (`/status`, the pod's probes): healthy while the storage answers.
The collector's address comes from the cluster's endpoint.json (`telemetry`), found from the
container's directory (HOME: <cluster dir>/pods/<pod>/<container>), read at each request so a
restarted daemon is followed. Which host port is which
container port comes from the pod's `localhost` map (apps/localhost.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..paths import ClusterPaths, pods_dir
from . import jaeger_ui
from .http import TwinHandler, add_port_option, serve
from .jaeger_query import (
    NotFound,
    QueryError,
    SpanStorage,
    error_body,
    parse_trace_query,
    structured,
    trace_id,
)
from .localhost import NotInPod, pod_localhost

QUERY_PORT, ZIPKIN_PORT, HEALTH_PORT = 16686, 9411, 13133
BASE_PATH = "/jaeger"  # upstream's jaeger_query base_path
TIMEOUT_S = 10.0
STARTED = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class StorageError(RuntimeError):
    """The span collector did not answer; the message says where and what to check."""


def collector_url(env: Mapping[str, str]) -> str:
    """The embedded cluster's Zipkin API, which is this Jaeger's storage."""
    home = Path(env.get("HOME") or ".").resolve()
    in_pod = len(home.parents) > 3 and home.parents[1] == pods_dir(home.parents[2])
    cluster_dir = home.parents[2] if in_pod else home
    paths = ClusterPaths(cluster_dir.name, cluster_dir.parent.parent)
    ports = paths.read_endpoint() if in_pod else None
    if not ports or "telemetry" not in ports:
        raise StorageError(
            f"cannot find the embedded cluster's span collector: no `telemetry` port in "
            f"{paths.endpoint} (this container's HOME is {home}); is the cluster running "
            "(`meshlab status`)? The Jaeger addon runs in a pod of the embedded cluster.")
    return f"http://127.0.0.1:{ports['telemetry']}"


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy


def zipkin_fetch(path: str, params: Mapping[str, str]) -> Any:
    """GET the collector's Zipkin API; NotFound for a 404, StorageError when it fails."""
    base = collector_url(os.environ)
    url = base + path + (f"?{urllib.parse.urlencode(params)}" if params else "")
    try:
        with _DIRECT.open(url, timeout=TIMEOUT_S) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as err:
        with err:
            detail = err.read().decode(errors="replace").strip()
        if err.code == 404:
            raise NotFound(detail) from None
        raise StorageError(f"the span collector at {base} answered {err.code}: {detail}") from None
    except (OSError, ValueError) as err:
        raise StorageError(f"the span collector at {base} did not answer ({err}): is the "
                           "embedded cluster running (`meshlab status`)?") from None


def zipkin_post(body: bytes, content_type: str) -> tuple[int, str]:
    """Hand POSTed spans to the collector: its status and answer."""
    request = urllib.request.Request(collector_url(os.environ) + "/api/v2/spans", data=body,
                                     headers={"Content-Type": content_type}, method="POST")
    try:
        with _DIRECT.open(request, timeout=TIMEOUT_S) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read().decode(errors="replace")
    except OSError as err:
        raise StorageError(f"the span collector did not take the spans ({err})") from None


STORAGE = SpanStorage(zipkin_fetch)


ROLES: dict[int, int] = {}  # listening port -> the container port it serves (main sets it)


class JaegerHandler(TwinHandler):
    """One handler for the three ports; the container port behind the one a request came to
    picks what it serves."""

    @property
    def role(self) -> int:
        return ROLES.get(self.server.server_address[1], 0)

    def do_GET(self) -> None:
        serve_role = {QUERY_PORT: self._query, ZIPKIN_PORT: self._zipkin_get,
                      HEALTH_PORT: self._health}.get(self.role)
        if serve_role is None:
            self.reply(404, "404 page not found\n", "text/plain; charset=utf-8")
            return
        try:
            serve_role()
        except StorageError as err:
            self._failed(str(err))
        except Exception as err:  # as Jaeger's recovery handler: a 500, the stack in the log
            traceback.print_exc()
            self._failed(f"internal error ({type(err).__name__}: {err}); the stack is in the "
                         "container's log: kubectl logs -n istio-system deploy/jaeger")

    def _failed(self, message: str) -> None:
        if self.url_path.removeprefix(self.base).startswith("/api/") or (
                self.role != QUERY_PORT):
            self._error(500, message)
        else:
            self.reply(500, jaeger_ui.error_page(message, self.base),
                       "text/html; charset=utf-8")

    def do_POST(self) -> None:
        if self.role != ZIPKIN_PORT or self.url_path != "/api/v2/spans":
            self.reply(404, "404 page not found\n", "text/plain; charset=utf-8")
            return
        try:
            status, text = zipkin_post(self.read_body(),
                                       self.headers.get("Content-Type") or "application/json")
        except StorageError as err:
            self.reply(500, f"{err}\n", "text/plain; charset=utf-8")
            return
        self.reply(status, text, "text/plain; charset=utf-8")

    # -- helpers -----------------------------------------------------------------------------
    def _json(self, payload: object) -> None:
        pretty = (self.query.get("prettyPrint") or [""])[0] not in ("", "false")
        self.reply(200, json.dumps(payload, indent=4 if pretty else None), "application/json")

    def _error(self, code: int, message: str) -> None:
        """`handleError`: the structured body through Go's http.Error."""
        self.reply(code, json.dumps(error_body(code, message)) + "\n",
                   "text/plain; charset=utf-8", [("X-Content-Type-Options", "nosniff")])

    # -- 13133 and 9411 --------------------------------------------------------------------
    def _health(self) -> None:
        if self.url_path != "/status":
            self.reply(404, "404 page not found\n", "text/plain; charset=utf-8")
            return
        STORAGE.services()  # StorageError -> 500: not healthy while storage does not answer
        self.reply_json(200, {"start_time": STARTED, "healthy": True, "status": "StatusOK",
                              "status_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})

    def _zipkin_get(self) -> None:
        self.reply(405, "405 method not allowed: the Zipkin receiver takes spans, POST "
                   "/api/v2/spans; read traces from the query port (16686)\n",
                   "text/plain; charset=utf-8")

    # -- 16686 -------------------------------------------------------------------------------
    @property
    def base(self) -> str:
        """"" or upstream's base path, as the request came."""
        path = self.url_path
        return BASE_PATH if path == BASE_PATH or path.startswith(BASE_PATH + "/") else ""

    def _query(self) -> None:
        path = self.url_path[len(self.base):] or "/"
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")] if (
            path.strip("/")) else []
        if parts[:1] == ["api"]:
            self._api(parts[1:])
        elif not parts or parts == ["search"]:
            self._search_page()
        elif len(parts) == 2 and parts[0] == "trace":
            self._trace_page(parts[1])
        else:
            self.reply(404, "404 page not found\n", "text/plain; charset=utf-8")

    def _api(self, parts: list[str]) -> None:
        if parts == ["services"]:
            services = STORAGE.services()
            self._json(structured(services, total=len(services)))
        elif len(parts) == 3 and parts[0] == "services" and parts[2] == "operations":
            names = sorted({name for name, _ in STORAGE.operations(parts[1])})
            self._json(structured(names, total=len(names)))
        elif parts == ["operations"]:
            service = (self.query.get("service") or [""])[0]
            if not service:
                self._error(400, "parameter 'service' is required")
                return
            kind = (self.query.get("spanKind") or [""])[0]
            ops = [{"name": n, "spanKind": k} for n, k in STORAGE.operations(service)
                   if not kind or k == kind]
            self._json(structured(ops, total=len(ops)))
        elif parts == ["traces"]:
            try:
                query = parse_trace_query(self.query)
            except QueryError as err:
                self._error(400, str(err))
                return
            self._json(structured(STORAGE.find(query)))
        elif len(parts) == 2 and parts[0] == "traces":
            try:
                tid = trace_id(parts[1])
            except ValueError as err:
                self._error(400, str(err))
                return
            try:
                found = STORAGE.find_one(tid)
            except NotFound:
                self._error(404, "trace not found")
                return
            self._json(structured([found]))
        else:
            self.reply(404, "404 page not found\n", "text/plain; charset=utf-8")

    def _search_page(self) -> None:
        services = STORAGE.services()
        service = (self.query.get("service") or [""])[0]
        operations = sorted({n for n, _ in STORAGE.operations(service)}) if service else []
        traces: list[dict[str, Any]] = []
        error = ""
        if service:
            try:
                traces = STORAGE.find(parse_trace_query(jaeger_ui.search_params(self.query)))
            except QueryError as err:
                error = str(err)
        page = jaeger_ui.search_page(services, operations, self.query, traces, error, self.base)
        self.reply(200, page, "text/html; charset=utf-8")

    def _trace_page(self, raw_id: str) -> None:
        try:
            found = STORAGE.find_one(trace_id(raw_id))
        except (ValueError, NotFound) as err:
            message = "trace not found" if isinstance(err, NotFound) else str(err)
            self.reply(404, jaeger_ui.error_page(f"trace {raw_id}: {message}", self.base),
                       "text/html; charset=utf-8")
            return
        self.reply(200, jaeger_ui.trace_page(found, self.base), "text/html; charset=utf-8")


def roles(ports: list[int], env: Mapping[str, str]) -> dict[int, int]:
    """host port -> the container port it serves, from the pod's `localhost` map."""
    by_host = {host: port for port, host in pod_localhost(env).items()}
    found = {port: by_host.get(port, 0) for port in ports}
    unknown = [p for p, role in found.items() if role not in (QUERY_PORT, ZIPKIN_PORT, HEALTH_PORT)]
    if unknown:
        raise SystemExit(f"jaeger: host ports {unknown} are none of the container ports this "
                         f"Jaeger serves ({QUERY_PORT} query and UI, {ZIPKIN_PORT} Zipkin, "
                         f"{HEALTH_PORT} health): declare only those in the pod spec")
    return found


def main(argv: list[str] | None = None) -> None:
    """The `jaegertracing/jaeger` container."""
    parser = argparse.ArgumentParser(prog="jaeger", description=main.__doc__)
    add_port_option(parser)
    args = parser.parse_args(argv)
    try:
        ROLES.update(roles(args.port, os.environ))
    except NotInPod as err:
        sys.exit(f"jaeger: {err}")
    try:
        where = collector_url(os.environ)
    except StorageError as err:
        where = f"not found yet: {err}"
    print(f"jaeger (meshlab twin), storage: the span collector at {where}", flush=True)
    serve(JaegerHandler, list(ROLES), "jaeger (" + ", ".join(
        f"{role} on {port}" for port, role in ROLES.items()) + ")")


if __name__ == "__main__":
    main()
