"""A Grafana dashboard model (the JSON Grafana saves) evaluated against Prometheus and drawn as
HTML with SVG charts, server-side, for the Grafana twin (grafana.py).

What is Grafana's here, and where from (grafana.com "Variable syntax", "Global variables",
"Prometheus template variables"; the escaping is grafana/grafana's Prometheus datasource,
datasource.ts `prometheusRegularEscape` / `prometheusSpecialRegexEscape`, classic behaviour):
- template variables: `custom` (comma-separated), `datasource`, `constant`/`textbox`, and
  `query` with Prometheus' `query_result(PROMQL)` (each sample as the text
  `name{k="v", ...} value timestamp`, then the variable's `regex`, then its `sort`); values from
  the URL's `var-NAME` (repeatable for multi-value variables), else the saved `current` when
  it is still an option, else `All` (includeAll) or the first option;
- interpolation: `$name`, `${name}`, `[[name]]`; for PromQL a multi-value or include-All
  variable becomes the regex `(a|b)` with regex characters escaped as a PromQL string needs
  (`a\\\\.b`; one value: no parentheses), a plain variable its value with `\\` and `'` escaped;
  `All` is the variable's `allValue` or every option; built-ins `$__interval`,
  `$__interval_ms`, `$__rate_interval`
  (max(`$__interval` + scrape interval, 4 × scrape interval)), `$__range`, `$__range_s`;
- the query interval: range / max data points (the panel's `maxDataPoints`, else its width in
  pixels), at least the panel's `interval` or the datasource's `timeInterval` (15 s in the addon's
  datasources.yaml), rounded up to a round step; range queries aligned to it;
- panels `timeseries` (lines, legend format `{{label}}`), `stat` (the `reduceOptions.calcs`
  reducer of each series), `table` (instant queries merged on their labels, Grafana's `merge`
  transformation, with `displayName`/`unit`/`decimals`/`custom.hidden` overrides), `text`
  (its HTML with variables filled in, values escaped) and `row`, laid out on Grafana's grid
  (24 columns, 30 px rows). Any other panel type says it is not drawn.
Not done: thresholds colouring, stat sparklines, tooltips, zoom, stacking, series overrides other
than the table's; time zones (times are the server's local time).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from typing import Any

from .addons import Prometheus, PrometheusError, parse_duration

Obj = dict[str, Any]
ALL = "$__all"
SCRAPE_INTERVAL_S = 15.0  # the addon's datasources.yaml: jsonData.timeInterval
GRID_COLUMNS, ROW_PX, PAGE_PX = 24, 30, 1200
# Grafana's classic palette (palette-classic), in order
PALETTE = ("#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A9",
           "#705DA0", "#508642", "#CCA300", "#447EBC", "#C15C17", "#890F02", "#0A437C")
ROUND_STEPS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 20, 30, 60, 120,
               300, 600, 900, 1200, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+)\]\]|\$\{(\w+)(?::\w+)?\}")
_LEGEND = re.compile(r"\{\{\s*(.+?)\s*\}\}")
_REGEX_SPECIAL = re.compile(r"[$^*{}\[\]'+?.()|]")
_NOW = re.compile(r"^now(?:-(\w+))?$")


class DashboardError(ValueError):
    """A request the dashboard cannot be drawn for (a bad time range); the message says why."""


# -- time ---------------------------------------------------------------------------------------

def parse_time(text: str, now: float) -> float:
    """Grafana's `from`/`to`: `now`, `now-15m`, or milliseconds since the epoch."""
    if text.isdigit():
        return int(text) / 1000
    match = _NOW.match(text)
    if match is None:
        raise DashboardError(f"time {text!r}: use `now`, `now-15m` (any Prometheus duration "
                             "after `now-`) or milliseconds since the epoch")
    try:
        return now - (parse_duration(match[1]) if match[1] else 0)
    except ValueError:
        raise DashboardError(f"time {text!r}: {match[1]!r} is not a duration like 5m") from None


def round_interval(seconds: float) -> float:
    """The smallest round step not below `seconds`."""
    return next((s for s in ROUND_STEPS if s >= seconds), ROUND_STEPS[-1])


def duration_text(seconds: float) -> str:
    """Seconds as a PromQL duration (`60s`, `1500ms`)."""
    return f"{seconds:.0f}s" if seconds >= 1 and seconds.is_integer() else f"{seconds * 1000:.0f}ms"


