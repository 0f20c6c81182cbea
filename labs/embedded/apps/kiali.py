"""The Kiali addon's image (`kiali/kiali`) as a twin: Kiali's traffic graph API and a page
drawing it, computed from Istio's standard metrics in the cluster's Prometheus.

    GET /kiali/healthz
    GET /kiali/api/namespaces
    GET /kiali/api/namespaces/graph?namespaces=NS[,NS]&graphType=workload|app|versionedApp|
        service&duration=60s
    GET /kiali            the graph drawn (SVG), the same parameters

The graph answer is Kiali's "common" config (kiali/kiali v2.26.0,
graph/config/common/common.go, formerly graph/config/cytoscape/cytoscape.go):
`{"timestamp", "duration", "graphType", "elements": {"nodes": [{"data": NodeData}],
"edges": [{"data": EdgeData}]}}`, node and edge ids the SHA-256 of Kiali's node id
(graph/types.go `Id`), rates as strings with Kiali's precisions (graph/protocol.go: `http`,
`http3xx`…, `httpPercentErr`, `httpPercentReq`; node `httpIn`, `httpOut`…), responses by code
with their flags and hosts in percent, `isMTLS` the percentage of the edge's requests over
mutual TLS (as security_policy.go computes it). Bad parameters get Kiali's 400
`{"error": "Invalid graphType [x]"}` (graph/options.go).

Where this differs from Kiali: every edge comes from the destination proxies' reports
(`istio_requests_total{reporter="destination"}`, the side that knows the connection's security),
where Kiali reads outbound traffic from the sources' reports, so a request that never reached a
destination proxy is missing; TCP (`istio_tcp_*`), response times, throughput, health, idle and
dead nodes, boxes and service-entry nodes are not computed. Kiali lists namespaces from the
Kubernetes API; the twin has no credentials for it (the embedded API server admits one admin
token) and lists the namespaces Prometheus has seen: scrape targets and Istio's metrics.

    python -m labs.embedded.apps.kiali --port 20001
"""

from __future__ import annotations

import argparse
import hashlib
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from html import escape
from typing import Any, ClassVar
from urllib.parse import urlencode

from .addons import AddonHandler, Prometheus, PrometheusError, page, parse_duration
from .http import add_port_option, serve

Obj = dict[str, Any]
WEB_ROOT = "/kiali"  # the addon's config.yaml: server.web_root
GRAPH_TYPES = ("app", "service", "versionedApp", "workload")
DEFAULT_GRAPH_TYPE, DEFAULT_DURATION = "workload", "10m"  # graph/options.go
DEFAULT_CLUSTER = "Kubernetes"  # Istio's cluster name when none is configured
CONTROL_PLANE = "istio-system"  # config.yaml: external_services.istio.root_namespace
UNKNOWN = "unknown"
NAMESPACE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # a DNS-1123 label
GROUP_BY = ("source_cluster", "source_workload_namespace", "source_workload",
            "source_canonical_service", "source_canonical_revision", "source_principal",
            "destination_cluster", "destination_service_namespace", "destination_service",
            "destination_service_name", "destination_workload_namespace", "destination_workload",
            "destination_canonical_service", "destination_canonical_revision",
            "destination_principal", "request_protocol", "response_code",
            "grpc_response_status", "response_flags", "connection_security_policy")
NOTICE = ("meshlab's Kiali-compatible graph (not Kiali itself): who calls whom, computed from "
          "istio_requests_total in the cluster's Prometheus the way Kiali does; a padlock marks "
          "requests over mutual TLS.")


class BadRequest(ValueError):
    """A graph request Kiali answers 400; the message is Kiali's."""


