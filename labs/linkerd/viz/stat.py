"""`linkerd viz stat`: golden metrics per resource from linkerd-viz's Prometheus.

Queries as linkerd/linkerd2 `viz/metrics-api/stat_summary.go` builds them (`reqQuery`,
`latencyQuantileQuery`, `tcpConnectionsQuery`; counts and latencies rounded as
`extractSampleValue`), the table as `viz/cmd/stat.go` `printSingleStatTable` writes it (golden
files `viz/cmd/testdata/stat_*.golden`), JSON as `printStatJSON`. MESHED counts come from the
pods (`linkerd.io/control-plane-ns` label, running pods). Unmeshed resources are skipped unless
`--unmeshed` or `--from`, as upstream. Emulation limits: TCP_CONN is `-` for inbound stats (this
proxy's `/metrics` has no inbound `tcp_open_connections`, see mesh/linkerd/metrics.py), and
`-o wide`'s READ_BYTES/SEC and WRITE_BYTES/SEC are `-` (no `tcp_read_bytes_total`); services,
authorities and traffic splits are not stat targets here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from labs.linkerd.kube import Kube
from labs.linkerd.viz import prom, table
from labs.linkerd.viz.resources import (
    SHORT,
    Resource,
    ResourceError,
    label,
    objects,
    pods_of,
)

Obj = dict[str, Any]
QUANTILES = ("0.5", "0.95", "0.99")
MIN_WINDOW_S = 15.0


@dataclass
class Row:
    namespace: str
    name: str
    meshed: str
    status: str = ""
    success: int = 0
    failure: int = 0
    latency: dict[str, int] = field(default_factory=dict)
    tcp: int | None = None

    def has_data(self) -> bool:
        return bool(self.success or self.failure)


@dataclass
class Options:
    namespace: str
    all_namespaces: bool
    window: str
    window_s: float
    output: str
    from_res: Resource | None = None
    to_res: Resource | None = None
    unmeshed: bool = False
    control_plane_ns: str = "linkerd"


def validate(options: Options, targets: list[Resource]) -> None:
    """stat.go `validate` and BuildStatSummaryRequest's checks, with upstream's messages."""
    if options.window_s < MIN_WINDOW_S:
        raise ResourceError("metrics time window needs to be at least 15s")
    if options.from_res and options.to_res:
        raise ResourceError("--to and --from flags are mutually exclusive")
    if any(t.kind == "service" for t in targets):
        raise ResourceError("stats of services are not emulated on the embedded cluster: ask "
                            "for the workloads behind them (`linkerd viz stat deploy`), or "
                            "`--to svc/NAME` a client's outbound stats")
    for target in targets:
        if options.all_namespaces and target.name and target.kind != "namespace":
            raise ResourceError(
                "stats for a resource cannot be retrieved by name across all namespaces")


def _selector(options: Options, target: Resource) -> tuple[dict[str, str], list[str]]:
    """The label matchers and group-by labels of one target (buildRequestLabels)."""
    own = label(target.kind)
    if options.from_res:  # outbound from the source; rows are the destinations
        src = options.from_res
        labels = {"direction": "outbound", "namespace": src.namespace}
        if src.name and src.kind != "namespace":
            labels[label(src.kind)] = src.name
        if own == "namespace":
            labels.update({"dst_namespace": target.name} if target.name else {})
        elif not options.all_namespaces:
            labels["dst_namespace"] = target.namespace
        if target.name and own != "namespace":
            labels[f"dst_{own}"] = target.name
        group = ["dst_namespace"] if own == "namespace" else ["dst_namespace", f"dst_{own}"]
        return labels, group
    labels = {"direction": "outbound" if options.to_res else "inbound"}
    if own == "namespace":
        labels.update({"namespace": target.name} if target.name else {})
    elif not options.all_namespaces:
        labels["namespace"] = target.namespace
    if target.name and own != "namespace":
        labels[own] = target.name
    if options.to_res:
        dst = options.to_res
        labels["dst_namespace"] = dst.namespace
        if dst.name and dst.kind != "namespace":
            labels[f"dst_{label(dst.kind)}"] = dst.name
    return labels, (["namespace"] if own == "namespace" else ["namespace", own])


def _key(metric: dict[str, str], group: list[str]) -> tuple[str, str]:
    namespace = metric.get(group[0], "")
    return namespace, metric.get(group[-1], "") if len(group) > 1 else namespace


def query_stats(kube: Kube, options: Options, target: Resource) -> dict[tuple[str, str], Row]:
    labels, group = _selector(options, target)
    selector, by = prom.labels(labels), ", ".join(group)
    window = options.window
    stats: dict[tuple[str, str], Row] = {}

    def row(key: tuple[str, str]) -> Row:
        return stats.setdefault(key, Row(key[0], key[1], ""))

    requests = f"sum(increase(response_total{selector}[{window}])) by ({by}, classification, tls)"
    for sample in prom.run(kube, requests):
        count = rounded(sample["value"][1])
        found = row(_key(sample["metric"], group))
        if sample["metric"].get("classification") == "success":
            found.success += count
        elif sample["metric"].get("classification") == "failure":
            found.failure += count
    for quantile in QUANTILES:
        promql = (f"histogram_quantile({quantile}, sum(irate(response_latency_ms_bucket"
                  f"{selector}[{window}])) by (le, {by}))")
        for sample in prom.run(kube, promql):
            row(_key(sample["metric"], group)).latency[quantile] = rounded(sample["value"][1])
    tcp_labels = {**labels, "peer": "dst" if labels["direction"] == "outbound" else "src"}
    for sample in prom.run(kube, f"sum(tcp_open_connections{prom.labels(tcp_labels)}) by ({by})"):
        row(_key(sample["metric"], group)).tcp = rounded(sample["value"][1])
    return stats


def rounded(value: str) -> int:
    number = float(value)
    return 0 if number != number else round(number)  # NaN -> 0, as extractSampleValue


def rows_for(kube: Kube, options: Options, target: Resource) -> list[Row]:
    """One row per object of the target, with its stats when it had traffic."""
    stats = query_stats(kube, options, target)
    pods = kube.items("pods", None)
    rows = []
    for obj in objects(kube, target, options.all_namespaces):
        meta = obj["metadata"]
        namespace = meta["name"] if target.kind == "namespace" else meta.get("namespace", "")
        running = [p for p in pods_of(target.kind, obj, pods)
                   if (p.get("status") or {}).get("phase") == "Running"]
        meshed = [p for p in running if (p["metadata"].get("labels") or {}).get(
            "linkerd.io/control-plane-ns") == options.control_plane_ns]
        if not meshed and not options.unmeshed and options.from_res is None:
            continue
        found = stats.get((namespace, meta["name"]), Row(namespace, meta["name"], ""))
        found.meshed = f"{len(meshed)}/{len(running)}"
        found.status = (obj.get("status") or {}).get("phase", "") if target.kind == "pod" else ""
        rows.append(found)
    return sorted(rows, key=lambda r: (r.namespace, r.name))


def render_table(kind: str, rows: list[Row], options: Options, prefix: bool) -> str:
    """printSingleStatTable."""
    names = [(f"{SHORT[kind]}/" if prefix else "") + r.name for r in rows]
    name_cells = table.left(names, "NAME")
    ns_cells = table.left([r.namespace for r in rows], "NAMESPACE")
    wide = options.output == "wide"
    header = [*(ns_cells[:1] if options.all_namespaces else []), name_cells[0],
              *(["STATUS"] if kind == "pod" else []), "MESHED", "SUCCESS", "RPS",
              "LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "TCP_CONN",
              *(["READ_BYTES/SEC", "WRITE_BYTES/SEC"] if wide else [])]
    lines = [header]
    for index, r in enumerate(rows):
        cells = [*([ns_cells[index + 1]] if options.all_namespaces else []),
                 name_cells[index + 1], *([r.status] if kind == "pod" else []), r.meshed]
        if r.has_data():
            total = r.success + r.failure
            cells += [f"{100 * r.success / total:.2f}%", f"{total / options.window_s:.1f}rps",
                      *(f"{r.latency.get(q, 0)}ms" for q in QUANTILES),
                      "-" if r.tcp is None else str(r.tcp)]
            cells += ["-", "-"] if wide else []
        else:
            cells += ["-"] * (6 + (2 if wide else 0))
        lines.append(cells)
    return table.render(lines)


def render_json(tables: list[tuple[str, list[Row]]], window_s: float) -> str:
    """printStatJSON: null stats for rows without traffic."""
    entries = []
    for kind, rows in tables:
        for r in rows:
            entry: Obj = {"namespace": r.namespace, "kind": kind, "name": r.name,
                          "meshed": r.meshed, "success": None, "rps": None,
                          "latency_ms_p50": None, "latency_ms_p95": None,
                          "latency_ms_p99": None}
            if r.has_data():
                total = r.success + r.failure
                entry.update({"success": r.success / total, "rps": total / window_s,
                              "latency_ms_p50": r.latency.get("0.5", 0),
                              "latency_ms_p95": r.latency.get("0.95", 0),
                              "latency_ms_p99": r.latency.get("0.99", 0)})
                if r.tcp is not None:
                    entry["tcp_open_connections"] = r.tcp
            entries.append(entry)
    return json.dumps(entries, indent=2) + "\n"


def stat(kube: Kube, options: Options, targets: list[Resource]) -> tuple[str, str]:
    """(stdout, stderr) of `linkerd viz stat`."""
    validate(options, targets)
    tables: dict[str, list[Row]] = {}
    for target in targets:
        tables.setdefault(target.kind, []).extend(rows_for(kube, options, target))
    found = [(kind, rows) for kind, rows in tables.items() if rows]
    if options.output == "json":
        return render_json(found, options.window_s), ""
    if not found:
        return "", "No traffic found.\n"
    prefix = len(found) > 1
    return "\n".join(render_table(kind, rows, options, prefix) for kind, rows in found), ""