@dataclass(frozen=True)
class TimeRange:
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


# -- template variables -----------------------------------------------------------------------

@dataclass
class Variable:
    """One template variable, resolved: its options and what is selected (`ALL` for All)."""

    name: str
    label: str
    kind: str
    multi: bool
    include_all: bool
    all_value: str | None
    options: list[str] = field(default_factory=list)
    selected: list[str] = field(default_factory=list)
    problem: str = ""  # why the options could not be listed

    def values(self) -> list[str]:
        if self.selected == [ALL]:
            return [self.all_value] if self.all_value is not None else list(self.options)
        return list(self.selected)

    def promql(self) -> str:
        """The value as Grafana's Prometheus datasource writes it into a query."""
        if self.selected == [ALL] and self.all_value is not None:
            return self.all_value
        values = self.values()
        if not self.multi and not self.include_all:  # prometheusRegularEscape
            return (values[0] if values else "").replace("\\", "\\\\").replace("'", "\\\\'")
        # prometheusSpecialRegexEscape: regex escapes, themselves escaped for a PromQL string
        escaped = [_REGEX_SPECIAL.sub(lambda m: "\\\\" + m[0], v.replace("\\", "\\\\\\\\"))
                   for v in values]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"

    def text(self) -> str:
        return "All" if self.selected == [ALL] else ",".join(self.selected) or "None"


def _regex(text: str) -> re.Pattern[str] | None:
    """A Grafana variable regex, written the JavaScript way (`/pattern/flags`)."""
    if not text:
        return None
    match = re.fullmatch(r"/(.*)/([gimsuy]*)", text, re.S)
    pattern, flags = (match[1], match[2]) if match else (text, "")
    return re.compile(pattern, re.I if "i" in flags else 0)


def _sample_text(item: Obj) -> str:
    """How Grafana's `query_result` shows a sample: `name{k="v", ...} value timestamp_ms`."""
    metric = dict(item["metric"])
    name = metric.pop("__name__", "")
    labels = ", ".join(f'{k}="{v}"' for k, v in metric.items())
    at, value = item["value"]
    return f"{name}{{{labels}}} {value} {int(float(at) * 1000)}"


def _sorted(options: list[str], sort: int) -> list[str]:
    """Grafana's variable `sort`: 1/2 alphabetical, 3/4 numerical, 5/6 case-insensitive."""
    def numeric(text: str) -> float:
        found = re.search(r"-?\d+(\.\d+)?", text)
        return float(found[0]) if found else math.nan
    keys: dict[int, Callable[[str], Any]] = {1: str, 2: str, 3: numeric, 4: numeric,
                                             5: str.lower, 6: str.lower}
    if sort not in keys:
        return options
    return sorted(options, key=keys[sort], reverse=sort in (2, 4, 6))


def variable_options(model: Obj, prom: Prometheus, at: float,
                     earlier: Sequence[Variable], builtins: Mapping[str, str]) -> list[str]:
    """The options of a `query` or `custom` variable (a PrometheusError when the query fails,
    a DashboardError for a query form this view does not evaluate)."""
    query = model.get("query")
    if isinstance(query, dict):  # newer Grafana saves {"query": ..., "refId": ...}
        query = query.get("query", "")
    query = str(query or "")
    if model.get("type") == "custom":
        return [o.strip() for o in query.split(",") if o.strip()]
    match = re.fullmatch(r"\s*query_result\((.*)\)\s*", query, re.S)
    if match is None:
        raise DashboardError(f"variable query {query!r} is not evaluated by this view (only "
                             "Prometheus' query_result(...))")
    promql = interpolate(match[1], earlier, builtins)
    texts = [_sample_text(item) for item in prom.instant(promql, at)]
    pattern = _regex(str(model.get("regex") or ""))
    options: list[str] = []
    for text in texts:
        if pattern is not None:
            found = pattern.search(text)
            if found is None:
                continue
            groups = found.groupdict()
            text = groups.get("value") or groups.get("text") or (
                found[1] if found.re.groups else found[0])
        if text not in options:
            options.append(text)
    return _sorted(options, int(model.get("sort") or 0))