@dataclass(frozen=True)
class GraphQuery:
    namespaces: tuple[str, ...]
    graph_type: str
    duration_s: int

    @classmethod
    def parse(cls, query: Mapping[str, list[str]]) -> GraphQuery:
        """graph/options.go's checks, in its order, with its messages."""
        duration = (query.get("duration") or [""])[0] or DEFAULT_DURATION
        try:
            seconds = parse_duration(duration)
        except ValueError:
            raise BadRequest(f"Invalid duration [{duration}]") from None
        graph_type = (query.get("graphType") or [""])[0] or DEFAULT_GRAPH_TYPE
        if graph_type not in GRAPH_TYPES:
            raise BadRequest(f"Invalid graphType [{graph_type}]")
        names = tuple(n.strip() for raw in query.get("namespaces") or [] for n in raw.split(",")
                      if n.strip())
        if not names:
            raise BadRequest("At least one namespace must be specified via the namespaces "
                             "query parameter.")
        for name in names:  # Kiali answers 403 for a namespace it cannot see; none can be this
            if not NAMESPACE_NAME.fullmatch(name):
                raise BadRequest(f"Invalid namespace [{name}]: a namespace name is lower-case "
                                 "letters, digits and '-', at most 63 characters")
        return cls(names, graph_type, max(1, int(seconds)))


@dataclass
class Node:
    key: str  # Kiali's node id (graph/types.go Id), hashed into the answer's `id`
    node_type: str
    cluster: str
    namespace: str
    workload: str = ""
    app: str = ""
    version: str = ""
    service: str = ""
    dest_services: dict[tuple[str, str, str], None] = field(default_factory=dict)
    rates: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(
        lambda: defaultdict(float)))  # protocol -> rate name -> requests/s


@dataclass
class Edge:
    source: str
    target: str
    protocol: str
    rates: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    mtls: float = 0.0
    # code -> ("flags" | "hosts") -> value -> requests/s
    responses: dict[str, dict[str, dict[str, float]]] = field(default_factory=lambda: defaultdict(
        lambda: {"flags": defaultdict(float), "hosts": defaultdict(float)}))
    principals: tuple[str, str] = ("", "")


def _ok(value: str) -> bool:
    return bool(value) and value != UNKNOWN


def node_key(cluster: str, namespace: str, workload: str, app: str, version: str,
             service: str, graph_type: str) -> tuple[str, str]:
    """Kiali's node id and node type (graph/types.go `Id`)."""
    if namespace == UNKNOWN and workload == UNKNOWN and app == UNKNOWN and not service:
        return f"{cluster}_unknown_source", UNKNOWN
    if workload == UNKNOWN and app == UNKNOWN and service == UNKNOWN:
        return f"svc_{cluster}_{namespace}_unknown", "service"
    if graph_type in ("workload", "service"):
        if not _ok(workload):
            return f"svc_{cluster}_{namespace}_{service if _ok(service) else UNKNOWN}", "service"
        return f"wl_{cluster}_{namespace}_{workload}", "workload"
    if _ok(app):
        if graph_type == "versionedApp":
            if _ok(workload):
                return f"vapp_{cluster}_{namespace}_{workload}", "app"
            if _ok(version):
                return f"vapp_{cluster}_{namespace}_{app}_{version}", "app"
        return f"app_{cluster}_{namespace}_{app}", "app"
    if _ok(workload):
        return f"wl_{cluster}_{namespace}_{workload}", "workload"
    return f"svc_{cluster}_{namespace}_{service}", "service"


