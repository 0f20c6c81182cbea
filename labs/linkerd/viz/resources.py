"""Resource arguments as linkerd's viz commands take them (`deploy`, `deploy/web`,
`po web-1 web-2`), their Prometheus labels and the pods behind them.

Friendly names and labels follow linkerd/linkerd2 `pkg/k8s/k8s.go`
(`CanonicalResourceNameFromFriendlyName`, `KindToL5DLabel`) and `pkg/util/api_utils.go`
(`BuildResource(s)`): a deployment is `deployment` in the proxy metrics' labels, a Job
`k8s_job` (the Prometheus job renames it), a pod `pod`, a namespace `namespace`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from labs.linkerd.kube import Kube

Obj = dict[str, Any]
# canonical name -> (friendly names, Prometheus label, kubectl resource)
TYPES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "namespace": (("ns", "namespace", "namespaces"), "namespace", "namespaces"),
    "deployment": (("deploy", "deployment", "deployments"), "deployment", "deployments"),
    "pod": (("po", "pod", "pods"), "pod", "pods"),
    "statefulset": (("sts", "statefulset", "statefulsets"), "statefulset", "statefulsets"),
    "daemonset": (("ds", "daemonset", "daemonsets"), "daemonset", "daemonsets"),
    "replicaset": (("rs", "replicaset", "replicasets"), "replicaset", "replicasets"),
    "job": (("job", "jobs"), "k8s_job", "jobs"),
    "service": (("svc", "service", "services"), "service", "services"),
}
SHORT = {"namespace": "ns", "deployment": "deploy", "pod": "po", "statefulset": "sts",
         "daemonset": "ds", "replicaset": "rs", "job": "job", "service": "svc"}


class ResourceError(ValueError):
    """A resource argument upstream rejects; the message is upstream's."""


def canonical(friendly: str) -> str:
    for name, (friendly_names, _, _) in TYPES.items():
        if friendly.lower() in friendly_names:
            return name
    raise ResourceError(f"cannot find Kubernetes canonical name from friendly name [{friendly}]")


def label(kind: str) -> str:
    return TYPES[kind][1]


@dataclass(frozen=True)
class Resource:
    kind: str  # canonical
    name: str = ""  # "" = every resource of the kind
    namespace: str = ""


def build_resources(namespace: str, args: list[str]) -> list[Resource]:
    """`deploy`, `deploy/web`, `deploy web voting`, or several `type/name`s."""
    if not args:
        raise ResourceError("please specify a resource type")
    if len(args) == 1 or "/" in args[0]:
        if not all("/" in a for a in args[1:]):
            raise ResourceError("mixed resource types: use `type/name` for every argument, or "
                                "`type name...`")
        return [build_resource(namespace, a) for a in args]
    kind = canonical(args[0])
    return [Resource(kind, name, namespace) for name in args[1:]]


def build_resource(namespace: str, arg: str) -> Resource:
    kind, _, name = arg.partition("/")
    kind = canonical(kind)
    if kind == "namespace" and name:
        return Resource(kind, name, name)
    return Resource(kind, name, namespace)


def _matches(wanted: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def pods_of(kind: str, obj: Obj, pods: list[Obj]) -> list[Obj]:
    """The pods behind one object: itself, every pod of a namespace, or those its selector
    picks (an owner's `spec.selector.matchLabels`, a Service's `spec.selector`)."""
    meta = obj["metadata"]
    if kind == "pod":
        return [obj]
    if kind == "namespace":
        return [p for p in pods if p["metadata"].get("namespace") == meta["name"]]
    selector = (obj.get("spec") or {}).get("selector") or {}
    if kind != "service":
        selector = selector.get("matchLabels") or {}
    return [p for p in pods if p["metadata"].get("namespace") == meta.get("namespace")
            and _matches(selector, p["metadata"].get("labels") or {})]


def objects(kube: Kube, resource: Resource, all_namespaces: bool) -> list[Obj]:
    """The objects `resource` names (all of its kind when unnamed)."""
    kind = TYPES[resource.kind][2]
    if resource.kind == "namespace":
        found = kube.cluster_items(kind)
    else:
        found = kube.items(kind, None if all_namespaces else resource.namespace)
    return [o for o in found if not resource.name or o["metadata"]["name"] == resource.name]
