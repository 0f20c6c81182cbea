"""What the observability addons' twins (Grafana, Kiali) share: PromQL against the cluster's
Prometheus through the pod's proxy, Prometheus' duration syntax, and the HTML page around their
drawings, which says whose view it is.

Both upstream programs read Istio's metrics from the Prometheus addon only (Grafana through its
`Prometheus` datasource, Kiali through `external_services.prometheus`), so do the twins: nothing
they show is computed elsewhere. Stdlib only (the twins start in tens of milliseconds).
"""

from __future__ import annotations

import json
import os
import re
import sys
import traceback
from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import urlencode

from .http import TwinHandler, http_get

# Kiali's default `external_services.prometheus.url`; Grafana's datasource in the addon says
# `http://prometheus:9090`, the same Service seen from istio-system. The variable overrides both.
PROMETHEUS_URL_ENV = "PROMETHEUS_URL"
DEFAULT_PROMETHEUS_URL = "http://prometheus.istio-system:9090"
TIMEOUT_S = 10.0
_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


class PrometheusError(RuntimeError):
    """Prometheus did not answer, or rejected a query; the message says which and why."""


@dataclass(frozen=True)
class Prometheus:
    """The Prometheus HTTP API (`/api/v1/query`, `/api/v1/query_range`) seen from the pod."""

    url: str

    @classmethod
    def from_env(cls) -> Prometheus:
        return cls(os.environ.get(PROMETHEUS_URL_ENV, DEFAULT_PROMETHEUS_URL).rstrip("/"))

    def instant(self, promql: str, at: float) -> list[dict[str, Any]]:
        """An instant query's `result` (vector items: `metric`, `value` [time, "number"])."""
        return self._get("/api/v1/query", {"query": promql, "time": f"{at:.3f}"})

    def range(self, promql: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """A range query's `result` (matrix items: `metric`, `values` [[time, "number"], …])."""
        return self._get("/api/v1/query_range", {"query": promql, "start": f"{start:.3f}",
                                                 "end": f"{end:.3f}", "step": f"{step:g}"})

    def _get(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        reply = http_get(f"{self.url}{path}?{urlencode(params)}", {}, TIMEOUT_S)
        if reply is None:
            raise PrometheusError(
                f"Prometheus at {self.url} did not answer: is the Prometheus addon running "
                "(`kubectl -n istio-system get pods -l app.kubernetes.io/name=prometheus`)?")
        try:
            body = json.loads(reply.body)
        except ValueError:
            raise PrometheusError(f"Prometheus at {self.url} answered {reply.status} with "
                                  "something other than JSON") from None
        if body.get("status") != "success":
            raise PrometheusError(f"Prometheus rejected {params['query']!r}: "
                                  f"{body.get('errorType', 'error')}: {body.get('error', body)}")
        return list(body["data"]["result"])


class AddonHandler(TwinHandler):
    """GET and HEAD run `route`; an error it did not expect becomes a 500 naming it (the
    traceback goes to the container's log) instead of a connection closed without an answer."""

    name = "addon"  # for the 500's message, e.g. "grafana"

    def route(self) -> None:
        raise NotImplementedError

    def do_GET(self) -> None:
        try:
            self.route()
        except Exception as error:  # the server's last resort: answer, and log why
            traceback.print_exc(file=sys.stdout)
            self.reply(500, f"internal error in meshlab's {self.name} twin: {error!r}; the "
                            f"traceback is in `kubectl -n istio-system logs deploy/{self.name}`\n")

    do_HEAD = do_GET


def parse_duration(text: str) -> float:
    """Prometheus' duration syntax (`60s`, `10m`, `1h30m`) in seconds; ValueError otherwise."""
    if not text or _DURATION_PART.sub("", text):
        raise ValueError(f"not a duration: {text!r}")
    return float(sum(int(n) * _UNIT_S[unit] for n, unit in _DURATION_PART.findall(text)))


PAGE_STYLE = """
body { font-family: sans-serif; margin: 0; background: #f4f5f5; color: #24292e; }
header { background: #111217; color: #fff; padding: 8px 16px; }
header a { color: #8ab8ff; } main { padding: 12px 16px; }
.notice { background: #fff8e1; border: 1px solid #f0c36d; padding: 6px 10px; margin: 8px 0; }
.empty { color: #757575; font-style: italic; }
form label { margin-right: 12px; display: inline-block; vertical-align: top; }
code { background: #eee; padding: 0 3px; }
"""


def page(title: str, notice: str, body: str, style: str = "") -> str:
    """A whole HTML page: the title, a visible notice saying whose view this is, the body
    (already HTML); `title` and `notice` are escaped."""
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
            f"<style>{PAGE_STYLE}{style}</style></head><body><header><b>{escape(title)}</b>"
            f"</header><main><p class=\"notice\">{escape(notice)}</p>{body}</main></body></html>\n")
