"""`metrics.k8s.io/v1beta1`, as metrics-server serves it: PodMetrics and NodeMetrics.

`kubectl top` finds the group in discovery, lists PodMetrics (label and field selectors as for
pods) or NodeMetrics, and prints their `usage`. Figures come from the runtime (`MetricsSource`):
CPU as a rate between two samples in nanocores, memory as the working set. Objects, quantities
(`123456n`, `21340Ki`), `timestamp` and `window` follow metrics-server's `pkg/api/pod.go` and
`pkg/api/node.go`; a pod without figures yet is left out of lists and is NotFound by name.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .api import ObjectApi
from .errors import ApiError, method_not_allowed

Obj = dict[str, Any]
GROUP, VERSION = "metrics.k8s.io", "v1beta1"
GROUP_VERSION = f"{GROUP}/{VERSION}"
RESOURCES = {"pods": ("PodMetrics", True), "nodes": ("NodeMetrics", False)}


@dataclass(frozen=True)
class Usage:
    nanocores: int
    memory_bytes: int


@dataclass(frozen=True)
class Window:
    """The two samples a rate was taken between: the later one's wall-clock time, and the
    seconds between them."""

    end: datetime.datetime
    seconds: float


class MetricsSource(Protocol):
    async def pod_usage(self, pods: list[Obj]) -> tuple[Window, dict[str, dict[str, Usage]]]:
        """Usage by pod uid, then container name, of the running containers of `pods`."""
        ...

    async def node_usage(self) -> tuple[Window, dict[str, Usage]]:
        """Usage by node name, of the nodes this runtime runs."""
        ...


def api_group() -> Obj:
    entry = {"groupVersion": GROUP_VERSION, "version": VERSION}
    return {"kind": "APIGroup", "apiVersion": "v1", "name": GROUP, "versions": [entry],
            "preferredVersion": entry}


def resource_list() -> Obj:
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GROUP_VERSION,
            "resources": [{"name": plural, "singularName": "", "namespaced": namespaced,
                           "kind": kind, "verbs": ["get", "list"]}
                          for plural, (kind, namespaced) in RESOURCES.items()]}


def cpu_quantity(nanocores: int) -> str:
    """resource.NewScaledQuantity(n, -9) in canonical form: `0`, `2`, `15m`, `123456n`."""
    for suffix, scale in (("", 10**9), ("m", 10**6), ("u", 10**3)):
        if nanocores % scale == 0:
            return f"{nanocores // scale}{suffix}"
    return f"{nanocores}n"


def memory_quantity(size: int) -> str:
    """resource.NewQuantity(bytes, BinarySI) in canonical form: `21340Ki`, `64Mi`, `1000`."""
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        scale = 1024 ** ("KMGTPE".index(suffix[0]) + 1)
        if size and size % scale == 0:
            return f"{size // scale}{suffix}"
    return str(size)


def go_duration(seconds: float) -> str:
    """metav1.Duration as JSON (Go's time.Duration.String), to the millisecond: `10.288s`."""
    millis = round(seconds * 1000)
    minutes, millis = divmod(millis, 60_000)
    secs = f"{millis / 1000:.3f}".rstrip("0").rstrip(".")
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def _usage(usage: Usage) -> Obj:
    return {"cpu": cpu_quantity(usage.nanocores), "memory": memory_quantity(usage.memory_bytes)}


def _meta(obj: Obj, stamp: str) -> Obj:
    meta = obj["metadata"]
    out = {"name": meta["name"], "creationTimestamp": stamp,
           "labels": dict(meta.get("labels") or {})}
    if meta.get("namespace"):
        out["namespace"] = meta["namespace"]
    return out


def _timing(window: Window) -> Obj:
    return {"timestamp": window.end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "window": go_duration(window.seconds)}


def pod_metrics(pod: Obj, containers: Mapping[str, Usage], window: Window, stamp: str) -> Obj:
    return {"kind": "PodMetrics", "apiVersion": GROUP_VERSION, "metadata": _meta(pod, stamp),
            **_timing(window),
            "containers": [{"name": name, "usage": _usage(usage)}
                           for name, usage in containers.items()]}


def node_metrics(node: Obj, usage: Usage, window: Window, stamp: str) -> Obj:
    return {"kind": "NodeMetrics", "apiVersion": GROUP_VERSION, "metadata": _meta(node, stamp),
            **_timing(window), "usage": _usage(usage)}


async def serve(api: ObjectApi, source: MetricsSource, method: str, rest: list[str],
                query: Mapping[str, str]) -> Obj:
    """The document for `/apis/metrics.k8s.io/v1beta1/<rest>`."""
    if not rest:
        return resource_list()
    if method != "GET":
        raise method_not_allowed(f"{method} is not allowed on {GROUP}: metrics are read-only "
                                 "(get, list)")
    namespace = ""
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    plural, name = rest[0], (rest[1] if len(rest) > 1 else "")
    if plural not in RESOURCES or len(rest) > 2 or (namespace and plural == "nodes"):
        raise ApiError(404, "NotFound", f"the server could not find the requested resource "
                       f"({'/'.join(rest)} in {GROUP_VERSION}): it serves pods and nodes")
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    rt = api.registry.lookup("", "v1", plural)
    assert rt is not None
    if name:  # the pod or node itself must exist: its own NotFound otherwise
        objects = [api.get(rt, namespace, name)]
    else:
        objects, _ = api.list(rt, namespace or None, query.get("labelSelector"),
                              query.get("fieldSelector"))
    objects.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
    items = await (_nodes(source, objects, stamp) if plural == "nodes"
                   else _pods(source, objects, stamp))
    kind = RESOURCES[plural][0]
    if name:
        if not items:  # metrics-server: "no metrics known for pod", answered as NotFound
            shown = f"{namespace}/{name}" if namespace else name
            raise ApiError(404, "NotFound", f'{kind.lower()}.{GROUP} "{shown}" not found',
                           {"name": shown, "group": GROUP, "kind": plural})
        return items[0]
    return {"kind": f"{kind}List", "apiVersion": GROUP_VERSION,
            "metadata": {"resourceVersion": ""}, "items": items}


async def _pods(source: MetricsSource, pods: list[Obj], stamp: str) -> list[Obj]:
    running = [p for p in pods if p.get("status", {}).get("phase") == "Running"]
    if not running:
        return []
    window, usage = await source.pod_usage(running)
    return [pod_metrics(pod, usage[uid], window, stamp) for pod in running
            if (uid := pod["metadata"].get("uid", "")) in usage and usage[uid]]


async def _nodes(source: MetricsSource, nodes: list[Obj], stamp: str) -> list[Obj]:
    if not nodes:
        return []
    window, usage = await source.node_usage()
    return [node_metrics(node, usage[node_name], window, stamp) for node in nodes
            if (node_name := node["metadata"]["name"]) in usage]