def _current(model: Obj) -> list[str]:
    value = (model.get("current") or {}).get("value")
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def resolve_variables(dashboard: Obj, chosen: Mapping[str, list[str]], prom: Prometheus,
                      at: float, builtins: Mapping[str, str]) -> list[Variable]:
    """Every template variable, in order (a query may use the ones before it)."""
    resolved: list[Variable] = []
    for model in (dashboard.get("templating") or {}).get("list", []):
        kind = str(model.get("type", ""))
        var = Variable(str(model.get("name", "")), str(model.get("label") or model.get("name")),
                       kind, bool(model.get("multi")), bool(model.get("includeAll")),
                       model.get("allValue"))
        if kind == "datasource":
            var.options = ["Prometheus"]  # the addon's only Prometheus datasource
        elif kind in ("query", "custom"):
            try:
                var.options = variable_options(model, prom, at, resolved, builtins)
            except (PrometheusError, DashboardError) as error:
                var.problem = str(error)
        else:  # constant, textbox, interval: the saved value
            var.options = _current(model) or [str(model.get("query") or "")]
        wanted = chosen.get(var.name)
        if wanted:
            var.selected = [ALL] if wanted in (["All"], [ALL]) else wanted
        else:
            saved = _current(model)
            valid = saved and all(v in var.options or (v == ALL and var.include_all)
                                  for v in saved)
            var.selected = (saved if valid else [ALL] if var.include_all
                            else var.options[:1])
        resolved.append(var)
    return resolved


def interpolate(text: str, variables: Sequence[Variable], builtins: Mapping[str, str],
                value: Callable[[Variable], str] = Variable.promql) -> str:
    """`text` with template variables and built-ins replaced (unknown names stay)."""
    by_name = {v.name: v for v in variables}

    def one(match: re.Match[str]) -> str:
        name = match[1] or match[2] or match[3]
        if name in builtins:
            return builtins[name]
        return value(by_name[name]) if name in by_name else match[0]
    return _VARIABLE.sub(one, text)


def builtins_for(span: TimeRange, interval: float) -> dict[str, str]:
    rate = max(interval + SCRAPE_INTERVAL_S, 4 * SCRAPE_INTERVAL_S)
    return {"__interval": duration_text(interval), "__interval_ms": f"{interval * 1000:.0f}",
            "__rate_interval": duration_text(rate), "__range": duration_text(span.seconds),
            "__range_s": f"{span.seconds:.0f}"}


# -- values and units ---------------------------------------------------------------------------

def _plain(value: float, decimals: int | None = None) -> str:
    if not math.isfinite(value):
        return {"nan": "NaN", "inf": "+Inf", "-inf": "-Inf"}[str(value)]
    if decimals is not None:
        return f"{value:.{decimals}f}"
    magnitude = math.floor(math.log10(abs(value))) if value else 0
    text = f"{value:.{min(4, max(0, 2 - magnitude))}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _scaled(value: float, base: float, units: Sequence[str], decimals: int | None) -> str:
    index = 0
    while abs(value) >= base and index < len(units) - 1:
        value /= base
        index += 1
    return f"{_plain(value, decimals)} {units[index]}"


def format_value(value: float, unit: str | None, decimals: int | None = None) -> str:
    """A value in Grafana's unit (`ops`, `reqps`, `percentunit`, `s`, `ms`, `Bps`, `decbytes`,
    `bytes`); other units print the number and the unit's name."""
    if unit == "percentunit":
        return f"{_plain(value * 100, decimals)}%"
    if unit == "percent":
        return f"{_plain(value, decimals)}%"
    if unit in ("s", "ms"):
        ms = value * 1000 if unit == "s" else value
        if abs(ms) < 1000:
            return f"{_plain(ms, decimals)} ms"
        return f"{_plain(ms / 1000, decimals)} s"
    if unit in ("Bps", "decbytes"):
        units = ("B/s", "kB/s", "MB/s", "GB/s") if unit == "Bps" else ("B", "kB", "MB", "GB")
        return _scaled(value, 1000, units, decimals)
    if unit == "bytes":
        return _scaled(value, 1024, ("B", "KiB", "MiB", "GiB"), decimals)
    suffix = {"ops": " ops/s", "reqps": " req/s", None: "", "none": "", "short": ""}.get(
        unit, f" {unit}")
    return f"{_plain(value, decimals)}{suffix}"


REDUCERS: dict[str, Callable[[list[float]], float]] = {
    "lastNotNull": lambda v: v[-1], "last": lambda v: v[-1], "firstNotNull": lambda v: v[0],
    "first": lambda v: v[0], "mean": lambda v: sum(v) / len(v), "max": max, "min": min,
    "sum": sum, "count": len,
}


