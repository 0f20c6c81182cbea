"""The Grafana addon's image (`grafana/grafana`) as a twin: meshlab's Grafana-compatible view of
Istio's dashboards, reading Istio's metrics from the cluster's Prometheus.

It serves the dashboards Istio's addon provisions in its folder `istio` (the JSON of the
ConfigMap `istio-services-grafana-dashboards`, samples/addons/grafana.yaml of istio/istio
release-1.30, vendored unchanged in grafana_dashboards/) through the part of Grafana's HTTP API
scripts use (grafana.com "HTTP API": Health, Search, Dashboard):

    GET /api/health                 {"database": "ok", "version": "12.0.1"}
    GET /api/search?query=&tag=&type=dash-db|dash-folder
    GET /api/dashboards/uid/UID     {"dashboard": {...}, "meta": {...}}; unknown: 404
                                    {"message": "Dashboard not found"}

and a web UI: `/` lists the dashboards, `/d/UID/SLUG?var-service=…&from=now-15m&to=now` draws
one, every panel's PromQL evaluated server-side against Prometheus (grafana_view.py says what is
Grafana's and what is not). The service and workload dashboards carry no `uid` upstream: Grafana
would give each a random one when provisioning, this twin gives the file's name
(`istio-service-dashboard`), stable across restarts. Not served: logins, saving or editing,
other datasources (Loki), `/api/ds/query`, alerting; `commit` in the health answer (unknown).

    python -m labs.embedded.apps.grafana --port 3000
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass
from functools import cache
from html import escape
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

from .addons import AddonHandler, Prometheus, page
from .grafana_view import (
    ALL,
    DASHBOARD_STYLE,
    SCRAPE_INTERVAL_S,
    Context,
    DashboardError,
    TimeRange,
    Variable,
    builtins_for,
    parse_time,
    render_dashboard,
    resolve_variables,
)
from .http import add_port_option, serve

Obj = dict[str, Any]
VERSION = "12.0.1"  # the addon's image tag (docker.io/grafana/grafana:12.0.1)
DASHBOARDS_DIR = Path(__file__).with_name("grafana_dashboards")
FOLDER = "istio"  # dashboardproviders.yaml: both providers put their dashboards in `istio`
FOLDER_ID = 1
NOTICE = ("meshlab's Grafana-compatible view of Istio's dashboards (not Grafana itself): the "
          "panels of Istio's own dashboard JSON, their PromQL evaluated against the cluster's "
          "Prometheus and drawn on the server.")
DEFAULT_RANGE = ("now-15m", "now")  # the dashboards' saved `time`


def slugify(title: str) -> str:
    """Grafana's slug: lower case, runs of other characters as one `-`."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


@dataclass(frozen=True)
class Dashboard:
    id: int
    uid: str
    file: str
    model: Obj

    @property
    def title(self) -> str:
        return str(self.model.get("title", self.uid))

    @property
    def slug(self) -> str:
        return slugify(self.title)

    @property
    def url(self) -> str:
        return f"/d/{self.uid}/{self.slug}"

    def saved(self) -> Obj:
        """The model as Grafana returns it: with its id, uid and version."""
        return {**self.model, "id": self.id, "uid": self.uid,
                "version": self.model.get("version", 1)}


@cache
def dashboards() -> dict[str, Dashboard]:
    """The provisioned dashboards by uid, ids in file order (as provisioning numbers them)."""
    found = {}
    for number, path in enumerate(sorted(DASHBOARDS_DIR.glob("*.json")), start=1):
        model = json.loads(path.read_text())
        uid = str(model.get("uid") or path.stem)
        found[uid] = Dashboard(number, uid, path.name, model)
    return found


FOLDER_HIT: Obj = {"id": FOLDER_ID, "uid": FOLDER, "orgId": 1, "title": FOLDER,
                   "uri": f"db/{FOLDER}", "url": f"/dashboards/f/{FOLDER}/{FOLDER}", "slug": "",
                   "type": "dash-folder", "tags": [], "isStarred": False, "sortMeta": 0,
                   "isDeleted": False}


def search(query: dict[str, list[str]]) -> list[Obj]:
    """`/api/search`: folders, then dashboards, whose title contains `query` (any case), with
    every `tag`, of `type` when given, sorted by title."""
    text = (query.get("query") or [""])[0].lower()
    tags = set(query.get("tag") or [])
    kinds = set(query.get("type") or ["dash-folder", "dash-db"])
    hits: list[Obj] = []
    if "dash-folder" in kinds and text in FOLDER and not tags:
        hits.append(FOLDER_HIT)
    if "dash-db" in kinds:
        for board in sorted(dashboards().values(), key=lambda b: b.title):
            board_tags = list(board.model.get("tags") or [])
            if text in board.title.lower() and tags <= set(board_tags):
                hits.append({"id": board.id, "uid": board.uid, "orgId": 1, "title": board.title,
                             "uri": f"db/{board.slug}", "url": board.url, "slug": "",
                             "type": "dash-db", "tags": board_tags, "isStarred": False,
                             "folderId": FOLDER_ID, "folderUid": FOLDER, "folderTitle": FOLDER,
                             "folderUrl": FOLDER_HIT["url"], "sortMeta": 0, "isDeleted": False})
    return hits


def dashboard_reply(board: Dashboard) -> Obj:
    """`/api/dashboards/uid/UID`: the model and Grafana's `meta` for a provisioned file."""
    return {"dashboard": board.saved(), "meta": {
        "type": "db", "canSave": True, "canEdit": True, "canAdmin": True, "canStar": True,
        "canDelete": True, "slug": board.slug, "url": board.url, "expires": "0001-01-01T00:00:00Z",
        "version": board.saved()["version"], "hasAcl": False, "isFolder": False,
        "folderId": FOLDER_ID, "folderUid": FOLDER, "folderTitle": FOLDER,
        "folderUrl": FOLDER_HIT["url"], "provisioned": True,
        "provisionedExternalId": board.file}}


