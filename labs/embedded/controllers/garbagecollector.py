"""Garbage collector: objects whose owners are all gone are deleted (background cascade).

The API server handles `propagationPolicy: Orphan` and `Foreground` itself at delete time; what
is left is the default, background deletion: the owner goes at once and its dependents follow
here. An object with some owners left keeps living and loses only its dangling references, as in
pkg/controller/garbagecollector. The collector keeps an index of owner references fed by watch
events, so it never scans the whole store per deletion; at start-up it collects the dependents
whose owners vanished while the daemon was down.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.errors import ApiError
from labs.embedded.apiserver.resources import ResourceType
from labs.embedded.apiserver.store import Event

from .base import Controller

Obj = dict[str, Any]
ObjKey = tuple[str, str, str]  # (resource key, namespace, name)


def _key(resource: str, obj: Obj) -> ObjKey:
    meta = obj["metadata"]
    return resource, meta.get("namespace", ""), meta["name"]


def _owner_uids(obj: Obj) -> frozenset[str]:
    return frozenset(ref.get("uid", "") for ref in obj["metadata"].get("ownerReferences") or [])


class GarbageCollector(Controller[ObjKey]):
    name = "garbagecollector"
    resync_seconds = 120.0

    def __init__(self, api: ObjectApi) -> None:
        super().__init__(api)
        self._uid_of: dict[ObjKey, str] = {}
        self._live_uids: set[str] = set()
        self._owners_of: dict[ObjKey, frozenset[str]] = {}
        self._dependents: dict[str, set[ObjKey]] = {}

    # -- the owner index ---------------------------------------------------------------------
    def _index(self, key: ObjKey, obj: Obj) -> bool:
        """Record the object; True when its owner references changed."""
        uid = obj["metadata"].get("uid", "")
        previous_uid = self._uid_of.get(key)
        if previous_uid != uid:
            if previous_uid is not None:
                self._live_uids.discard(previous_uid)
            self._uid_of[key] = uid
            self._live_uids.add(uid)
        owners = _owner_uids(obj)
        previous = self._owners_of.get(key, frozenset())
        if owners == previous:
            return False
        for owner in previous - owners:
            self._dependents.get(owner, set()).discard(key)
        for owner in owners - previous:
            self._dependents.setdefault(owner, set()).add(key)
        if owners:
            self._owners_of[key] = owners
        else:
            self._owners_of.pop(key, None)
        return True

    def _forget(self, key: ObjKey) -> str | None:
        uid = self._uid_of.pop(key, None)
        if uid is not None:
            self._live_uids.discard(uid)
        for owner in self._owners_of.pop(key, frozenset()):
            self._dependents.get(owner, set()).discard(key)
        return uid

    def _has_dangling_owner(self, key: ObjKey) -> bool:
        return any(uid not in self._live_uids for uid in self._owners_of.get(key, ()))

    # -- controller hooks --------------------------------------------------------------------
    def initial_keys(self) -> Iterable[ObjKey]:
        if not self._uid_of:
            resources = list(self.api.store.resource_keys())
            for resource in resources:
                for obj in self.api.store.list(resource):
                    self._index(_key(resource, obj), obj)
        return [key for key in self._owners_of if self._has_dangling_owner(key)]

    def keys_for(self, event: Event) -> Iterable[ObjKey]:
        key = _key(event.key, event.object)
        if event.type == "DELETED":
            uid = self._forget(key)
            return list(self._dependents.pop(uid, set())) if uid else []
        if self._index(key, event.object) and self._has_dangling_owner(key):
            return [key]
        return []

    def reconcile(self, key: ObjKey) -> float | None:
        resource, namespace, name = key
        rt = self.api.registry.by_key(resource)
        obj = self.api.store.get(resource, namespace, name)
        if rt is None or obj is None or obj["metadata"].get("deletionTimestamp"):
            return None
        refs = obj["metadata"].get("ownerReferences") or []
        solid = [ref for ref in refs if self._owner_exists(ref, namespace)]
        if len(solid) == len(refs):
            return None
        if not solid:
            self.log.info("deleting %s %s/%s: its owners are gone", rt.kind, namespace, name)
            try:
                self.api.delete(rt, namespace, name, propagation="Background",
                                precondition_uid=obj["metadata"]["uid"])
            except ApiError as exc:
                if exc.code != 404:
                    raise
            return None
        obj["metadata"]["ownerReferences"] = solid
        self.api.update(rt, namespace, name, obj)
        return None

    def _owner_exists(self, ref: Obj, namespace: str) -> bool:
        owner_rt = self._owner_type(ref)
        if owner_rt is None:
            return False  # its kind is no longer served (a deleted CRD): the owner is gone
        if owner_rt.namespaced and not namespace:
            return False  # a cluster-scoped object cannot be owned by a namespaced one
        owner = self.api.store.get(owner_rt.key, namespace if owner_rt.namespaced else "",
                                   ref.get("name", ""))
        return owner is not None and owner["metadata"].get("uid") == ref.get("uid")

    def _owner_type(self, ref: Obj) -> ResourceType | None:
        api_version, kind = ref.get("apiVersion", ""), ref.get("kind", "")
        rt = self.api.registry.by_kind(api_version, kind)
        if rt is not None:
            return rt
        group = api_version.rpartition("/")[0]
        return next((t for t in self.api.registry.all() if t.group == group and t.kind == kind),
                    None)
