"""PromQL from a notebook: Istio's standard metrics from the cluster's Prometheus, as tidy rows.

    >>> from labs.metrics import query
    >>> query('sum(rate(istio_requests_total{destination_service=~"reviews.*"}[1m]))')

`query` answers an instant query (Prometheus' `/api/v1/query`) as a `Vector` of `Sample`s
(labels, value), shown as a table; `query_range` (`/api/v1/query_range`) as `Series` of
(time, value) points, what a dashboard panel draws. On the embedded cluster Prometheus scrapes
Istio's standard metrics once a second (Envoy's own `envoy_*` stats every 15 s, as upstream's
addon does), so a count or a rate shows new traffic a moment after it was sent: instead of
sleeping, say what you expect and the query repeats until it holds, like `labs.traffic.probe`:

    >>> query(PROMQL, until=lambda rows: rows.total() >= 30)

`mesh_edges` reads who calls whom, and over which kind of connection, the way Kiali builds its
graph: from `istio_requests_total` reported by the destination's proxy (only that side knows
whether the connection was mutual TLS: Istio's source-side metrics say `unknown`).
"""

from __future__ import annotations

import json
import math
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from labs.cluster import ClusterRef, current_cluster
from labs.course import LabError
from labs.traffic import settle

PROMETHEUS_URL_ENV = "MESHLAB_PROMETHEUS_URL"
SETTLE_INTERVAL_S = 1.0
TIMEOUT_S = 10.0
# Labels that only say where a series was scraped from: left out of tables and legends.
SCRAPE_LABELS = frozenset({"instance", "job"})


class MetricsError(LabError):
    """No Prometheus to ask, or Prometheus refused the query; the message says what to do."""


@dataclass(frozen=True)
class Sample:
    """One series of an instant query: its labels and its value at the query's time."""

    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Series:
    """One series of a range query: its labels and its (unix time, value) points."""

    labels: dict[str, str]
    points: tuple[tuple[float, float], ...]


class Vector(Sequence[Sample]):
    """The rows of an instant query, shown as a table (one column per label that varies)."""

    def __init__(self, promql: str, samples: list[Sample],
                 unsettled_after: float | None = None) -> None:
        self.promql = promql
        self.samples = samples
        self.unsettled_after = unsettled_after  # `until` still false after this many seconds

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        return self.samples[index]

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    @property
    def settled(self) -> bool:
        return self.unsettled_after is None

    def total(self) -> float:
        """The sum of the values (0 for no rows): a count or a rate across every series."""
        return sum(s.value for s in self.samples if not math.isnan(s.value))

    def value(self, **labels: str) -> float:
        """The sum of the values of the rows with these labels (0 when none has them)."""
        return sum(s.value for s in self.samples
                   if all(s.labels.get(k) == v for k, v in labels.items())
                   and not math.isnan(s.value))

    def _columns(self) -> list[str]:
        names = sorted({k for s in self.samples for k in s.labels} - SCRAPE_LABELS)
        if len(self.samples) < 2:
            return names
        return [n for n in names if len({s.labels.get(n) for s in self.samples}) > 1] or names

    def _rows(self) -> tuple[list[str], list[list[str]]]:
        columns = self._columns()
        rows = [[s.labels.get(c, "") for c in columns] + [_number(s.value)]
                for s in self.samples]
        return [*columns, "value"], rows

    def _note(self) -> str:
        if not self.settled:
            return (f"did not settle within {self.unsettled_after:g} s: has the traffic been "
                    "sent? (the last answer is shown)")
        return "" if self.samples else "no series matched (an empty result)"

    def __str__(self) -> str:
        header, rows = self._rows()
        widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=False)]
        lines = [line for line in (self._note(),) if line]
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        header, rows = self._rows()
        note = f"<p><b>{escape(self._note())}</b></p>" if self._note() else ""
        head = "".join(f"<th>{escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{escape(v)}</td>" for v in row) + "</tr>"
                       for row in rows)
        return (f"{note}<p><code>{escape(self.promql)}</code></p>"
                f"<table><tr>{head}</tr>{body}</table>")


@dataclass(frozen=True)
class Edge:
    """Requests from one workload to another over the last window, by connection security."""

    source: str  # "unknown": a caller without a sidecar (no identity)
    source_namespace: str
    destination: str
    destination_namespace: str
    security: str  # "mutual_tls" or "none"
    rate: float  # requests per second


def prometheus_url(cluster: ClusterRef | None = None) -> str:
    """Where the cluster's Prometheus answers. The one place that knows how to find it.

    On every cluster Prometheus is Istio's addon in `istio-system` (Service `prometheus`). The
    embedded cluster's pods listen on host ports, and its daemon names the addon pod's port for
    9090 in the cluster's `endpoint.json` (`prometheus`). On any other cluster, forward a local
    port to the Service and say where with MESHLAB_PROMETHEUS_URL."""
    if url := os.environ.get(PROMETHEUS_URL_ENV):
        return url.rstrip("/")
    ref = cluster or current_cluster()
    if ref.embedded is None:
        raise MetricsError(
            f"no Prometheus address for cluster {ref.context!r}. Istio's Prometheus addon runs "
            "in istio-system (install it with `kubectl apply -f "
            "samples/addons/prometheus.yaml` from Istio's release); forward a local port to it "
            "in a terminal, `kubectl port-forward -n istio-system svc/prometheus 9090:9090`, "
            f"then set {PROMETHEUS_URL_ENV}=http://localhost:9090 before starting Jupyter.")
    ports = ref.embedded.paths.read_endpoint()
    if ports is None:
        raise MetricsError(f"the embedded cluster {ref.context!r} is not running: start it with "
                           f"`meshlab up --name {ref.context}` (or run the notebook's setup cell)")
    if "prometheus" not in ports:
        from labs.embedded.apps.prometheus import prometheus_binary, prometheus_missing_hint

        if prometheus_binary() is None:
            raise MetricsError(prometheus_missing_hint())
        raise MetricsError(
            f"the embedded cluster {ref.context!r} has no Prometheus pod yet: see `kubectl get "
            "pods -n istio-system -l app.kubernetes.io/name=prometheus` (the addon's Deployment "
            "`prometheus` re-creates a deleted pod; `kubectl describe pod` says why one waits)")
    return f"http://127.0.0.1:{ports['prometheus']}"


