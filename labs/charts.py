"""Charts for the observability lab, each a matplotlib Figure (a static PNG in JupyterLab, nbval
and nbgrader alike): panels of Istio's Grafana dashboards drawn from the same PromQL, a trace as
a waterfall, and the mesh as a graph with mutual TLS shown per edge (what Kiali draws).

The dashboard queries are Istio's, as written in `manifests/addons/dashboards/
istio-service-dashboard.json` and `istio-workload-dashboard.json` (istio/istio, master at
86c9f01f); only Grafana's variables are filled in: `$service`, `$workload`, `$namespace`,
`$qrep` (the reporter), `$srcwl`/`$srcns` (every source: `.*`) and `$__rate_interval`.
Figures are made without pyplot, so a cell shows each one exactly once and none is kept alive.
"""

from __future__ import annotations

import math
import re
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from matplotlib import dates as mdates
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from labs.cluster import ClusterRef
from labs.metrics import Edge, Series, query_range
from labs.tracing import Span

MTLS, PLAINTEXT = "mutual_tls", "none"
EDGE_STYLE = {MTLS: ("#2e7d32", "solid", "mTLS"), PLAINTEXT: ("#c62828", "dashed", "plaintext")}
UNKNOWN_STYLE = ("#757575", "dotted", "unknown")


@dataclass(frozen=True)
class Panel:
    """One Grafana panel: its title, unit and queries (legend format, PromQL)."""

    title: str
    unit: str  # Grafana's: "ops" (per second), "percentunit" (0..1), "s"
    targets: tuple[tuple[str, str], ...]


def _duration(selector: str, by: str = "") -> tuple[tuple[str, str], ...]:
    """Istio's request duration targets, P50/P90/P99 (the dashboards repeat this per quantile):
    the millisecond histogram in seconds, or the older seconds histogram."""
    group = f"{by}, le" if by else "le"
    legend = "{{source_workload}}.{{source_workload_namespace}} " if by else ""
    return tuple(
        (f"{legend}P{q[2:]}",
         f"(histogram_quantile({q}, sum(irate(istio_request_duration_milliseconds_bucket"
         f"{{{selector}}}[$__rate_interval])) by ({group})) / 1000) or histogram_quantile({q}, "
         f"sum(irate(istio_request_duration_seconds_bucket{{{selector}}}[$__rate_interval])) "
         f"by ({group}))")
        for q in ("0.50", "0.90", "0.99"))


def _by_source(selector: str) -> tuple[tuple[str, str], ...]:
    """Istio's "Incoming Requests By Source And Response Code": mutual TLS and the rest."""
    return tuple(
        (f"{{{{ source_workload }}}}.{{{{ source_workload_namespace }}}} : "
         f"{{{{ response_code }}}}{mark}",
         f"round(sum(irate(istio_requests_total{{connection_security_policy{op}\"mutual_tls\", "
         f"{selector}, reporter=~\"$qrep\", source_workload=~\"$srcwl\", "
         f"source_workload_namespace=~\"$srcns\"}}[$__rate_interval])) by (source_workload, "
         f"source_workload_namespace, response_code), 0.001)")
        for op, mark in (("=", " (mTLS)"), ("!=", "")))


_SERVICE = 'destination_service="$service"'
_QREP_SERVICE = f'reporter=~"$qrep",{_SERVICE}'
SERVICE_PANELS = (
    Panel("Client Request Volume", "ops", (
        ("", f"round(sum(irate(istio_requests_total{{{_QREP_SERVICE}}}[$__rate_interval])), "
             "0.001)"),)),
    Panel("Client Success Rate (non-5xx responses)", "percentunit", (
        ("", f"sum(irate(istio_requests_total{{{_QREP_SERVICE},response_code!~\"5.*\"}}"
             f"[$__rate_interval])) / (sum(irate(istio_requests_total{{{_QREP_SERVICE}}}"
             "[$__rate_interval])) or on () vector(1))"),)),
    Panel("Client Request Duration", "s", _duration(_QREP_SERVICE)),
    Panel("Incoming Requests By Source And Response Code", "ops", _by_source(_SERVICE)),
)
_WORKLOAD = 'destination_workload_namespace=~"$namespace",destination_workload=~"$workload"'
_QREP_WORKLOAD = f'reporter=~"$qrep",{_WORKLOAD}'
WORKLOAD_PANELS = (
    Panel("Incoming Request Volume", "ops", (
        ("", f"round(sum(irate(istio_requests_total{{{_QREP_WORKLOAD}}}[$__rate_interval])), "
             "0.001)"),)),
    Panel("Incoming Success Rate (non-5xx responses)", "percentunit", (
        ("", f"sum(irate(istio_requests_total{{{_QREP_WORKLOAD},response_code!~\"5.*\"}}"
             f"[$__rate_interval])) / sum(irate(istio_requests_total{{{_QREP_WORKLOAD}}}"
             "[$__rate_interval]))"),)),
    Panel("Request Duration", "s", _duration(_QREP_WORKLOAD)),
    Panel("Incoming Requests By Source And Response Code", "ops", _by_source(_WORKLOAD)),
)


