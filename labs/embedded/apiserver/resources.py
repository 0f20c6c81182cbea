"""Resource types the API server serves: built-in kinds plus those defined by CRDs.

A `ResourceType` carries everything discovery, routing, tables and validation need to know about a
kind, so the HTTP layer stays generic.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    type: str
    json_path: str
    priority: int = 0
    description: str = ""
    format: str = ""


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: frozenset[str] = frozenset()
    printer_columns: tuple[PrinterColumn, ...] = ()
    custom: bool = False  # defined by a CustomResourceDefinition (ObjectApi reads its schema)
    verbs: tuple[str, ...] = ALL_VERBS

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        """Storage key: one per group and plural, whatever the version."""
        return f"{self.group}/{self.plural}"

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def qualified(self) -> str:
        """`deployments.apps`, `pods`: how error messages name the resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


def _rt(
    group: str,
    kind: str,
    plural: str,
    namespaced: bool = True,
    short: tuple[str, ...] = (),
    sub: tuple[str, ...] = (),
    categories: tuple[str, ...] = (),
    version: str = "v1",
) -> ResourceType:
    return ResourceType(
        group=group,
        version=version,
        kind=kind,
        plural=plural,
        singular=kind.lower(),
        namespaced=namespaced,
        short_names=short,
        categories=categories,
        subresources=frozenset(sub),
    )


BUILTIN_TYPES: tuple[ResourceType, ...] = (
    _rt("", "Namespace", "namespaces", namespaced=False, short=("ns",), sub=("status", "finalize")),
    _rt("", "Node", "nodes", namespaced=False, short=("no",), sub=("status",)),
    _rt("", "Pod", "pods", short=("po",), sub=("status", "log", "exec", "portforward"),
        categories=("all",)),
    _rt("", "Service", "services", short=("svc",), sub=("status",), categories=("all",)),
    _rt("", "Endpoints", "endpoints", short=("ep",)),
    _rt("", "ServiceAccount", "serviceaccounts", short=("sa",)),
    _rt("", "ConfigMap", "configmaps", short=("cm",)),
    _rt("", "Secret", "secrets"),
    _rt("", "Event", "events", short=("ev",)),
    _rt("apps", "Deployment", "deployments", short=("deploy",), sub=("status", "scale"),
        categories=("all",)),
    _rt("apps", "ReplicaSet", "replicasets", short=("rs",), sub=("status", "scale"),
        categories=("all",)),
    _rt("networking.k8s.io", "Ingress", "ingresses", short=("ing",), sub=("status",)),
    _rt("networking.k8s.io", "IngressClass", "ingressclasses", namespaced=False),
    # Stored and served like any object (Istio's samples and charts carry them); the embedded
    # server authorizes every authenticated request (AlwaysAllow), see access_review.py.
    _rt("rbac.authorization.k8s.io", "ClusterRole", "clusterroles", namespaced=False),
    _rt("rbac.authorization.k8s.io", "ClusterRoleBinding", "clusterrolebindings",
        namespaced=False),
    _rt("rbac.authorization.k8s.io", "Role", "roles"),
    _rt("rbac.authorization.k8s.io", "RoleBinding", "rolebindings"),
    _rt("apiextensions.k8s.io", "CustomResourceDefinition", "customresourcedefinitions",
        namespaced=False, short=("crd", "crds"), sub=("status",), categories=("api-extensions",)),
)

class ResourceRegistry:
    """Lookup of served resource types by group/version/plural and by kind."""

    def __init__(self, types: Iterable[ResourceType] = BUILTIN_TYPES) -> None:
        self._by_path: dict[tuple[str, str, str], ResourceType] = {}
        for rt in types:
            self.add(rt)

    def add(self, rt: ResourceType) -> None:
        self._by_path[(rt.group, rt.version, rt.plural)] = rt

    def remove_group_resource(self, group: str, plural: str) -> None:
        for path in [p for p in self._by_path if p[0] == group and p[2] == plural]:
            del self._by_path[path]

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_path.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        group, _, version = api_version.rpartition("/")
        for rt in self._by_path.values():
            if rt.group == group and rt.version == version and rt.kind == kind:
                return rt
        return None

    def by_key(self, key: str) -> ResourceType | None:
        """The preferred (first registered) version of a storage key."""
        for rt in self._by_path.values():
            if rt.key == key:
                return rt
        return None

    def all(self) -> list[ResourceType]:
        return list(self._by_path.values())

    def group_versions(self) -> dict[str, list[str]]:
        """Group -> served versions, preferred first, in registration order."""
        groups: dict[str, list[str]] = {}
        for rt in self._by_path.values():
            versions = groups.setdefault(rt.group, [])
            if rt.version not in versions:
                versions.append(rt.version)
        return groups

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [rt for rt in self._by_path.values() if rt.group == group and rt.version == version]