# -- panels ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Series:
    name: str
    points: list[tuple[float, float]]


@dataclass(frozen=True)
class Context:
    prom: Prometheus
    span: TimeRange
    variables: list[Variable]


def _series_name(target: Obj, metric: Mapping[str, str], variables: Sequence[Variable],
                 builtins: Mapping[str, str]) -> str:
    fmt = str(target.get("legendFormat") or "")
    if fmt and fmt != "__auto":
        fmt = interpolate(fmt, variables, builtins, Variable.text)
        return _LEGEND.sub(lambda m: metric.get(m[1], ""), fmt)
    labels = {k: v for k, v in metric.items() if k != "__name__"}
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{metric.get('__name__', '')}{{{inner}}}" if labels or "__name__" in metric else (
        str(target.get("expr", "")))


def _targets(panel: Obj) -> list[Obj]:
    return [t for t in panel.get("targets") or [] if t.get("expr") and not t.get("hide")]


def _interval(panel: Obj, span: TimeRange) -> float:
    width = panel.get("gridPos", {}).get("w", GRID_COLUMNS) * PAGE_PX / GRID_COLUMNS
    points = float(panel.get("maxDataPoints") or width)
    floor = parse_duration(panel["interval"]) if panel.get("interval") else SCRAPE_INTERVAL_S
    return max(round_interval(span.seconds / points), floor)


def query_panel(panel: Obj, ctx: Context) -> tuple[list[Series], list[str]]:
    """The panel's series (range queries, or instant ones for `instant` targets) and the
    errors Prometheus gave, one per failed target."""
    interval = _interval(panel, ctx.span)
    builtins = builtins_for(ctx.span, interval)
    start = math.floor(ctx.span.start / interval) * interval
    end = math.floor(ctx.span.end / interval) * interval
    series: list[Series] = []
    errors: list[str] = []
    for target in _targets(panel):
        expr = interpolate(str(target["expr"]), ctx.variables, builtins)
        try:
            if target.get("instant") or target.get("format") == "table":
                items = [{**i, "values": [i["value"]]} for i in ctx.prom.instant(expr, end)]
            else:
                items = ctx.prom.range(expr, start, end, interval)
        except PrometheusError as error:
            errors.append(f"{target.get('refId', 'A')}: {error}")
            continue
        for item in items:
            points = [(float(t), float(v)) for t, v in item["values"]]
            name = _series_name(target, item["metric"], ctx.variables, builtins)
            series.append(Series(name, [p for p in points if math.isfinite(p[1])]))
    return series, errors


def _ticks(low: float, high: float, count: int = 4) -> list[float]:
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def svg_lines(series: Sequence[Series], span: TimeRange, step: float, unit: str | None,
              width: float, height: float, y_min: float | None) -> str:
    """A time series chart: one polyline per series (broken where points are missing), y
    ticks in the panel's unit, x ticks as local clock times."""
    left, right, top, bottom = 70.0, 10.0, 6.0, 20.0
    values = [v for s in series for _, v in s.points]
    low = y_min if y_min is not None else min(values, default=0.0)
    high = max(values, default=1.0)
    if high <= low:
        high = low + 1
    ticks = _ticks(low, high)
    high = max(high, ticks[-1])
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(t: float) -> float:
        return left + (t - span.start) / span.seconds * plot_w

    def y(v: float) -> float:
        return top + plot_h - (v - low) / (high - low) * plot_h
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
             f'height="{height:.0f}" font-size="10" font-family="sans-serif">']
    for tick in ticks:
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" '
                     f'y2="{y(tick):.1f}" stroke="#e0e0e0"/><text x="{left - 4}" '
                     f'y="{y(tick) + 3:.1f}" text-anchor="end">'
                     f"{escape(format_value(tick, unit))}</text>")
    for tick in _ticks(span.start, span.end, 5):
        label = datetime.fromtimestamp(tick).strftime("%H:%M:%S")
        parts.append(f'<text x="{x(tick):.1f}" y="{height - 5}" text-anchor="middle">'
                     f"{label}</text>")
    for index, one in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        runs: list[list[tuple[float, float]]] = []
        for t, v in one.points:
            if not runs or t - runs[-1][-1][0] > 1.5 * step:
                runs.append([])
            runs[-1].append((t, v))
        for run in runs:
            coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in run)
            shape = (f'<polyline points="{coords}"' if len(run) > 1 else
                     f'<circle cx="{x(run[0][0]):.1f}" cy="{y(run[0][1]):.1f}" r="2"')
            parts.append(f'{shape} fill="{"none" if len(run) > 1 else colour}" '
                         f'stroke="{colour}" stroke-width="1.5"><title>{escape(one.name)}'
                         "</title></" + ("polyline>" if len(run) > 1 else "circle>"))
    parts.append("</svg>")
    return "".join(parts)