def service_dashboard(service: str, *, minutes: float = 5, reporter: str = "destination",
                      rate_interval: str = "1m", cluster: ClusterRef | None = None) -> Figure:
    """Istio's Service dashboard for `service` (its FQDN, e.g.
    `productpage.bookinfo.svc.cluster.local`) over the last `minutes`."""
    return dashboard(f"Istio Service Dashboard — {service}", SERVICE_PANELS,
                     {"service": service, "qrep": reporter, "__rate_interval": rate_interval},
                     minutes=minutes, cluster=cluster)


def workload_dashboard(workload: str, namespace: str, *, minutes: float = 5,
                       reporter: str = "destination", rate_interval: str = "1m",
                       cluster: ClusterRef | None = None) -> Figure:
    """Istio's Workload dashboard for `workload` (a Deployment's name, e.g. `httpbin`)."""
    return dashboard(f"Istio Workload Dashboard — {workload}.{namespace}", WORKLOAD_PANELS,
                     {"workload": workload, "namespace": namespace, "qrep": reporter,
                      "__rate_interval": rate_interval}, minutes=minutes, cluster=cluster)


def fill(expr: str, variables: Mapping[str, str]) -> str:
    """A dashboard query with Grafana's variables replaced (`$srcwl`/`$srcns`: every source)."""
    values = {"srcwl": ".*", "srcns": ".*", **variables}
    return re.sub(r"\$(\w+)", lambda m: values.get(m[1], m[0]), expr)


def legend(template: str, labels: Mapping[str, str]) -> str:
    """A Grafana legend format (`{{ source_workload }} : {{ response_code }}`) filled in."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m[1], ""), template)


def dashboard(title: str, panels: Sequence[Panel], variables: Mapping[str, str], *,
              minutes: float, cluster: ClusterRef | None = None) -> Figure:
    """Draw `panels` (two a row) from range queries over the last `minutes`, about 100 points
    each as Grafana asks (`maxDataPoints`), at least one per second (the scrape interval)."""
    end = time.time()
    start = end - minutes * 60
    step = max(1.0, round(minutes * 60 / 100))
    rows = math.ceil(len(panels) / 2)
    figure = Figure(figsize=(13, 3.2 * rows), layout="constrained")
    figure.suptitle(title)
    for ax, panel in zip(figure.subplots(rows, 2, squeeze=False).flat, panels, strict=False):
        series = [(legend(fmt, s.labels) or panel.title, s) for fmt, expr in panel.targets
                  for s in query_range(fill(expr, variables), start, end, step, cluster=cluster)]
        _draw_panel(ax, panel, series, start, end)
    return figure


def _draw_panel(ax: Axes, panel: Panel, series: list[tuple[str, Series]], start: float,
                end: float) -> None:
    ax.set_title(panel.title, fontsize=10)
    for label, one in series:
        ax.plot([datetime.fromtimestamp(t) for t, _ in one.points],
                [v for _, v in one.points], label=label, linewidth=1.2)
    ax.set_xlim(datetime.fromtimestamp(start), datetime.fromtimestamp(end))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.tick_params(labelsize=8)
    if panel.unit == "percentunit":
        ax.yaxis.set_major_formatter(ticker.PercentFormatter(1.0))
        ax.set_ylim(-0.05, 1.05)
    else:
        ax.set_ylabel({"ops": "requests/s", "s": "seconds"}.get(panel.unit, panel.unit),
                      fontsize=8)
    if not series:
        ax.text(0.5, 0.5, "No data", transform=ax.transAxes, ha="center", va="center",
                color="#757575")
    elif len(series) > 1 or series[0][0] != panel.title:
        ax.legend(fontsize=7, loc="upper left")


def trace_waterfall(spans: Sequence[Span]) -> Figure:
    """One row per span, children under their parent, a bar from its start for its duration
    (milliseconds from the trace's first span), coloured by the service that reported it."""
    if not spans:
        raise ValueError("a waterfall needs at least one span (labs.tracing.trace returns them)")
    ordered = _tree_order(spans)
    t0 = min(s.start_us for s in spans)
    palette = {name: f"C{i}" for i, name in enumerate(dict.fromkeys(s.service for s, _ in ordered))}
    figure = Figure(figsize=(12, 0.45 * len(ordered) + 1.2), layout="constrained")
    ax = figure.subplots()
    for row, (span, _) in enumerate(ordered):
        begin, width = (span.start_us - t0) / 1000, max(span.duration_us / 1000, 0.01)
        ax.barh(row, width, left=begin, color=palette[span.service], height=0.6,
                label=span.service)
        ax.text(begin + width, row, f" {width:.2f} ms", va="center", fontsize=8)
    ax.set_yticks(range(len(ordered)),
                  [f"{'  ' * depth}{span.service} {span.kind.lower()}: {span.name}"
                   for span, depth in ordered], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("milliseconds since the trace began")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), fontsize=8, loc="lower right")
    total = (max(s.start_us + s.duration_us for s in spans) - t0) / 1000
    ax.set_title(f"trace {spans[0].trace_id}: {len(spans)} spans, {total:.1f} ms")
    return figure