def query(promql: str, *, cluster: ClusterRef | None = None, at: float | None = None,
          until: Callable[[Vector], bool] | None = None, deadline: float | None = None,
          interval: float = SETTLE_INTERVAL_S) -> Vector:
    """An instant PromQL query (at `at`, unix seconds; default now) as a `Vector`.

    With `until`, what the caller expects to see, the query repeats every `interval` seconds
    until it holds (new traffic reaches Prometheus at its next scrape); after `deadline` seconds
    (default `labs.traffic.SETTLE_DEADLINE_S`) the last answer comes back, saying it did not
    settle."""
    base = prometheus_url(cluster)

    def once() -> Vector:
        params = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
        data = _get(base, "/api/v1/query", params, promql)
        return Vector(promql, _samples(data))

    return settle(once, until, deadline, interval,
                  lambda vector, limit: Vector(vector.promql, vector.samples, limit))


def scraped_since(selector: str, since: float, *, cluster: ClusterRef | None = None,
                  deadline: float | None = None) -> bool:
    """Whether Prometheus has scraped the series of `selector` (e.g. `istio_requests_total{...}`)
    at or after `since` (unix seconds) within `deadline` seconds: then a count read now covers
    every request that ended before `since`, whatever the scrape schedule or the machine's load.
    """
    latest = query(f"max(timestamp({selector}))", cluster=cluster,
                   until=lambda rows: rows.total() >= since, deadline=deadline)
    return latest.settled


def query_range(promql: str, start: float, end: float, step: float, *,
                cluster: ClusterRef | None = None) -> list[Series]:
    """A range query: each series' values from `start` to `end` (unix seconds) every `step`
    seconds — what a dashboard panel plots."""
    if step <= 0 or end < start:
        raise MetricsError(f"query_range needs start <= end and a positive step (got start="
                           f"{start}, end={end}, step={step})")
    data = _get(prometheus_url(cluster), "/api/v1/query_range",
                {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}",
                 "step": f"{step:g}"}, promql)
    return [Series(dict(item["metric"]), tuple((float(t), float(v)) for t, v in item["values"]))
            for item in data["result"]]


def mesh_edges(namespaces: Sequence[str] = (), *, window: str = "5m",
               cluster: ClusterRef | None = None) -> list[Edge]:
    """Who called whom over the last `window`, and whether over mutual TLS: one Edge per source
    workload, destination workload and connection security, from the destination's reports
    (filtered to destinations in `namespaces`, when given)."""
    where = 'reporter="destination"'
    if namespaces:
        where += f',destination_workload_namespace=~"{"|".join(namespaces)}"'
    promql = (f"sum(rate(istio_requests_total{{{where}}}[{window}])) by (source_workload, "
              "source_workload_namespace, destination_workload, destination_workload_namespace, "
              "connection_security_policy)")
    return [Edge(s.labels.get("source_workload", "unknown"),
                 s.labels.get("source_workload_namespace", "unknown"),
                 s.labels.get("destination_workload", "unknown"),
                 s.labels.get("destination_workload_namespace", "unknown"),
                 s.labels.get("connection_security_policy", "unknown"), s.value)
            for s in query(promql, cluster=cluster) if s.value > 0]


def _get(base: str, path: str, params: dict[str, str], promql: str) -> dict[str, Any]:
    """GET a Prometheus API path; its `data`, or a MetricsError saying what went wrong."""
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as err:  # 400 bad_data / 422 execution: the body says why
        try:
            body = json.loads(err.read())
        except ValueError:
            raise MetricsError(f"Prometheus at {base} answered {err.code} to {promql!r}") from None
    except (OSError, ValueError) as err:
        raise MetricsError(f"Prometheus at {base} did not answer ({err}): is the cluster "
                           "running (`meshlab status`)?") from None
    if body.get("status") != "success":
        raise MetricsError(f"Prometheus rejected the query ({body.get('errorType', 'error')}): "
                           f"{body.get('error', body)}\n  query: {promql}\nFix the PromQL (a "
                           "label matcher is name=\"value\" inside {...}; a range like [1m] "
                           "goes right after the selector) and run the cell again.")
    return dict(body["data"])


def _samples(data: dict[str, Any]) -> list[Sample]:
    if data.get("resultType") in ("scalar", "string"):
        return [Sample({}, float(data["result"][1]))]
    if data.get("resultType") == "matrix":  # e.g. `istio_requests_total[1m]`: the last point
        return [Sample(dict(item["metric"]), float(item["values"][-1][1]))
                for item in data["result"] if item["values"]]
    return [Sample(dict(item["metric"]), float(item["value"][1])) for item in data["result"]]


def _number(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return str(int(value)) if value.is_integer() else f"{value:.4g}"