class Graph:
    """Nodes and edges of one graph, built sample by sample."""

    def __init__(self, graph_type: str,
                 serves: Mapping[tuple[str, str], tuple[str, str, str]]) -> None:
        self.graph_type = graph_type
        self.serves = serves  # (namespace, workload) -> (cluster, namespace, service) it serves
        self.nodes: dict[str, Node] = {}
        self.edges: dict[tuple[str, str, str], Edge] = {}

    def node(self, cluster: str, namespace: str, workload: str, app: str, version: str,
             service: str = "") -> Node:
        key, kind = node_key(cluster, namespace, workload, app, version, service,
                             self.graph_type)
        if key not in self.nodes:
            keep_version = self.graph_type in ("versionedApp", "workload")
            self.nodes[key] = Node(
                key, kind, cluster, namespace,
                workload=workload if kind == "workload" or key.startswith("vapp_") else "",
                app=app if _ok(app) else "",
                version=version if _ok(version) and keep_version else "",
                service=service if kind == "service" else "")
        return self.nodes[key]

    def edge(self, source: Node, target: Node, protocol: str) -> Edge:
        found = self.edges.get((source.key, target.key, protocol))
        if found is None:
            found = self.edges[(source.key, target.key, protocol)] = Edge(
                source.key, target.key, protocol)
        return found

    def add(self, labels: Mapping[str, str], rate: float) -> None:
        """One series of `istio_requests_total` by GROUP_BY, as requests per second. In a
        service graph the callee is the service, and a caller that serves a service itself
        is that service (Kiali's service graph: services only, traffic generators kept)."""
        def get(name: str) -> str:
            return labels.get(name) or UNKNOWN
        protocol = "grpc" if get("request_protocol") == "grpc" else "http"
        src_cluster = get("source_cluster") if _ok(get("source_cluster")) else DEFAULT_CLUSTER
        served = self.serves.get((get("source_workload_namespace"), get("source_workload")))
        if self.graph_type == "service" and served is not None:
            source = self.node(*served[:2], UNKNOWN, UNKNOWN, UNKNOWN, served[2])
        else:
            source = self.node(src_cluster, get("source_workload_namespace"),
                               get("source_workload"), get("source_canonical_service"),
                               get("source_canonical_revision"))
        cluster = get("destination_cluster") if _ok(get("destination_cluster")) else (
            DEFAULT_CLUSTER)
        service = get("destination_service_name")
        if self.graph_type == "service":
            target = self.node(cluster, get("destination_service_namespace"), UNKNOWN, UNKNOWN,
                               UNKNOWN, service)
        else:
            namespace = get("destination_workload_namespace")
            if not _ok(namespace):
                namespace = get("destination_service_namespace")
            target = self.node(cluster, namespace, get("destination_workload"),
                               get("destination_canonical_service"),
                               get("destination_canonical_revision"), service)
        if target.node_type != "service":
            target.dest_services[(cluster, get("destination_service_namespace"), service)] = None
        edge = self.edge(source, target, protocol)
        edge.principals = (get("source_principal"), get("destination_principal"))
        code = get("response_code") if protocol == "http" else get("grpc_response_status")
        for name in _rate_names(protocol, code):
            edge.rates[name] += rate
        if get("connection_security_policy") == "mutual_tls":
            edge.mtls += rate
        detail = edge.responses[code]
        detail["flags"][get("response_flags")] += rate
        detail["hosts"][get("destination_service")] += rate
        for name in _rate_names(protocol, code, node="In"):
            target.rates[protocol][name] += rate
        source.rates[protocol][f"{protocol}Out"] += rate


def _rate_names(protocol: str, code: str, node: str = "") -> list[str]:
    """The rates a request adds to (graph/protocol.go): the total, and its class."""
    names = [f"{protocol}{node}"]
    if protocol == "grpc":
        if code in ("", "-", UNKNOWN):
            names.append(f"grpc{node}NoResponse")
        elif code != "0":
            names.append(f"grpc{node}Err")
    elif code == "0":
        names.append(f"http{node}NoResponse")
    elif code[:1] in ("3", "4", "5") and len(code) == 3:
        names.append(f"http{node}{code[0]}xx")
    return names


def number(value: float, precision: int = 2) -> str:
    """A rate or percentage as Kiali writes it (`%.*f`), never `-0.00`."""
    text = f"{value:.{precision}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


PRECISION_1 = frozenset({"httpPercentErr", "httpPercentReq", "grpcPercentErr", "grpcPercentReq"})


