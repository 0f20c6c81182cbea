"""`linkerd viz routes`: per-route stats of a resource's services, from their ServiceProfiles.

Layout as linkerd/linkerd2 `viz/cmd/routes.go` `printRouteTable` (golden
`viz/cmd/testdata/routes_one_output.golden`): one row per ServiceProfile route and
`[DEFAULT]` for requests no route matches, sorted by service then route, a blank line after the
table. Emulation limit: the proxies here have no per-route families (`route_response_total`),
so a ServiceProfile's named routes print upstream's no-data `-`; `[DEFAULT]` carries the
resource's inbound stats (the stat queries of stat.py) when its profile names no route, when
every request is a `[DEFAULT]` request, and `-` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from labs.linkerd.kube import Kube
from labs.linkerd.viz import stat, table
from labs.linkerd.viz.resources import Resource, ResourceError, objects, pods_of

Obj = dict[str, Any]
DEFAULT_ROUTE = "[DEFAULT]"
PROFILES = "serviceprofiles.linkerd.io"


@dataclass
class RouteRow:
    route: str
    service: str
    stats: stat.Row | None = None


def services_of(kube: Kube, resource: Resource) -> list[Obj]:
    """The Services whose selector picks one of the resource's pods."""
    every = kube.items("pods", resource.namespace)
    pods = [p for obj in objects(kube, resource, False)
            for p in pods_of(resource.kind, obj, every)]
    found = []
    for service in kube.items("services", resource.namespace):
        selector = (service.get("spec") or {}).get("selector") or {}
        if selector and any(all((p["metadata"].get("labels") or {}).get(k) == v
                                for k, v in selector.items()) for p in pods):
            found.append(service)
    return found


def route_rows(kube: Kube, resource: Resource, options: stat.Options) -> list[RouteRow]:
    if resource.kind == "namespace" or not resource.name:
        raise ResourceError("please specify a resource by name, e.g. deploy/web")
    services = services_of(kube, resource)
    if not services:
        raise ResourceError(f"no services found for {resource.kind}/{resource.name} in "
                            f"namespace {resource.namespace}")
    totals = stat.query_stats(kube, options, resource).get((resource.namespace, resource.name))
    rows = []
    for service in services:
        name = service["metadata"]["name"]
        profile = kube.get(PROFILES, f"{name}.{resource.namespace}.svc.cluster.local",
                           resource.namespace)
        routes = [r.get("name", "") for r in ((profile or {}).get("spec") or {}).get("routes")
                  or []]
        rows += [RouteRow(route, name) for route in routes]
        rows.append(RouteRow(DEFAULT_ROUTE, name, None if routes else totals))
    return sorted(rows, key=lambda r: r.service + r.route)


def render(rows: list[RouteRow], window_s: float) -> str:
    """printRouteTable, then the blank line writeRouteStatsToBuffer ends a table with."""
    width = max((len(r.route) for r in rows), default=0)
    lines = [[f"{'ROUTE':<{width}}", "SERVICE", "SUCCESS", "RPS", "LATENCY_P50",
              "LATENCY_P95", "LATENCY_P99"]]
    for r in rows:
        cells = [f"{r.route:<{width}}", r.service]
        if r.stats is not None and r.stats.has_data():
            total = r.stats.success + r.stats.failure
            cells += [f"{100 * r.stats.success / total:.2f}%", f"{total / window_s:.1f}rps",
                      *(f"{r.stats.latency.get(q, 0)}ms" for q in stat.QUANTILES)]
        else:
            cells += ["-"] * 5
        lines.append(cells)
    return table.render(lines) + "\n"
