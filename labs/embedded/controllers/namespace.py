"""Namespace controller: empties a Terminating namespace, then lets it go.

Like pkg/controller/namespace: every namespaced resource type the server knows (custom resources
included) is deleted in the namespace — pods through normal graceful deletion, so the runtime stops
them — and the namespace is finalized once nothing is left. While it waits, the namespace's status
carries the same five conditions a real cluster shows under `kubectl describe namespace`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.errors import ApiError
from labs.embedded.apiserver.objects import now
from labs.embedded.apiserver.resources import ResourceType
from labs.embedded.apiserver.store import Event

from .base import Controller

Obj = dict[str, Any]

RECHECK_SECONDS = 1.0

# Condition type -> (reason, message) when all is well, in the order the real controller writes.
OK_CONDITIONS = {
    "NamespaceDeletionDiscoveryFailure": ("ResourcesDiscovered",
                                          "All resources successfully discovered"),
    "NamespaceDeletionGroupVersionParsingFailure": ("ParsedGroupVersions",
                                                    "All legacy kube types successfully parsed"),
    "NamespaceDeletionContentFailure": (
        "ContentDeleted", "All content successfully deleted, may be waiting on finalization"),
    "NamespaceContentRemaining": ("ContentRemoved", "All content successfully removed"),
    "NamespaceFinalizersRemaining": ("ContentHasNoFinalizers",
                                     "All content-preserving finalizers finished"),
}


class NamespaceController(Controller[str]):
    name = "namespace"

    def __init__(self, api: ObjectApi) -> None:
        super().__init__(api)
        self.ns_rt = self.resource("", "namespaces")
        self._terminating: set[str] = set()

    def initial_keys(self) -> Iterable[str]:
        for ns in self.api.store.list(self.ns_rt.key):
            if ns["metadata"].get("deletionTimestamp"):
                self._terminating.add(ns["metadata"]["name"])
                yield ns["metadata"]["name"]

    def keys_for(self, event: Event) -> Iterable[str]:
        meta = event.object["metadata"]
        if event.key == self.ns_rt.key:
            name = meta["name"]
            if event.type != "DELETED" and meta.get("deletionTimestamp"):
                self._terminating.add(name)
                return [name]
            self._terminating.discard(name)
            return []
        namespace = meta.get("namespace", "")
        if event.type == "DELETED" and namespace in self._terminating:
            return [namespace]
        return []

    def _namespaced_types(self) -> list[ResourceType]:
        """One served version per namespaced resource (objects are stored once per group)."""
        seen: dict[str, ResourceType] = {}
        for rt in self.api.registry.all():
            if rt.namespaced and rt.key not in seen and "delete" in rt.verbs:
                seen[rt.key] = rt
        return list(seen.values())

    def reconcile(self, key: str) -> float | None:
        name = key
        ns = self.api.find(self.ns_rt, "", name)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return None
        remaining: dict[str, int] = {}
        finalizers: dict[str, int] = {}
        failures: list[str] = []
        for rt in self._namespaced_types():
            for obj in self.api.store.list(rt.key, name):
                meta = obj["metadata"]
                if not meta.get("deletionTimestamp"):
                    try:
                        self.api.delete(rt, name, meta["name"], propagation="Background")
                    except ApiError as exc:
                        if exc.code not in (404, 409):
                            failures.append(f'{rt.qualified} "{meta["name"]}": {exc.message}')
            left = self.api.store.list(rt.key, name)
            if left:
                remaining[f"{rt.plural}.{rt.group}"] = len(left)
            for obj in left:
                for finalizer in obj["metadata"].get("finalizers") or []:
                    finalizers[finalizer] = finalizers.get(finalizer, 0) + 1
        if not remaining:
            self.api.finalize_namespace(name)
            return None
        self._set_conditions(ns, remaining, finalizers, failures)
        return RECHECK_SECONDS

    def _set_conditions(self, ns: Obj, remaining: dict[str, int], finalizers: dict[str, int],
                        failures: list[str]) -> None:
        problems: dict[str, tuple[str, str]] = {}
        if failures:
            problems["NamespaceDeletionContentFailure"] = (
                "ContentDeletionFailed",
                "Failed to delete all resource types, "
                f"{len(failures)} remaining: {', '.join(sorted(failures))}")
        problems["NamespaceContentRemaining"] = (
            "SomeResourcesRemain",
            "Some resources are remaining: " + ", ".join(
                sorted(f"{resource} has {count} resource instances"
                       for resource, count in remaining.items())))
        if finalizers:
            problems["NamespaceFinalizersRemaining"] = (
                "SomeFinalizersRemain",
                "Some content in the namespace has finalizers remaining: " + ", ".join(
                    sorted(f"{finalizer} in {count} resource instances"
                           for finalizer, count in finalizers.items())))
        status = ns.setdefault("status", {})
        old = {c.get("type"): c for c in status.get("conditions") or []}
        conditions = []
        for ctype, ok in OK_CONDITIONS.items():
            value = "True" if ctype in problems else "False"
            reason, message = problems.get(ctype, ok)
            previous = old.get(ctype) or {}
            stamp = previous.get("lastTransitionTime") if (
                previous.get("status"), previous.get("reason"), previous.get("message")) == (
                value, reason, message) else None
            conditions.append({"type": ctype, "status": value,
                               "lastTransitionTime": stamp or now(),
                               "reason": reason, "message": message})
        if conditions == status.get("conditions"):
            return
        status["conditions"] = conditions
        status["phase"] = "Terminating"
        self.api.update(self.ns_rt, "", ns["metadata"]["name"], ns, subresource="status")