def _legend(series: Sequence[Series]) -> str:
    items = "".join(f'<li><span class="swatch" style="background:{PALETTE[i % len(PALETTE)]}">'
                    f"</span>{escape(s.name)}</li>" for i, s in enumerate(series))
    return f'<ul class="legend">{items}</ul>'


def _defaults(panel: Obj) -> Obj:
    return dict((panel.get("fieldConfig") or {}).get("defaults") or {})


def _timeseries(panel: Obj, series: list[Series], ctx: Context, size: tuple[float, float]
                ) -> str:
    shown = [s for s in series if s.points]
    if not shown:
        return '<p class="empty">No data</p>'
    defaults = _defaults(panel)
    legend = _legend(shown)
    height = max(60.0, size[1] - 18 * min(len(shown), 3))
    return svg_lines(shown, ctx.span, _interval(panel, ctx.span), defaults.get("unit"),
                     size[0], height, defaults.get("min")) + legend


def _stat(panel: Obj, series: list[Series]) -> str:
    defaults = _defaults(panel)
    calcs = ((panel.get("options") or {}).get("reduceOptions") or {}).get("calcs") or ["last"]
    reducer = REDUCERS.get(calcs[0], REDUCERS["last"])
    values = [(s.name, reducer([v for _, v in s.points])) for s in series if s.points]
    if not values:
        return f'<p class="stat">{escape(str(defaults.get("noValue") or "No data"))}</p>'
    return "".join(f'<p class="stat" title="{escape(name)}">'
                   f"{escape(format_value(v, defaults.get('unit'), defaults.get('decimals')))}"
                   "</p>" for name, v in values)


def _overrides(panel: Obj) -> dict[str, dict[str, Any]]:
    """Table overrides by field name: {name: {property id: value}}."""
    found: dict[str, dict[str, Any]] = {}
    for override in (panel.get("fieldConfig") or {}).get("overrides") or []:
        matcher = override.get("matcher") or {}
        if matcher.get("id") == "byName":
            found.setdefault(str(matcher.get("options")), {}).update(
                {p["id"]: p.get("value") for p in override.get("properties") or []})
    return found


def merge_rows(rows: list[tuple[dict[str, str], dict[str, float]]], labels: dict[str, str],
               column: str, value: float) -> None:
    """Grafana's `merge` transformation, one sample at a time: into the first row that agrees
    on every label both have and has no value in `column` yet, else a new row."""
    for row_labels, values in rows:
        if column not in values and all(row_labels.get(k, v) == v for k, v in labels.items()):
            row_labels.update(labels)
            values[column] = value
            return
    rows.append((dict(labels), {column: value}))


def _table(panel: Obj, ctx: Context) -> str:
    """Instant queries, one value column per target (`Value #refId`), rows merged on labels."""
    interval = _interval(panel, ctx.span)
    builtins = builtins_for(ctx.span, interval)
    rows: list[tuple[dict[str, str], dict[str, float]]] = []
    columns: list[str] = []
    errors: list[str] = []
    for target in _targets(panel):
        expr = interpolate(str(target["expr"]), ctx.variables, builtins)
        column = f"Value #{target.get('refId', 'A')}"
        try:
            items = ctx.prom.instant(expr, ctx.span.end)
        except PrometheusError as error:
            errors.append(str(error))
            continue
        columns.append(column)
        for item in items:
            labels = {k: v for k, v in item["metric"].items() if k != "__name__"}
            merge_rows(rows, labels, column, float(item["value"][1]))
    overrides = _overrides(panel)
    labels = list(dict.fromkeys(k for row_labels, _ in rows for k in row_labels))
    shown = [c for c in [*labels, *columns] if not overrides.get(c, {}).get("custom.hidden")]
    if not rows:
        return _errors(errors) + '<p class="empty">No data</p>'
    head = "".join(f"<th>{escape(str(overrides.get(c, {}).get('displayName', c)))}</th>"
                   for c in shown)
    body = []
    for row_labels, values in sorted(rows, key=lambda r: sorted(r[0].items())):
        cells = []
        for c in shown:
            if c in values:
                props = overrides.get(c, {})
                cells.append(escape(format_value(values[c], props.get("unit"),
                                                 props.get("decimals"))))
            else:
                cells.append(escape(row_labels.get(c, "")))
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return _errors(errors) + f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _errors(errors: Sequence[str]) -> str:
    return "".join(f'<p class="error">{escape(e)}</p>' for e in errors)