def _tree_order(spans: Sequence[Span]) -> list[tuple[Span, int]]:
    """Spans depth-first from the roots (a span whose parent is not in the trace), siblings by
    start time; each with its depth."""
    ids = {s.id for s in spans}
    children: dict[str | None, list[Span]] = defaultdict(list)
    for span in spans:
        children[span.parent_id if span.parent_id in ids else None].append(span)
    ordered: list[tuple[Span, int]] = []
    seen: set[str] = set()

    def visit(parent: str | None, depth: int) -> None:
        for span in sorted(children[parent], key=lambda s: (s.start_us, s.kind != "CLIENT")):
            if span.id not in seen:
                seen.add(span.id)
                ordered.append((span, depth))
                visit(span.id, depth + 1)
    visit(None, 0)
    return ordered


def service_graph(edges: Sequence[Edge], *, title: str = "") -> Figure:
    """Workloads as boxes, callers left of callees (columns by call depth), one arrow per
    (caller, callee, connection security): green solid for mutual TLS, red dashed for
    plaintext, each labelled with its request rate — the picture Kiali's graph gives with its
    security badges."""
    if not edges:
        raise ValueError("no edges to draw: send some requests first (labs.metrics.mesh_edges "
                         "reads the last minutes of istio_requests_total)")
    nodes = _columns(edges)
    columns: dict[int, list[str]] = defaultdict(list)
    for node, column in nodes.items():
        columns[column].append(node)
    place = {node: (column, -(i - (len(members) - 1) / 2))
             for column, members in columns.items() for i, node in enumerate(sorted(members))}
    height = max(len(m) for m in columns.values())
    figure = Figure(figsize=(3.2 * (max(columns) + 1) + 1, 1.3 * height + 1.5),
                    layout="constrained")
    ax = figure.subplots()
    pairs: dict[tuple[str, str], list[Edge]] = defaultdict(list)
    for edge in edges:
        pairs[(_node(edge.source, edge.source_namespace),
               _node(edge.destination, edge.destination_namespace))].append(edge)
    for (src, dst), group in pairs.items():
        for i, edge in enumerate(sorted(group, key=lambda e: e.security)):
            colour, style, name = EDGE_STYLE.get(edge.security, UNKNOWN_STYLE)
            bend = 0.0 if len(group) == 1 else 0.25 * (1 if i % 2 else -1) * (1 + i // 2)
            ax.annotate("", xy=place[dst], xytext=place[src], arrowprops={
                "arrowstyle": "-|>", "color": colour, "linestyle": style, "linewidth": 1.8,
                "shrinkA": 40, "shrinkB": 40, "connectionstyle": f"arc3,rad={bend}"},
                gid=f"edge:{src}->{dst}:{edge.security}")
            (x1, y1), (x2, y2) = place[src], place[dst]
            # a third of the way along, so labels of edges that cross do not cover each other
            ax.text(x1 + (x2 - x1) / 3, y1 + (y2 - y1) / 3 + bend * 0.6,
                    f"{name} {edge.rate:.2g}/s",
                    color=colour, fontsize=8, ha="center", va="center",
                    bbox={"boxstyle": "round", "fc": "white", "ec": "none", "alpha": 0.8})
    for node, (x, y) in place.items():
        ax.text(x, y, node, ha="center", va="center", fontsize=9, gid=f"node:{node}",
                bbox={"boxstyle": "round,pad=0.5", "fc": "#e3f2fd", "ec": "#1565c0"})
    ax.set_xlim(-0.7, max(columns) + 0.7)
    ax.set_ylim(-height / 2 - 0.3, height / 2 + 0.3)
    ax.axis("off")
    ax.set_title(title or "who calls whom (istio_requests_total, reporter=destination)")
    return figure


def _node(workload: str, namespace: str) -> str:
    return workload if workload == "unknown" else f"{workload}\n{namespace}"


def _columns(edges: Sequence[Edge]) -> dict[str, int]:
    """Each node's column: the length of the longest call chain leading to it (cycles cut)."""
    calls: dict[str, set[str]] = defaultdict(set)
    nodes: dict[str, int] = {}
    for e in edges:
        src = _node(e.source, e.source_namespace)
        dst = _node(e.destination, e.destination_namespace)
        nodes.setdefault(src, 0)
        nodes.setdefault(dst, 0)
        if src != dst:
            calls[src].add(dst)
    for _ in range(len(nodes)):  # relax; at most len(nodes) rounds, so a cycle cannot loop
        changed = False
        for src, targets in calls.items():
            for dst in targets:
                if nodes[dst] < nodes[src] + 1 <= len(nodes):
                    nodes[dst] = nodes[src] + 1
                    changed = True
        if not changed:
            break
    return nodes
