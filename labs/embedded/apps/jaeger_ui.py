"""The web pages of the Jaeger addon's twin: meshlab's Jaeger-compatible view, server-rendered
HTML with no external assets (the learner's browser may be offline), not Jaeger's React UI.

It follows the layout of Jaeger UI's pages (jaegertracing/jaeger-ui packages/jaeger-ui/src/
components/SearchTracePage and TracePage): a search form (service, operation, tags in logfmt,
lookback, min/max duration, limit: 20 by default), results as Jaeger lists them (service and
root operation, span and error counts, spans per service, duration, start time), and a trace
page with its header (start, duration, services, depth, spans) and a waterfall of spans,
children under their parent, each opening onto its tags.
"""

from __future__ import annotations

import json
import shlex
import time
import zlib
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from .jaeger_query import QueryError

Obj = dict[str, Any]
Params = Mapping[str, Sequence[str]]
LOOKBACKS = {"5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "2h": 7200, "3h": 10800,
             "6h": 21600, "12h": 43200, "24h": 86400, "2d": 172800}
DEFAULT_LOOKBACK, DEFAULT_LIMIT = "1h", "20"  # Jaeger UI's defaults
PALETTE = ("#17b8be", "#f8dcb4", "#b7885e", "#ffcb99", "#f89570", "#829ae3", "#e79fd5",
           "#1e96be", "#89dac1", "#b3ad9e", "#12939a", "#ddb27c")
FOOTER = ("meshlab's Jaeger-compatible view, not Jaeger's React UI: server-rendered pages over "
          "the embedded cluster's span storage. Jaeger's query API is served as upstream's, at "
          "<code>api/services</code>, <code>api/traces</code>, <code>api/traces/&lt;id&gt;"
          "</code>.")
STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#222}
header{background:#1a1a1a;color:#fff;padding:.6em 1em;font-weight:600}
header a{color:#fff;text-decoration:none}
main{display:flex;gap:1.5em;padding:1em}
form.search{min-width:16em;max-width:18em;background:#f4f4f4;padding:1em;border-radius:4px}
form.search label{display:block;margin:.6em 0 .2em;font-size:.85em;font-weight:600}
form.search input,form.search select{width:100%;box-sizing:border-box}
.results{flex:1}
.trace{border:1px solid #ddd;border-radius:4px;margin:.6em 0;padding:.5em .8em}
.trace a.title{font-weight:600;text-decoration:none;color:#11939a}
.meta{font-size:.85em;color:#555}
.badge{display:inline-block;border-left:4px solid;padding:0 .4em;margin:.2em .3em 0 0;
background:#f4f4f4;font-size:.8em}
.bar{height:4px;background:#ccc;margin-top:.3em}
.bar span{display:block;height:4px;background:#11939a}
.err{color:#b00}
table.spans{width:100%;border-collapse:collapse;font-size:.85em}
table.spans td{padding:.15em .3em;vertical-align:top;border-bottom:1px solid #eee}
td.name{width:32%;white-space:nowrap;overflow:hidden}
td.timeline{position:relative}
.span-bar{position:absolute;top:.35em;height:.9em;border-radius:2px;min-width:2px}
.span-label{position:absolute;top:.1em;font-size:.8em;white-space:nowrap}
details summary{cursor:pointer}
table.tags{font-size:.9em;border-collapse:collapse;margin:.3em 0}
table.tags td{border:1px solid #eee;padding:.1em .4em}
.ticks{display:flex;justify-content:space-between;font-size:.75em;color:#777}
footer{margin:2em 1em 1em;font-size:.8em;color:#666;border-top:1px solid #ddd;padding-top:.5em}
"""


def _page(title: str, body: str, base: str) -> str:
    """`base`: where the pages are, "" or upstream's base path `/jaeger`."""
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>"
            f"{escape(title)}</title><style>{STYLE}</style></head><body>"
            f"<header><a href=\"{base}/search\">Jaeger</a> &middot; meshlab</header>{body}"
            f"<footer>{FOOTER}</footer></body></html>")


def error_page(message: str, base: str = "") -> str:
    return _page("Jaeger: error", f"<main><p class=\"err\">{escape(message)}</p></main>", base)


def _first(params: Params, name: str, default: str = "") -> str:
    return (params.get(name) or [default])[0]


def logfmt_tags(text: str) -> dict[str, str]:
    """The form's tags, as Jaeger UI takes them: `key=value` pairs separated by spaces, values
    with spaces in double quotes."""
    tags = {}
    try:
        words = shlex.split(text)
    except ValueError as err:
        raise QueryError(f"tags: {err}; write key=value pairs, e.g. http.status_code=200") \
            from None
    for word in words:
        key, equals, value = word.partition("=")
        if not equals or not key:
            raise QueryError(f"tags: {word!r} is not key=value; write key=value pairs separated "
                             "by spaces, e.g. http.status_code=200 upstream_cluster=\"...\"")
        tags[key] = value
    return tags


def search_params(form: Params, now: float | None = None) -> dict[str, list[str]]:
    """The API parameters the UI's form stands for: the lookback becomes `start`."""
    lookback = LOOKBACKS.get(_first(form, "lookback", DEFAULT_LOOKBACK))
    if lookback is None:
        raise QueryError(f"lookback: choose one of {', '.join(LOOKBACKS)}")
    start = int(((now if now is not None else time.time()) - lookback) * 1_000_000)
    params = {"service": [_first(form, "service")], "start": [str(start)],
              "limit": [_first(form, "limit") or DEFAULT_LIMIT]}
    operation = _first(form, "operation")
    if operation and operation != "all":
        params["operation"] = [operation]
    for name in ("minDuration", "maxDuration"):
        if value := _first(form, name):
            params[name] = [value]
    if tags := _first(form, "tags").strip():
        params["tags"] = [json.dumps(logfmt_tags(tags))]
    return params


def _options(values: Sequence[str], selected: str) -> str:
    return "".join(f"<option{' selected' if v == selected else ''} value=\"{escape(v)}\">"
                   f"{escape(v)}</option>" for v in values)


def _form(services: Sequence[str], operations: Sequence[str], form: Params, base: str) -> str:
    service = _first(form, "service")

    def field(name: str, placeholder: str) -> str:
        return (f"<input name=\"{name}\" placeholder=\"{placeholder}\" "
                f"value=\"{escape(_first(form, name))}\">")
    return (
        f"<form class=\"search\" action=\"{base}/search\" method=\"get\"><strong>Search</strong>"
        "<label for=\"service\">Service</label><select id=\"service\" name=\"service\" "
        "onchange=\"this.form.operation.value='all';this.form.submit()\">"
        f"<option value=\"\">select a service</option>{_options(services, service)}</select>"
        "<label for=\"operation\">Operation</label><select id=\"operation\" name=\"operation\">"
        f"{_options(['all', *operations], _first(form, 'operation', 'all'))}</select>"
        f"<label for=\"tags\">Tags</label>{field('tags', 'http.status_code=200 error=true')}"
        "<label for=\"lookback\">Lookback</label><select id=\"lookback\" name=\"lookback\">"
        f"{_options(list(LOOKBACKS), _first(form, 'lookback', DEFAULT_LOOKBACK))}</select>"
        f"<label>Min Duration</label>{field('minDuration', 'e.g. 1.2s, 100ms, 500us')}"
        f"<label>Max Duration</label>{field('maxDuration', 'e.g. 1.1s')}"
        f"<label>Limit Results</label><input name=\"limit\" type=\"number\" min=\"1\" "
        f"value=\"{escape(_first(form, 'limit', DEFAULT_LIMIT))}\">"
        "<p><button type=\"submit\">Find Traces</button></p></form>")


# -- one trace's shape ------------------------------------------------------------------------
def _service_of(trace: Obj, span: Obj) -> str:
    return str(trace["processes"].get(span["processID"], {}).get("serviceName", "unknown"))


def _parent(span: Obj) -> str | None:
    refs = [r for r in span.get("references") or [] if r.get("refType") == "CHILD_OF"]
    return str(refs[0]["spanID"]) if refs else None


def _ordered(trace: Obj) -> list[tuple[int, Obj]]:
    """(depth, span) in waterfall order: each span after its parent, siblings by start."""
    spans = trace["spans"]
    ids = {s["spanID"] for s in spans}
    children: dict[str | None, list[Obj]] = {}
    for span in spans:
        parent = _parent(span)
        children.setdefault(parent if parent in ids else None, []).append(span)
    out: list[tuple[int, Obj]] = []
    seen: set[int] = set()
    # roots first; then any span a parent cycle (a malformed trace) kept out of reach
    for top in [*children.get(None, []), *spans]:
        stack = [(0, top)]
        while stack:
            depth, span = stack.pop()
            if id(span) in seen:
                continue
            seen.add(id(span))
            out.append((depth, span))
            stack += [(depth + 1, c) for c in sorted(children.get(span["spanID"], []),
                                                     key=lambda s: s["startTime"], reverse=True)]
    return out


def _bounds(trace: Obj) -> tuple[int, int]:
    start = min(s["startTime"] for s in trace["spans"])
    end = max(s["startTime"] + s["duration"] for s in trace["spans"])
    return start, max(end - start, 1)


def _is_error(span: Obj) -> bool:
    return any(t["key"] == "error" and str(t["value"]).lower() == "true" for t in span["tags"])


def _ms(us: float) -> str:
    return f"{us / 1000:.2f}ms" if us < 1_000_000 else f"{us / 1_000_000:.2f}s"


def _when(us: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(us / 1_000_000)) + " UTC"


def _color(service: str) -> str:
    """The same color for a service on every page."""
    return PALETTE[zlib.crc32(service.encode()) % len(PALETTE)]


def _title(trace: Obj) -> str:
    depth_first = _ordered(trace)
    root = depth_first[0][1]
    return f"{_service_of(trace, root)}: {root['operationName']}"


# -- pages ----------------------------------------------------------------------------------
def _result(trace: Obj, longest: int, base: str) -> str:
    start, duration = _bounds(trace)
    counts: dict[str, int] = {}
    for span in trace["spans"]:
        service = _service_of(trace, span)
        counts[service] = counts.get(service, 0) + 1
    errors = sum(map(_is_error, trace["spans"]))
    badges = "".join(f"<span class=\"badge\" style=\"border-color:{_color(s)}\">"
                     f"{escape(s)} ({n})</span>" for s, n in sorted(counts.items()))
    tid = trace["traceID"]
    return (f"<div class=\"trace\"><a class=\"title\" href=\"{base}/trace/{quote(tid)}\">"
            f"{escape(_title(trace))} <small>{escape(tid[:7])}</small></a>"
            f"<span style=\"float:right\">{_ms(duration)}</span>"
            f"<div class=\"meta\">{len(trace['spans'])} Spans"
            + (f" &middot; <span class=\"err\">{errors} Error{'s' if errors != 1 else ''}</span>"
               if errors else "")
            + f" &middot; {_when(start)}</div><div>{badges}</div>"
            f"<div class=\"bar\"><span style=\"width:{100 * duration / longest:.1f}%\"></span>"
            "</div></div>")


# Jaeger UI's result orders (SearchResults' sort options); the API answers newest first
SORT_KEYS: dict[str, Any] = {
    "Most Recent": lambda t: -_bounds(t)[0], "Longest First": lambda t: -_bounds(t)[1],
    "Shortest First": lambda t: _bounds(t)[1], "Most Spans": lambda t: -len(t["spans"]),
    "Least Spans": lambda t: len(t["spans"])}
SORTS = list(SORT_KEYS)


def _sort_links(form: Params, order: str, base: str) -> str:
    kept = {k: list(v) for k, v in form.items() if k != "sort"}
    return "Sort: " + " ".join(
        f"<strong>{escape(name)}</strong>" if name == order else
        f"<a href=\"{base}/search?{escape(urlencode({**kept, 'sort': [name]}, doseq=True))}\">"
        f"{escape(name)}</a>" for name in SORTS)


def _scatter(traces: Sequence[Obj], base: str) -> str:
    """Jaeger's scatter plot above the results: a dot per trace, start time across, duration
    up, red when a span failed; each dot opens its trace."""
    width, height, pad = 1000, 140, 12
    starts = [_bounds(t)[0] for t in traces]
    first, span_us = min(starts), max(max(starts) - min(starts), 1)
    longest = max(_bounds(t)[1] for t in traces)
    dots = []
    for trace, start in zip(traces, starts, strict=True):
        duration = _bounds(trace)[1]
        x = pad + (width - 2 * pad) * (start - first) / span_us
        y = height - pad - (height - 2 * pad) * duration / longest
        fill = "#e55" if any(map(_is_error, trace["spans"])) else "#11939a"
        dots.append(f"<a href=\"{base}/trace/{quote(trace['traceID'])}\"><circle cx=\"{x:.1f}\" "
                    f"cy=\"{y:.1f}\" r=\"5\" fill=\"{fill}\" fill-opacity=\".7\"><title>"
                    f"{escape(_title(trace))} ({_ms(duration)})</title></circle></a>")
    return (f"<svg viewBox=\"0 0 {width} {height}\" width=\"100%\" height=\"{height}\" "
            "style=\"background:#f8f8f8\" role=\"img\" "
            f"aria-label=\"trace durations over time\">{''.join(dots)}<text x=\"4\" y=\"12\" "
            f"font-size=\"11\" fill=\"#777\">{_ms(longest)}</text></svg>")


def search_page(services: Sequence[str], operations: Sequence[str], form: Params,
                traces: Sequence[Obj], error: str, base: str = "") -> str:
    """Jaeger's search page: the form, then the traces found (newest first)."""
    if error:
        results = f"<p class=\"err\">{escape(error)}</p>"
    elif not _first(form, "service"):
        results = ("<p>Pick a service and press <em>Find Traces</em>. "
                   + ("No service has reported spans yet: send some traffic through the mesh "
                      "(Istio samples 1 % of requests; a request with <code>x-b3-sampled: 1"
                      "</code> is always traced)." if not services else "") + "</p>")
    elif not traces:
        results = "<p>No trace results. Try another query.</p>"
    else:
        longest = max(_bounds(t)[1] for t in traces)
        order = _first(form, "sort", SORTS[0])
        ranked = sorted(traces, key=SORT_KEYS.get(order, SORT_KEYS[SORTS[0]]))
        results = (_scatter(traces, base)
                   + f"<p><strong>{len(traces)} Trace{'s' if len(traces) != 1 else ''}</strong>"
                   f" &middot; {_sort_links(form, order, base)}</p>"
                   + "".join(_result(t, longest, base) for t in ranked))
    return _page("Jaeger: search", f"<main>{_form(services, operations, form, base)}"
                                   f"<section class=\"results\">{results}</section></main>",
                 base)


def _tags_table(span: Obj) -> str:
    rows = "".join(f"<tr><td>{escape(t['key'])}</td><td>{escape(str(t['value']))}</td></tr>"
                   for t in span["tags"])
    parent = _parent(span)
    return (f"<table class=\"tags\"><tr><td>spanID</td><td>{escape(span['spanID'])}</td></tr>"
            + (f"<tr><td>parent</td><td>{escape(parent)}</td></tr>" if parent else "")
            + f"{rows}</table>")


def trace_page(trace: Obj, base: str = "") -> str:
    """Jaeger's trace page: the header, then the waterfall."""
    start, duration = _bounds(trace)
    ordered = _ordered(trace)
    rows = []
    for depth, span in ordered:
        service = _service_of(trace, span)
        left = 100 * (span["startTime"] - start) / duration
        width = 100 * span["duration"] / duration
        # the duration after the bar, else before it, else inside its end
        label_side = (f"left:{left + width + 0.5:.2f}%" if left + width < 85 else
                      f"right:{100 - left + 0.5:.2f}%" if left > 15 else
                      f"right:{100 - left - width + 0.5:.2f}%")
        error = " <span class=\"err\">&#9888;</span>" if _is_error(span) else ""
        rows.append(
            f"<tr><td class=\"name\" style=\"padding-left:{0.3 + depth * 1.1:.1f}em\">"
            f"<details><summary><span style=\"border-left:4px solid {_color(service)};"
            f"padding-left:.3em\">{escape(service)}</span>{error} "
            f"<span class=\"meta\">{escape(span['operationName'])}</span></summary>"
            f"{_tags_table(span)}</details></td><td class=\"timeline\">"
            f"<div class=\"span-bar\" style=\"left:{left:.2f}%;width:{width:.2f}%;"
            f"background:{_color(service)}\"></div><span class=\"span-label\" "
            f"style=\"{label_side}\">{_ms(span['duration'])}</span></td></tr>")
    ticks = "".join(f"<span>{_ms(duration * i / 4)}</span>" for i in range(5))
    services = len({_service_of(trace, s) for s in trace["spans"]})
    depth = max(d for d, _ in ordered) + 1
    back = urlencode({"service": _service_of(trace, ordered[0][1])})
    header = (f"<h2>{escape(_title(trace))} <small class=\"meta\">{escape(trace['traceID'])}"
              f"</small></h2><p class=\"meta\">Trace Start <strong>{_when(start)}</strong> "
              f"&middot; Duration <strong>{_ms(duration)}</strong> &middot; Services "
              f"<strong>{services}</strong> &middot; Depth <strong>{depth}</strong> &middot; "
              f"Total Spans <strong>{len(trace['spans'])}</strong> &middot; "
              f"<a href=\"{base}/search?{back}\">back to search</a></p>")
    table = (f"<table class=\"spans\"><tr><td class=\"name\"><strong>Service &amp; Operation"
             f"</strong></td><td><div class=\"ticks\">{ticks}</div></td></tr>{''.join(rows)}"
             "</table>")
    return _page(f"Jaeger: {_title(trace)}",
                 f"<main><section class=\"results\">{header}{table}</section></main>", base)
