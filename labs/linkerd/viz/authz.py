"""`linkerd viz authz`: requests per server, route and authorization of a resource.

Queries as linkerd/linkerd2 `viz/metrics-api/authz.go` (inbound `response_total`, latency
quantiles, `inbound_http_authz_allow_total` / `_deny_total`, by `route_kind, route_name,
authz_kind, authz_name, srv_kind, srv_name`), rows and table as `viz/cmd/authz.go` with
`cli/table/table.go` (left-aligned ROUTE, SERVER, AUTHORIZATION, two spaces after every column,
sorted by server, route, authorization; a default server reads `default:<policy>`). Rows
without requests are left out for the default authorization, as upstream.
"""

from __future__ import annotations

from typing import Any

from labs.linkerd.kube import Kube
from labs.linkerd.viz import prom, stat
from labs.linkerd.viz.resources import Resource, ResourceError, label

Obj = dict[str, Any]
GROUP = ("route_kind", "route_name", "authz_kind", "authz_name", "srv_kind", "srv_name")
COLUMNS = ("ROUTE", "SERVER", "AUTHORIZATION", "UNAUTHORIZED", "SUCCESS", "RPS", "LATENCY_P50",
           "LATENCY_P95", "LATENCY_P99")
LEFT = 3  # the first three columns are left-aligned
SPACING = "  "


def _selector(resource: Resource) -> dict[str, str]:
    """PromQueryLabels: the namespace and, when named, the resource's label."""
    labels = {"namespace": resource.namespace}
    if resource.name and resource.kind != "namespace":
        labels[label(resource.kind)] = resource.name
    return labels


def rows(kube: Kube, resource: Resource, window: str, window_s: float) -> list[list[str]]:
    if window_s < stat.MIN_WINDOW_S:
        raise ResourceError("metrics time window needs to be at least 15s")
    labels = _selector(resource)
    inbound = prom.labels({**labels, "direction": "inbound"})
    by = ", ".join(GROUP)
    counts: dict[tuple[str, ...], dict[str, Any]] = {}

    def row(metric: dict[str, str]) -> dict[str, Any]:
        key = tuple(metric.get(name, "") for name in GROUP)
        return counts.setdefault(key, {"success": 0, "failure": 0, "denied": 0, "latency": {}})

    for sample in prom.run(kube, f"sum(increase(response_total{inbound}[{window}])) by "
                                 f"({by}, classification, tls)"):
        kind = sample["metric"].get("classification")
        if kind in ("success", "failure"):
            row(sample["metric"])[kind] += stat.rounded(sample["value"][1])
    for sample in prom.run(kube, f"sum(increase(inbound_http_authz_deny_total"
                                 f"{prom.labels(labels)}[{window}])) by ({by})"):
        row(sample["metric"])["denied"] = stat.rounded(sample["value"][1])
    for quantile in stat.QUANTILES:
        for sample in prom.run(kube, f"histogram_quantile({quantile}, sum(irate("
                                     f"response_latency_ms_bucket{inbound}[{window}])) by "
                                     f"(le, {by}))"):
            row(sample["metric"])["latency"][quantile] = stat.rounded(sample["value"][1])
    table = []
    for key, found in counts.items():
        _route_kind, route, authz_kind, authz_name, srv_kind, srv_name = key
        server = f"default:{srv_name}" if srv_kind == "default" else srv_name
        authz = f"{authz_kind}/{authz_name}" if authz_kind else ""
        total = found["success"] + found["failure"]
        if found["success"] * 2 + found["denied"] > 0:  # upstream adds SuccessCount twice
            table.append([route, server, authz, f"{found['denied'] / window_s:.1f}rps",
                          f"{100 * found['success'] / total if total else 0:.2f}%",
                          f"{total / window_s:.1f}rps",
                          *(f"{found['latency'].get(q, 0)}ms" for q in stat.QUANTILES)])
        elif authz_kind not in ("", "default"):
            table.append([route, server, authz, *["-"] * 6])
    return sorted(table, key=lambda r: (r[1], r[0], r[2]))


def render(data: list[list[str]]) -> str:
    """cli/table Render: every column as wide as its widest cell, header included."""
    widths = [max([len(h), *(len(r[i]) for r in data)]) for i, h in enumerate(COLUMNS)]
    out = []
    for line in [list(COLUMNS), *data]:
        cells = [f"{v:<{w}}" if i < LEFT else f"{v:>{w}}"
                 for i, (v, w) in enumerate(zip(line, widths, strict=True))]
        out.append(SPACING.join(cells) + SPACING + "\n")
    return "".join(out)
