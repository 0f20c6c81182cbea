"""ReplicaSet controller: keeps `spec.replicas` pods of the template running and reports status.

Follows pkg/controller/replicaset: pods are claimed by controllerRef (orphans matching the selector
are adopted, owned pods whose labels stop matching are released, so `kubectl label pod x app-`
takes a pod out of service and a replacement appears); surplus pods are deleted least valuable
first (unscheduled, pending, not ready, ready for the shortest time, newest); terminating pods
never count as replicas.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterable
from typing import Any

from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.errors import ApiError
from labs.embedded.apiserver.objects import controller_uid, now, owner_reference, parse_time
from labs.embedded.apiserver.selectors import labels_match
from labs.embedded.apiserver.store import Event

from . import pods as podutil
from .base import Controller, owner_key

Obj = dict[str, Any]
Key = tuple[str, str]

COMPONENT = "replicaset-controller"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
_PHASE_ORDER = {"Pending": 0, "Unknown": 1, "Running": 2}


def _epoch(stamp: str | None) -> float:
    """Seconds since 1970; a missing time counts as the most recent."""
    return parse_time(stamp).timestamp() if stamp else float("inf")


def deletion_order(pod: Obj) -> tuple[Any, ...]:
    """Sort key: pods that sort first are deleted first (ActivePodsWithRanks in the real one)."""
    ready = podutil.ready_condition(pod)
    ready_since = ready.get("lastTransitionTime") if ready and podutil.is_ready(pod) else None
    try:
        cost = int((pod["metadata"].get("annotations") or {}).get(DELETION_COST, 0))
    except ValueError:
        cost = 0
    return (
        1 if pod.get("spec", {}).get("nodeName") else 0,
        _PHASE_ORDER.get(podutil.phase(pod), 0),
        1 if podutil.is_ready(pod) else 0,
        cost,
        -_epoch(ready_since) if ready_since else float("-inf"),
        -podutil.restart_count(pod),
        -_epoch(pod["metadata"].get("creationTimestamp")),
    )


def pod_from_template(rs: Obj) -> Obj:
    template = rs["spec"].get("template", {})
    tmeta = template.get("metadata", {})
    meta: Obj = {
        "generateName": f"{rs['metadata']['name']}-",
        "namespace": rs["metadata"]["namespace"],
        "labels": dict(tmeta.get("labels") or {}),
        "ownerReferences": [owner_reference(rs)],
    }
    for field in ("annotations", "finalizers"):
        if tmeta.get(field):
            meta[field] = copy.deepcopy(tmeta[field])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": copy.deepcopy(template.get("spec", {}))}


class ReplicaSetController(Controller[tuple[str, str]]):
    name = "replicaset"

    def __init__(self, api: ObjectApi) -> None:
        super().__init__(api)
        self.rs_rt = self.resource("apps", "replicasets")
        self.pod_rt = self.resource("", "pods")

    def initial_keys(self) -> Iterable[tuple[str, str]]:
        for rs in self.api.store.list(self.rs_rt.key):
            yield rs["metadata"]["namespace"], rs["metadata"]["name"]

    def keys_for(self, event: Event) -> Iterable[tuple[str, str]]:
        meta = event.object["metadata"]
        if event.key == self.rs_rt.key:
            return [(meta["namespace"], meta["name"])]
        if event.key == self.pod_rt.key:
            owner = owner_key(event.object, "ReplicaSet")
            if owner is not None:
                return [owner]
            if (event.type != "DELETED" and meta.get("labels")
                    and controller_uid(event.object) is None):
                return self._selecting(event.object)  # an orphan some ReplicaSet may adopt
        return []

    def _selecting(self, pod: Obj) -> list[Key]:
        namespace = pod["metadata"]["namespace"]
        labels = pod["metadata"].get("labels") or {}
        return [(namespace, rs["metadata"]["name"])
                for rs in self.api.store.list(self.rs_rt.key, namespace)
                if labels_match(rs["spec"].get("selector"), labels)]

    # -- reconcile ---------------------------------------------------------------------------
    def reconcile(self, key: tuple[str, str]) -> float | None:
        namespace, name = key
        rs = self.api.find(self.rs_rt, namespace, name)
        if rs is None:
            return None
        active, terminating = self._claim_pods(rs)
        error: str | None = None
        diff = len(active) - int(rs["spec"].get("replicas", 1))
        if not rs["metadata"].get("deletionTimestamp") and diff != 0:
            error = self._create(rs, -diff) if diff < 0 else self._delete(rs, active, diff)
            active, terminating = self._claim_pods(rs)
        return self._update_status(rs, active, terminating, error, diff)

    def _claim_pods(self, rs: Obj) -> tuple[list[Obj], list[Obj]]:
        """The pods this ReplicaSet controls, adopting and releasing like ClaimPods."""
        uid = rs["metadata"]["uid"]
        selector = rs["spec"].get("selector")
        rs_deleting = bool(rs["metadata"].get("deletionTimestamp"))
        active: list[Obj] = []
        terminating: list[Obj] = []
        pods, _ = self.api.list(self.pod_rt, rs["metadata"]["namespace"])
        for pod in pods:
            if podutil.phase(pod) in podutil.TERMINAL_PHASES:
                continue
            refs = pod["metadata"].get("ownerReferences") or []
            controller = next((r for r in refs if r.get("controller")), None)
            matches = labels_match(selector, pod["metadata"].get("labels") or {})
            if controller is None:
                if rs_deleting or not matches or podutil.is_terminating(pod):
                    continue
                pod = self._set_owner_refs(pod, [*refs, owner_reference(rs)])
            elif controller.get("uid") != uid:
                continue
            elif not matches and not podutil.is_terminating(pod):
                self._set_owner_refs(pod, [r for r in refs if r.get("uid") != uid])
                continue
            (terminating if podutil.is_terminating(pod) else active).append(pod)
        return active, terminating

    def _set_owner_refs(self, pod: Obj, refs: list[Obj]) -> Obj:
        pod = copy.deepcopy(pod)
        if refs:
            pod["metadata"]["ownerReferences"] = refs
        else:
            pod["metadata"].pop("ownerReferences", None)
        meta = pod["metadata"]
        return self.api.update(self.pod_rt, meta["namespace"], meta["name"], pod).object

    def _create(self, rs: Obj, count: int) -> str | None:
        for _ in range(count):
            try:
                pod = self.api.create(self.pod_rt, rs["metadata"]["namespace"],
                                      pod_from_template(rs)).object
            except ApiError as exc:
                self.api.record_event(rs, "Warning", "FailedCreate",
                                      f"Error creating: {exc.message}", COMPONENT)
                return exc.message
            self.api.record_event(rs, "Normal", "SuccessfulCreate",
                                  f"Created pod: {pod['metadata']['name']}", COMPONENT)
        return None

    def _delete(self, rs: Obj, active: list[Obj], count: int) -> str | None:
        for pod in sorted(active, key=deletion_order)[:count]:
            name = pod["metadata"]["name"]
            try:
                self.api.delete(self.pod_rt, pod["metadata"]["namespace"], name)
            except ApiError as exc:
                if exc.code == 404:
                    continue
                self.api.record_event(rs, "Warning", "FailedDelete",
                                      f"Error deleting: {exc.message}", COMPONENT)
                return exc.message
            self.api.record_event(rs, "Normal", "SuccessfulDelete", f"Deleted pod: {name}",
                                  COMPONENT)
        return None

    def _update_status(self, rs: Obj, active: list[Obj], terminating: list[Obj],
                       error: str | None, diff: int) -> float | None:
        spec = rs["spec"]
        template_labels = (spec.get("template", {}).get("metadata", {}).get("labels") or {})
        min_ready = int(spec.get("minReadySeconds", 0))
        at = dt.datetime.now(dt.UTC)
        fully_labeled = ready = available = 0
        wait: float | None = None
        for pod in active:
            labels = pod["metadata"].get("labels") or {}
            if all(labels.get(k) == v for k, v in template_labels.items()):
                fully_labeled += 1
            left = podutil.seconds_until_available(pod, min_ready, at)
            if left is None:
                continue
            ready += 1
            if left == 0:
                available += 1
            else:
                wait = left if wait is None else min(wait, left)
        old = rs.get("status") or {}
        conditions = [c for c in old.get("conditions") or [] if c.get("type") != "ReplicaFailure"]
        failure = next((c for c in old.get("conditions") or []
                        if c.get("type") == "ReplicaFailure"), None)
        if error is not None:
            if failure is None:
                failure = {"type": "ReplicaFailure", "status": "True",
                           "lastTransitionTime": now(),
                           "reason": "FailedCreate" if diff < 0 else "FailedDelete",
                           "message": error}
            conditions.append(failure)
        status: Obj = {"replicas": len(active)}
        for field, value in (("fullyLabeledReplicas", fully_labeled), ("readyReplicas", ready),
                             ("availableReplicas", available),
                             ("observedGeneration", rs["metadata"].get("generation", 0))):
            if value:
                status[field] = value
        status["terminatingReplicas"] = len(terminating)
        if conditions:
            status["conditions"] = conditions
        if status != old:
            rs["status"] = status
            meta = rs["metadata"]
            self.api.update(self.rs_rt, meta["namespace"], meta["name"], rs,
                            subresource="status")
        return None if wait is None else wait + 0.05