def _edge_data(edge: Edge, graph: Graph) -> Obj:
    """common.go convertEdge + addEdgeTelemetry."""
    source, target = _hash(edge.source), _hash(edge.target)
    total = edge.rates.get(edge.protocol, 0.0)
    rates = {name: number(value) for name, value in edge.rates.items() if value > 0}
    errors = sum(v for k, v in edge.rates.items()
                 if k.endswith(("NoResponse", "4xx", "5xx", "Err")))
    if total > 0 and errors > 0:
        rates[f"{edge.protocol}PercentErr"] = number(errors / total * 100, 1)
    out = graph.nodes[edge.source].rates[edge.protocol].get(f"{edge.protocol}Out", 0.0)
    if total > 0 and out > 0:
        rates[f"{edge.protocol}PercentReq"] = number(total / out * 100, 1)
    data: Obj = {"id": _hash(f"{source}.{target}.{edge.protocol}"), "source": source,
                 "target": target}
    if _ok(edge.principals[1]):
        data["destPrincipal"] = edge.principals[1]
    if edge.mtls > 0 and total > 0:
        data["isMTLS"] = f"{edge.mtls / total * 100:.0f}"
    if _ok(edge.principals[0]):
        data["sourcePrincipal"] = edge.principals[0]
    data["traffic"] = {"protocol": edge.protocol, "rates": rates, "responses": {
        code: {"flags": {f: number(v / total * 100, 1) for f, v in detail["flags"].items()},
               "hosts": {h: number(v / total * 100, 1) for h, v in detail["hosts"].items()}}
        for code, detail in edge.responses.items()} if total > 0 else {}}
    return data


def _node_data(node: Node, namespaces: Iterable[str], roots: set[str]) -> Obj:
    """common.go buildConfig (the fields this graph knows) + addNodeTelemetry."""
    data: Obj = {"id": _hash(node.key), "nodeType": node.node_type, "cluster": node.cluster,
                 "namespace": node.namespace}
    data.update({k: v for k, v in (("workload", node.workload), ("app", node.app),
                                   ("version", node.version), ("service", node.service)) if v})
    if node.dest_services:
        data["destServices"] = [{"cluster": c, "namespace": n, "name": s}
                                for c, n, s in sorted(node.dest_services)]
    traffic = [{"protocol": protocol, "rates": {k: number(v) for k, v in rates.items() if v > 0}}
               for protocol, rates in sorted(node.rates.items()) if any(rates.values())]
    if traffic:
        data["traffic"] = traffic
    data["healthData"] = None
    if node.namespace not in namespaces and node.node_type != UNKNOWN:
        data["isOutside"] = True
    if node.key in roots:
        data["isRoot"] = True
    return data


def _sort_key(data: Obj) -> tuple[str, ...]:
    return tuple(str(data.get(k, "")) for k in ("cluster", "namespace", "app", "version",
                                                  "service", "workload"))


def graph_config(samples: Iterable[tuple[Mapping[str, str], float]], query: GraphQuery,
                 at: float) -> Obj:
    """Kiali's graph answer for the samples of `istio_requests_total` by GROUP_BY."""
    samples = [(labels, rate) for labels, rate in samples if rate > 0]
    serves = {}
    for labels, _ in sorted(samples, key=lambda s: sorted(s[0].items())):
        serves.setdefault((labels.get("destination_workload_namespace", UNKNOWN),
                           labels.get("destination_workload", UNKNOWN)),
                          (labels.get("destination_cluster") or DEFAULT_CLUSTER,
                           labels.get("destination_service_namespace", UNKNOWN),
                           labels.get("destination_service_name", UNKNOWN)))
    graph = Graph(query.graph_type, serves)
    for labels, rate in samples:
        graph.add(labels, rate)
    called = {e.target for e in graph.edges.values()}
    roots = {e.source for e in graph.edges.values() if e.source not in called}
    nodes = sorted((_node_data(n, query.namespaces, roots) for n in graph.nodes.values()),
                   key=_sort_key)
    edges = sorted((_edge_data(e, graph) for e in graph.edges.values()),
                   key=lambda d: (d["source"], d["target"], d["traffic"]["protocol"]))
    return {"timestamp": int(at), "duration": query.duration_s, "graphType": query.graph_type,
            "elements": {"nodes": [{"data": n} for n in nodes],
                         "edges": [{"data": e} for e in edges]}}