def _variable_form(variables: list[Variable], time_range: tuple[str, str]) -> str:
    """The variable pickers and time range, as a GET form (Grafana's `var-NAME`, `from`, `to`)."""
    fields = []
    for var in variables:
        if var.kind == "datasource":
            continue
        choices = ([(ALL, "All")] if var.include_all else []) + [(o, o) for o in var.options]
        if not any(value in var.selected for value, _ in choices):
            choices += [(v, v) for v in var.selected]
        options = "".join(f'<option value="{escape(v)}"{" selected" if v in var.selected else ""}>'
                          f"{escape(text)}</option>" for v, text in choices)
        multiple = " multiple" if var.multi else ""
        problem = f' <span class="error">{escape(var.problem)}</span>' if var.problem else ""
        fields.append(f'<label>{escape(var.label)} <select name="var-{escape(var.name)}"'
                      f"{multiple}>{options}</select></label>{problem}")
    start, end = time_range
    fields.append(f'<label>from <input name="from" value="{escape(start)}" size="10"></label>'
                  f'<label>to <input name="to" value="{escape(end)}" size="10"></label>'
                  '<button type="submit">Refresh</button>')
    return f'<form method="get">{"".join(fields)}</form>'


def dashboard_page(board: Dashboard, query: dict[str, list[str]], prom: Prometheus) -> str:
    """A dashboard drawn for the URL's variables and time range (DashboardError if bad)."""
    now = time.time()
    saved = board.model.get("time") or {}
    raw = ((query.get("from") or [saved.get("from", DEFAULT_RANGE[0])])[0],
           (query.get("to") or [saved.get("to", DEFAULT_RANGE[1])])[0])
    span = TimeRange(parse_time(raw[0], now), parse_time(raw[1], now))
    if span.seconds <= 0:
        raise DashboardError(f"from {raw[0]!r} is not before to {raw[1]!r}")
    chosen = {k[4:]: v for k, v in query.items() if k.startswith("var-")}
    variables = resolve_variables(board.model, chosen, prom, span.end,
                                  builtins_for(span, SCRAPE_INTERVAL_S))
    links = " | ".join(f'<a href="{escape(b.url)}">{escape(b.title)}</a>'
                       for b in dashboards().values())
    body = (f"<p>{links}</p>{_variable_form(variables, raw)}"
            f'<div class="grid">{render_dashboard(board.model, Context(prom, span, variables))}'
            "</div>")
    return page(f"{board.title} — meshlab Grafana view", NOTICE, body, DASHBOARD_STYLE)


def home_page() -> str:
    items = "".join(f'<li><a href="{escape(b.url)}">{escape(b.title)}</a> '
                    f"(uid <code>{escape(b.uid)}</code>)</li>"
                    for b in sorted(dashboards().values(), key=lambda b: b.title))
    return page("Dashboards — meshlab Grafana view", NOTICE,
                f"<h2>Folder {FOLDER}</h2><ul>{items}</ul>"
                "<p>API: <code>/api/health</code>, <code>/api/search?query=Istio</code>, "
                "<code>/api/dashboards/uid/UID</code>.</p>")


class GrafanaHandler(AddonHandler):
    name = "grafana"
    prometheus: ClassVar[Prometheus]  # set by main, from the container's environment

    def route(self) -> None:
        path = self.url_path.rstrip("/") or "/"
        if path == "/api/health":
            self.reply_json(200, {"database": "ok", "version": VERSION}, indent=2)
        elif path == "/api/search":
            self.reply_json(200, search(self.query))
        elif path.startswith("/api/dashboards/uid/"):
            board = dashboards().get(path.removeprefix("/api/dashboards/uid/"))
            if board is None:
                self.reply_json(404, {"message": "Dashboard not found"})
            else:
                self.reply_json(200, dashboard_reply(board))
        elif path.startswith("/api/"):
            self.reply_json(404, {"message": "Not found"})
        elif path == "/":
            self.reply(200, home_page(), "text/html; charset=utf-8")
        elif path.startswith("/d/"):
            self._dashboard(path.split("/")[2])
        else:
            self.reply(404, page("Page not found", NOTICE,
                                 f"<p>No page at <code>{escape(path)}</code>: see "
                                 '<a href="/">the dashboards</a>.</p>'),
                       "text/html; charset=utf-8")


    def _dashboard(self, uid: str) -> None:
        board = dashboards().get(uid)
        if board is None:
            self.reply(404, page("Dashboard not found", NOTICE,
                                 f"<p>No dashboard with uid <code>{escape(uid)}</code>; "
                                 '<a href="/">the dashboards</a>.</p>'),
                       "text/html; charset=utf-8")
            return
        try:
            html = dashboard_page(board, self.query, self.prometheus)
        except DashboardError as error:
            again = f"{board.url}?{urlencode({'from': DEFAULT_RANGE[0], 'to': DEFAULT_RANGE[1]})}"
            self.reply(400, page("Bad dashboard request", NOTICE,
                                 f"<p>{escape(str(error))}</p><p><a href=\"{quote(again, '/?=&')}"
                                 '">Try the last 15 minutes</a></p>'),
                       "text/html; charset=utf-8")
            return
        self.reply(200, html, "text/html; charset=utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_port_option(parser)
    args = parser.parse_args()
    GrafanaHandler.prometheus = Prometheus.from_env()
    dashboards()  # read the JSON before the first request
    serve(GrafanaHandler, args.port or [3000], "grafana twin")


if __name__ == "__main__":
    main()