def render_panel(panel: Obj, ctx: Context) -> str:
    """One panel as an HTML section placed on Grafana's grid; `data-series` counts the series
    with data (a script can tell an empty chart from a drawn one)."""
    grid = panel.get("gridPos") or {}
    w, h = int(grid.get("w", 12)), int(grid.get("h", 8))
    place = (f"grid-column:{int(grid.get('x', 0)) + 1} / span {w};"
             f"grid-row:{int(grid.get('y', 0)) + 1} / span {h}")
    kind = str(panel.get("type", ""))
    title = interpolate(str(panel.get("title") or ""), ctx.variables, {}, Variable.text)
    drawn = 0
    if kind == "row":
        return (f'<section class="row" style="{place}" data-type="row"><h2>{escape(title)}'
                "</h2></section>")
    if kind == "text":
        options = panel.get("options") or {}
        text = interpolate(str(options.get("content", "")), ctx.variables, {},
                           lambda v: escape(v.text()))
        inner = text if options.get("mode") == "html" else f"<pre>{text}</pre>"
    elif kind in ("timeseries", "stat"):
        series, errors = query_panel(panel, ctx)
        drawn = sum(1 for s in series if s.points)
        size = (w * PAGE_PX / GRID_COLUMNS - 16, h * ROW_PX - 40)
        inner = _errors(errors) + (_timeseries(panel, series, ctx, size) if kind == "timeseries"
                                   else _stat(panel, series))
    elif kind == "table":
        inner = _table(panel, ctx)
        drawn = inner.count("<tr>") - 1 if "<table>" in inner else 0
    else:
        inner = (f'<p class="empty">panel type {escape(kind)!r} is not drawn by meshlab\'s '
                 "Grafana-compatible view (timeseries, stat, table, text and row are)</p>")
    return (f'<section class="panel" style="{place}" data-type="{escape(kind)}" '
            f'data-title="{escape(title)}" data-series="{drawn}"><h3>{escape(title)}</h3>'
            f"{inner}</section>")


def panels(dashboard: Obj) -> list[Obj]:
    """Every panel in grid order, the ones inside collapsed rows included."""
    found: list[Obj] = []
    for panel in dashboard.get("panels") or []:
        found.append(panel)
        found.extend(panel.get("panels") or [])
    return sorted(found, key=lambda p: ((p.get("gridPos") or {}).get("y", 0),
                                        (p.get("gridPos") or {}).get("x", 0)))


def render_dashboard(dashboard: Obj, ctx: Context) -> str:
    return "".join(render_panel(p, ctx) for p in panels(dashboard))


DASHBOARD_STYLE = f"""
.grid {{ display: grid; grid-template-columns: repeat({GRID_COLUMNS}, 1fr);
  grid-auto-rows: {ROW_PX}px; gap: 4px; width: {PAGE_PX}px; }}
.panel {{ background: #fff; border: 1px solid #d8d9da; padding: 4px 8px; overflow: auto; }}
.panel h3 {{ font-size: 13px; margin: 0 0 4px; }} .row h2 {{ font-size: 15px; margin: 6px 0; }}
.stat {{ font-size: 26px; margin: 4px 0; color: #1f78c1; }}
.error {{ color: #c62828; font-size: 11px; }} .legend {{ font-size: 10px; margin: 0;
  padding-left: 0; list-style: none; }} .legend li {{ display: inline-block; margin-right: 8px; }}
.swatch {{ display: inline-block; width: 10px; height: 3px; margin-right: 3px;
  vertical-align: middle; }} table {{ font-size: 11px; border-collapse: collapse; }}
td, th {{ border: 1px solid #eee; padding: 2px 6px; text-align: left; }}
"""