def requests_samples(prom: Prometheus, query: GraphQuery, at: float
                     ) -> list[tuple[dict[str, str], float]]:
    """Requests into the namespaces and out of them, as the destination proxies reported them
    (one series per label set, whichever query found it)."""
    regex = "|".join(query.namespaces)
    found: dict[tuple[tuple[str, str], ...], tuple[dict[str, str], float]] = {}
    for where in (f'destination_service_namespace=~"{regex}"',
                  f'source_workload_namespace=~"{regex}"'):
        promql = (f'sum(rate(istio_requests_total{{reporter="destination",{where}}}'
                  f"[{query.duration_s}s])) by ({','.join(GROUP_BY)}) > 0")
        for item in prom.instant(promql, at):
            labels = dict(item["metric"])
            found[tuple(sorted(labels.items()))] = (labels, float(item["value"][1]))
    return list(found.values())


def namespaces(prom: Prometheus, at: float) -> list[Obj]:
    """The namespaces Prometheus has seen (scrape targets' `namespace`, Istio's workload and
    service namespaces), with the control plane's, as Kiali's namespace objects."""
    names = {CONTROL_PLANE}
    for promql, label in (("count by (namespace) (up)", "namespace"),
                          *((f"count by ({lbl}) (istio_requests_total)", lbl) for lbl in (
                              "source_workload_namespace", "destination_service_namespace"))):
        names.update(i["metric"].get(label, "") for i in prom.instant(promql, at))
    return [{"name": n, "cluster": DEFAULT_CLUSTER, "isAmbient": False,
             "isControlPlane": n == CONTROL_PLANE, "labels": {}, "annotations": {},
             "revision": ""} for n in sorted(names - {"", UNKNOWN})]


# -- the page ---------------------------------------------------------------------------------

BOX_W, BOX_H, COLUMN_W, ROW_H = 170, 44, 330, 90


def _padlock(x: float, y: float, colour: str) -> str:
    """A padlock drawn in SVG (an emoji needs a font the browser may lack)."""
    return (f'<g class="padlock" transform="translate({x:.0f},{y:.0f})"><path d="M2,6 V4 '
            f'a3,3 0 0 1 6,0 V6" fill="none" stroke="{colour}" stroke-width="1.5"/>'
            f'<rect x="0" y="6" width="10" height="7" rx="1" fill="{colour}"/></g>')


def _label(node: Obj) -> str:
    if node["nodeType"] == UNKNOWN:
        return UNKNOWN
    if node["nodeType"] == "service":
        return node.get("service", "")
    if node["nodeType"] == "app":
        return f"{node.get('app', '')} {node.get('version', '')}".strip()
    return node.get("workload", "")


