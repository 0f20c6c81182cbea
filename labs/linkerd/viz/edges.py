"""`linkerd viz edges`: who connects to whom, and whether with mTLS.

The query is linkerd/linkerd2 `viz/metrics-api/edges.go` `edgesQuery` over the proxies'
outbound `tcp_open_connections` (edges with no open connection are left out, as upstream), the
client identity is the source pod's (`k8s.PodIdentity`), and the table and JSON are
`viz/cmd/edges.go` `printEdgeTable` / `printEdgesJSON` (golden files
`viz/cmd/testdata/edges_*.golden`): SECURED `√` or the reason TLS is missing.
"""

from __future__ import annotations

import json
from typing import Any

from labs.linkerd.kube import Kube
from labs.linkerd.viz import prom, table
from labs.linkerd.viz.resources import Resource, ResourceError, label

Obj = dict[str, Any]
OK_STATUS = "\u221a"
FORMAT_MSG = {
    "disabled": "Disabled",
    "loopback": "Loopback",
    "no_authority_in_http_request": "No Authority In HTTP Request",
    "not_http": "Not HTTP",
    "not_provided_by_remote": "Not Provided By Remote",
    "not_provided_by_service_discovery": "Not Provided By Service Discovery",
}
HEADERS = ("SRC", "DST", "SRC_NS", "DST_NS", "CLIENT_ID", "SERVER_ID", "SECURED")


def validate(targets: list[Resource], output: str) -> None:
    """validateEdgesRequestInputs."""
    for target in targets:
        if target.name and target.kind != "namespace":
            raise ResourceError("Edges cannot be returned for a specific resource name; "
                                f"remove {target.name} from query")
        if target.kind == "service":
            raise ResourceError("Resource type is not supported: service")
    if output not in ("table", "json", "wide"):
        raise ResourceError("--output supports table, json and wide")


def pod_identity(pod: Obj, control_plane_ns: str) -> str:
    """k8s.PodIdentity: `<sa>.<ns>.serviceaccount.identity.<cp ns>.<trust domain>`."""
    meta = pod["metadata"]
    sa = (pod.get("spec") or {}).get("serviceAccountName") or "default"
    return f"{sa}.{meta['namespace']}.serviceaccount.identity.{control_plane_ns}.cluster.local"


def edges(kube: Kube, target: Resource, all_namespaces: bool,
          control_plane_ns: str) -> list[dict[str, str]]:
    """The edges of one resource type (Edges in edges.go)."""
    own = label(target.kind)
    query = (f'sum(tcp_open_connections{{direction="outbound"}}) by ({own}, dst_{own}, pod, '
             "server_id, namespace, dst_namespace, no_tls_reason)")
    pods = {(p["metadata"]["namespace"], p["metadata"]["name"]): p
            for p in kube.items("pods", None)}
    found: dict[tuple[str, str, str, str], dict[str, str]] = {}
    for sample in prom.run(kube, query):
        if float(sample["value"][1]) == 0.0:
            continue
        metric = sample["metric"]
        key = (metric.get(own, ""), metric.get("namespace", ""), metric.get(f"dst_{own}", ""),
               metric.get("dst_namespace", ""))
        if not all_namespaces and target.namespace not in (key[1], key[3]):
            continue
        pod = pods.get((key[1], metric.get("pod", "")))
        if key in found or pod is None:  # upstream skips a source pod it cannot find
            continue
        found[key] = {"src": key[0], "src_namespace": key[1], "dst": key[2],
                      "dst_namespace": key[3],
                      "client_id": pod_identity(pod, control_plane_ns),
                      "server_id": metric.get("server_id", ""),
                      "no_tls_reason": FORMAT_MSG.get(metric.get("no_tls_reason", ""), "")}
    return list(found.values())


def _short(identity: str) -> str:
    return ".".join(identity.split(".")[:2]) if identity else ""


def render(rows: list[dict[str, str]], output: str) -> tuple[str, str]:
    """(stdout, stderr) as writeEdgesToBuffer prints them."""
    shown = []
    for r in rows:
        msg = r["no_tls_reason"] or ("" if output == "json" else OK_STATUS)
        shown.append({**r, "client_id": _short(r["client_id"]),
                      "server_id": _short(r["server_id"]), "no_tls_reason": msg})
    shown.sort(key=lambda r: r["src_namespace"] + r["dst_namespace"] + r["src"] + r["dst"])
    if output == "json":
        return json.dumps(shown, indent=2, ensure_ascii=False) + "\n", ""
    if not shown:
        return "", "No edges found.\n"
    keys = ["src", "dst", "src_namespace", "dst_namespace",
            *(["client_id", "server_id"] if output == "wide" else []), "no_tls_reason"]
    headers = [h for h in HEADERS if output == "wide" or h not in ("CLIENT_ID", "SERVER_ID")]
    columns = [table.left([r[k] for r in shown], h) for k, h in zip(keys, headers, strict=True)]
    return table.render([list(line) for line in zip(*columns, strict=True)]), ""