def _columns(nodes: list[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    """Each node's column: the longest call chain reaching it (cycles cut after len(nodes))."""
    column = dict.fromkeys(nodes, 0)
    for _ in range(len(nodes)):
        changed = False
        for src, dst in edges:
            if src != dst and column[dst] < column[src] + 1 <= len(nodes):
                column[dst] = column[src] + 1
                changed = True
        if not changed:
            break
    return column


def _edge_colour(rates: Mapping[str, str], protocol: str) -> str:
    """Kiali's edge colours: red at 20 % errors or more, orange above 0.1 %, else green."""
    errors = float(rates.get(f"{protocol}PercentErr", "0"))
    return "#c9190b" if errors >= 20 else "#ec7a08" if errors > 0.1 else "#3e8635"


def _edge_svg(edge: Obj, source: tuple[float, float], target: tuple[float, float]
              ) -> tuple[str, str]:
    """An edge's arrow, and its label (drawn over the boxes, so a long one stays readable)."""
    traffic = edge["traffic"]
    rates, protocol = traffic.get("rates", {}), traffic["protocol"]
    (x1, y1), (x2, y2) = source, target
    start = (x1 + BOX_W, y1 + BOX_H / 2)
    end = (x2, y2 + BOX_H / 2) if x2 > x1 else (x2 + BOX_W / 2, y2 + (0 if y2 > y1 else BOX_H))
    label = f"{rates.get(protocol, '0')} rps"
    if rates.get(f"{protocol}PercentErr"):
        label += f" · {rates[f'{protocol}PercentErr']}% err"
    colour = _edge_colour(rates, protocol)
    at = (start[0] + (end[0] - start[0]) / 3, start[1] + (end[1] - start[1]) / 3 - 6)
    lock = _padlock(at[0] - 14, at[1] - 11, colour) if edge.get("isMTLS") else ""
    mtls = f" (mutual TLS: {edge['isMTLS']} %)" if edge.get("isMTLS") else ""
    ends = f'data-source="{edge["source"]}" data-target="{edge["target"]}"'
    arrow = (f'<g class="edge" {ends}><line x1="{start[0]:.0f}" y1="{start[1]:.0f}" '
             f'x2="{end[0]:.0f}" y2="{end[1]:.0f}" stroke="{colour}" stroke-width="2" '
             'marker-end="url(#arrow)"/></g>')
    text = (f'<g class="edge-label" {ends} data-mtls="{escape(edge.get("isMTLS", "0"))}">{lock}'
            f'<text x="{at[0]:.0f}" y="{at[1]:.0f}" fill="{colour}" stroke="#fff" '
            f'stroke-width="3" paint-order="stroke">{escape(label)}</text>'
            f"<title>{escape(protocol)} {escape(label)}{escape(mtls)}</title></g>")
    return arrow, text


def _node_svg(node: Obj, x: float, y: float) -> str:
    fill = "#f0f0f0" if node.get("isOutside") or node["nodeType"] == UNKNOWN else "#e7f1fa"
    corner = BOX_H / 2 if node["nodeType"] == "app" else 4
    return (f'<g class="node" data-id="{node["id"]}" data-type="{node["nodeType"]}">'
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="{corner}" '
            f'fill="{fill}" stroke="#0066cc"/><text x="{x + BOX_W / 2}" y="{y + 18}" '
            f'text-anchor="middle" font-weight="bold">{escape(_label(node))}</text>'
            f'<text x="{x + BOX_W / 2}" y="{y + 34}" text-anchor="middle" fill="#555">'
            f"{escape(node['nodeType'])} · {escape(node['namespace'])}</text></g>")


def graph_svg(config: Obj) -> str:
    """The graph as SVG: callers left of callees, each edge labelled with its rate, its error
    percentage when there are errors, and a padlock when its requests use mutual TLS."""
    nodes = {n["data"]["id"]: n["data"] for n in config["elements"]["nodes"]}
    edges = [e["data"] for e in config["elements"]["edges"]]
    column = _columns(list(nodes), [(e["source"], e["target"]) for e in edges])
    rows: dict[int, list[str]] = defaultdict(list)
    for node_id in sorted(nodes, key=lambda i: (_label(nodes[i]), nodes[i]["namespace"])):
        rows[column[node_id]].append(node_id)
    place = {i: (40.0 + c * COLUMN_W, 40.0 + r * ROW_H)
             for c, members in rows.items() for r, i in enumerate(members)}
    width = 80 + (max(rows) + 1) * COLUMN_W
    height = 80 + max(len(m) for m in rows.values()) * ROW_H
    drawn = [_edge_svg(e, place[e["source"]], place[e["target"]]) for e in edges]
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            'font-family="sans-serif" font-size="12"><defs><marker id="arrow" viewBox="0 0 10 '
            '10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto">'
            '<path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>'
            + "".join(arrow for arrow, _ in drawn)
            + "".join(_node_svg(nodes[i], *xy) for i, xy in place.items())
            + "".join(label for _, label in drawn) + "</svg>")


def graph_page(query: Mapping[str, list[str]], prom: Prometheus) -> tuple[int, str]:
    """The UI: the form, then the graph (or why there is none)."""
    now = time.time()
    chosen = dict(query)
    if not chosen.get("namespaces"):
        seen = [n["name"] for n in namespaces(prom, now) if not n["isControlPlane"]]
        chosen["namespaces"] = [",".join(seen)] if seen else []
    form_values = {k: (chosen.get(k) or [""])[0] for k in ("namespaces", "graphType", "duration")}
    current = form_values["graphType"] or DEFAULT_GRAPH_TYPE
    types = "".join(f'<option{" selected" if t == current else ""}>{t}</option>'
                    for t in GRAPH_TYPES)
    form = (f'<form method="get" action="{WEB_ROOT}"><label>namespaces <input name="namespaces" '
            f'value="{escape(form_values["namespaces"])}" size="40"></label><label>graph '
            f'<select name="graphType">{types}</select></label><label>last <input '
            f'name="duration" value="{escape(form_values["duration"] or DEFAULT_DURATION)}" '
            'size="5"></label><button type="submit">Refresh</button></form>')
    if not chosen.get("namespaces"):
        return 200, page("Kiali graph — meshlab", NOTICE,
                         f'{form}<p class="empty">No namespace is selected, and Prometheus has '
                         "seen none with Istio traffic yet: type a namespace above.</p>")
    try:
        graph_query = GraphQuery.parse(chosen)
    except BadRequest as error:
        return 400, page("Kiali graph — meshlab", NOTICE, f"{form}<p>{escape(str(error))}</p>")
    config = graph_config(requests_samples(prom, graph_query, now), graph_query, now)
    api = f"{WEB_ROOT}/api/namespaces/graph?" + urlencode(
        {"namespaces": ",".join(graph_query.namespaces), "graphType": graph_query.graph_type,
         "duration": f"{graph_query.duration_s}s"})
    drawing = (graph_svg(config) if config["elements"]["nodes"] else
               f'<p class="empty">no traffic in the last {graph_query.duration_s} s in namespace '
               f"{escape(', '.join(graph_query.namespaces))}: send some requests, then refresh"
               "</p>")
    return 200, page("Kiali graph — meshlab", NOTICE,
                     f'{form}{drawing}<p>JSON: <a href="{escape(api)}">{escape(api)}</a></p>')


class KialiHandler(AddonHandler):
    name = "kiali"
    prometheus: ClassVar[Prometheus]  # set by main, from the container's environment

    def route(self) -> None:
        path = self.url_path.rstrip("/")
        try:
            if path == f"{WEB_ROOT}/healthz":
                self.reply(200, "")
            elif path == f"{WEB_ROOT}/api/namespaces":
                self.reply_json(200, namespaces(self.prometheus, time.time()))
            elif path == f"{WEB_ROOT}/api/namespaces/graph":
                self._graph()
            elif path in ("", WEB_ROOT, f"{WEB_ROOT}/console/graph/namespaces"):
                status, html = graph_page(self.query, self.prometheus)
                self.reply(status, html, "text/html; charset=utf-8")
            else:
                self.reply(404, "404 page not found\n")
        except PrometheusError as error:
            if path.startswith(f"{WEB_ROOT}/api/"):
                self.reply_json(503, {"error": str(error)})
            else:
                self.reply(503, page("Kiali graph — meshlab", NOTICE,
                                     f"<p>{escape(str(error))}</p>"), "text/html; charset=utf-8")


    def _graph(self) -> None:
        try:
            query = GraphQuery.parse(self.query)
        except BadRequest as error:
            self.reply_json(400, {"error": str(error)})
            return
        now = time.time()
        self.reply_json(200, graph_config(requests_samples(self.prometheus, query, now),
                                          query, now))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_port_option(parser)
    args = parser.parse_args()
    KialiHandler.prometheus = Prometheus.from_env()
    serve(KialiHandler, args.port or [20001], "kiali twin")


if __name__ == "__main__":
    main()
