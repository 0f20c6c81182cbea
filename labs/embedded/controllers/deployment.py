"""Deployment controller: ReplicaSets per pod template, rolling and Recreate rollouts, status.

A close reading of pkg/controller/deployment (sync.go, rolling.go, recreate.go, progress.go), so
`kubectl rollout status|history|undo|pause|resume`, `kubectl scale` and the events under
`kubectl describe deployment` behave as on a real cluster.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from typing import Any

from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.errors import ApiError
from labs.embedded.apiserver.objects import controller_uid, owner_reference
from labs.embedded.apiserver.selectors import labels_match
from labs.embedded.apiserver.store import Event

from . import deployment_status as ds
from . import deployment_util as du
from .base import Controller, owner_key

Obj = dict[str, Any]

COMPONENT = "deployment-controller"
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"
FAILED_RS_CREATE = "FailedRSCreate"


class DeploymentController(Controller[tuple[str, str]]):
    name = "deployment"

    def __init__(self, api: ObjectApi) -> None:
        super().__init__(api)
        self.d_rt = self.resource("apps", "deployments")
        self.rs_rt = self.resource("apps", "replicasets")
        self.pod_rt = self.resource("", "pods")

    def initial_keys(self) -> Iterable[tuple[str, str]]:
        for d in self.api.store.list(self.d_rt.key):
            yield d["metadata"]["namespace"], d["metadata"]["name"]

    def keys_for(self, event: Event) -> Iterable[tuple[str, str]]:
        obj, meta = event.object, event.object["metadata"]
        if event.key == self.d_rt.key:
            return [(meta["namespace"], meta["name"])]
        if event.key == self.rs_rt.key:
            owner = owner_key(obj, "Deployment")
            if owner is not None:
                return [owner]
            return self._selecting(obj) if event.type != "DELETED" else []
        if event.key == self.pod_rt.key and event.type == "DELETED":
            # Recreate waits for the old pods to be gone, not only scaled down.
            rs_key = owner_key(obj, "ReplicaSet")
            rs = self.api.store.get(self.rs_rt.key, *rs_key) if rs_key else None
            owner = owner_key(rs, "Deployment") if rs else None
            return [owner] if owner else []
        return []

    def _selecting(self, rs: Obj) -> list[tuple[str, str]]:
        """Deployments that may adopt an orphaned ReplicaSet."""
        namespace = rs["metadata"]["namespace"]
        labels = rs["metadata"].get("labels") or {}
        return [(namespace, d["metadata"]["name"])
                for d in self.api.store.list(self.d_rt.key, namespace)
                if labels_match(d["spec"].get("selector"), labels)]

    def reconcile(self, key: tuple[str, str]) -> float | None:
        namespace, name = key
        d = self.api.find(self.d_rt, namespace, name)
        if d is None:
            return None
        return _Sync(self, d).run()


class _Sync:
    """One pass of syncDeployment over one deployment and its ReplicaSets.

    ReplicaSet dicts are updated in place after every write, so every list holding them sees
    the new sizes, as the Go code sees its pointers.
    """

    def __init__(self, ctl: DeploymentController, d: Obj) -> None:
        self.ctl, self.api, self.d = ctl, ctl.api, d
        self.namespace = d["metadata"]["namespace"]
        d.setdefault("status", {})
        self.rs_list = self._claim_replica_sets()
        self.requeue: float | None = None

    # -- entry -------------------------------------------------------------------------------
    def run(self) -> float | None:
        d = self.d
        if d["metadata"].get("deletionTimestamp"):
            new_rs, old_rss = self.get_all_rs_and_sync_revision(create=False)
            self.sync_deployment_status(_with(old_rss, new_rs), new_rs)
            return None
        self.check_paused_conditions()
        strategy = d["spec"].get("strategy", {}).get("type", "RollingUpdate")
        if d["spec"].get("paused") or self.is_scaling_event():
            self.sync()
        elif strategy == "Recreate":
            self.rollout_recreate()
        else:
            self.rollout_rolling()
        return self.requeue

    def _claim_replica_sets(self) -> list[Obj]:
        """ReplicaSets this deployment controls; orphans matching its selector are adopted and
        owned ones that stopped matching are released (ClaimReplicaSets)."""
        d = self.d
        uid, selector = d["metadata"]["uid"], d["spec"].get("selector")
        claimed = []
        items, _ = self.api.list(self.ctl.rs_rt, self.namespace)
        for rs in items:
            refs = rs["metadata"].get("ownerReferences") or []
            owner = controller_uid(rs)
            matches = labels_match(selector, rs["metadata"].get("labels") or {})
            if owner is None and matches and not d["metadata"].get("deletionTimestamp") \
                    and not rs["metadata"].get("deletionTimestamp"):
                rs["metadata"]["ownerReferences"] = [*refs, owner_reference(d)]
                rs = self._write_rs(rs)
            elif owner != uid:
                continue
            elif not matches:
                rs["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                self._write_rs(rs)
                continue
            claimed.append(rs)
        return claimed

    # -- writes ------------------------------------------------------------------------------
    def _write_rs(self, rs: Obj) -> Obj:
        meta = rs["metadata"]
        if not meta.get("ownerReferences"):
            meta.pop("ownerReferences", None)
        return self.api.update(self.ctl.rs_rt, meta["namespace"], meta["name"], rs).object

    def persist(self, metadata: bool, status: bool) -> None:
        """Write the deployment's annotations and/or status, keeping our view current."""
        d, name = self.d, self.d["metadata"]["name"]
        if metadata:
            d["metadata"] = self.api.update(self.ctl.d_rt, self.namespace, name, d).object[
                "metadata"]
        if status:
            d["metadata"] = self.api.update(self.ctl.d_rt, self.namespace, name, d,
                                            subresource="status").object["metadata"]

    def event(self, event_type: str, reason: str, message: str) -> None:
        self.api.record_event(self.d, event_type, reason, message, COMPONENT)

    def scale_rs(self, rs: Obj, new_scale: int) -> bool:
        """scaleReplicaSet: size and the desired/max annotations; True when the size moved."""
        d = self.d
        desired, maximum = du.replicas(d), du.replicas(d) + du.max_surge(d)
        old_scale = du.replicas(rs)
        size_changes = old_scale != new_scale
        if not size_changes and not du.replicas_annotations_need_update(rs, desired, maximum):
            return False
        updated = copy.deepcopy(rs)
        updated["spec"]["replicas"] = new_scale
        du.set_replicas_annotations(updated, desired, maximum)
        written = self._write_rs(updated)
        rs.clear()
        rs.update(written)
        if size_changes:
            direction = "up" if old_scale < new_scale else "down"
            self.event("Normal", "ScalingReplicaSet",
                       f"Scaled {direction} replica set {rs['metadata']['name']} from "
                       f"{old_scale} to {new_scale}")
        return size_changes

    def scale_rs_and_record_event(self, rs: Obj, new_scale: int) -> bool:
        if du.replicas(rs) == new_scale:
            return False
        return self.scale_rs(rs, new_scale)

    # -- finding the new and old ReplicaSets -------------------------------------------------
    def find_new_rs(self) -> Obj | None:
        template = self.d["spec"].get("template", {})
        for rs in sorted(self.rs_list, key=du.by_creation):
            if du.equal_ignore_hash(rs["spec"].get("template", {}), template):
                return rs  # the oldest one, should several match
        return None

    def get_all_rs_and_sync_revision(self, create: bool) -> tuple[Obj | None, list[Obj]]:
        existing = self.find_new_rs()
        old_rss = [rs for rs in self.rs_list if rs is not existing]
        return self.get_new_rs(existing, old_rss, create), old_rss

    def set_deployment_revision(self, revision: str) -> bool:
        current = self.d["metadata"].get("annotations") or {}
        if current.get(du.REVISION) == revision:
            return False
        du.annotations_of(self.d)[du.REVISION] = revision
        return True

    def get_new_rs(self, existing: Obj | None, old_rss: list[Obj], create: bool) -> Obj | None:
        d = self.d
        new_revision = du.max_revision(old_rss) + 1
        progressing = du.has_progress_deadline(d)
        if existing is not None:
            updated = copy.deepcopy(existing)
            annotations_changed = du.set_new_rs_annotations(d, updated, new_revision, exists=True)
            min_ready = d["spec"].get("minReadySeconds", 0)
            if annotations_changed or updated["spec"].get("minReadySeconds", 0) != min_ready:
                _set_min_ready(updated, min_ready)
                written = self._write_rs(updated)
                existing.clear()
                existing.update(written)
            metadata = self.set_deployment_revision(str(du.revision(existing)))
            status = False
            if progressing and du.get_condition(d["status"], ds.PROGRESSING) is None:
                du.set_condition(d["status"], du.new_condition(
                    ds.PROGRESSING, "True", FOUND_NEW_RS,
                    f'Found new replica set "{existing["metadata"]["name"]}"'))
                status = True
            self.persist(metadata, status)
            return existing
        if not create:
            return None
        return self._create_new_rs(old_rss, new_revision)

    def _create_new_rs(self, old_rss: list[Obj], new_revision: int) -> Obj | None:
        d = self.d
        pod_hash = du.template_hash(d["spec"]["template"], d["status"].get("collisionCount"))
        template = copy.deepcopy(d["spec"]["template"])
        template.setdefault("metadata", {}).setdefault("labels", {})[du.HASH_LABEL] = pod_hash
        selector = copy.deepcopy(d["spec"].get("selector") or {})
        selector.setdefault("matchLabels", {})[du.HASH_LABEL] = pod_hash
        name = f"{d['metadata']['name']}-{pod_hash}"
        new_rs: Obj = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": self.namespace,
                         "labels": dict(template["metadata"]["labels"]),
                         "ownerReferences": [owner_reference(d)]},
            "spec": {"replicas": 0, "selector": selector, "template": template},
        }
        _set_min_ready(new_rs, d["spec"].get("minReadySeconds", 0))
        new_rs["spec"]["replicas"] = self.new_rs_new_replicas([*old_rss, new_rs], new_rs)
        du.set_new_rs_annotations(d, new_rs, new_revision, exists=False)
        try:
            created = self.api.create(self.ctl.rs_rt, self.namespace, new_rs).object
        except ApiError as exc:
            if exc.reason == "AlreadyExists":
                # Another object holds the name this template hashes to: hash again with a
                # higher collisionCount on the next pass.
                d["status"]["collisionCount"] = int(d["status"].get("collisionCount", 0)) + 1
                self.persist(False, True)
                self.requeue = 0.0
                return None
            message = f'Failed to create new replica set "{name}": {exc.message}'
            if du.has_progress_deadline(d):
                du.set_condition(d["status"], du.new_condition(
                    ds.PROGRESSING, "False", FAILED_RS_CREATE, message))
                self.persist(False, True)
            self.event("Warning", FAILED_RS_CREATE, message)
            self.requeue = 5.0
            return None
        count = du.replicas(created)
        if count > 0:
            self.event("Normal", "ScalingReplicaSet",
                       f"Scaled up replica set {name} from 0 to {count}")
        metadata = self.set_deployment_revision(str(new_revision))
        status = False
        if du.has_progress_deadline(d):
            du.set_condition(d["status"], du.new_condition(
                ds.PROGRESSING, "True", NEW_RS_CREATED, f'Created new replica set "{name}"'))
            status = True
        self.persist(metadata, status)
        self.rs_list.append(created)
        return created

    def new_rs_new_replicas(self, all_rss: list[Obj], new_rs: Obj) -> int:
        d = self.d
        if not du.is_rolling(d):
            return du.replicas(d)
        current = du.sum_replicas(all_rss)
        max_total = du.replicas(d) + du.max_surge(d)
        if current >= max_total:
            return du.replicas(new_rs)
        scale_up = min(max_total - current, du.replicas(d) - du.replicas(new_rs))
        return du.replicas(new_rs) + scale_up

    # -- rolling update ----------------------------------------------------------------------
    def rollout_rolling(self) -> None:
        new_rs, old_rss = self.get_all_rs_and_sync_revision(create=True)
        if new_rs is None:
            return
        all_rss = [*old_rss, new_rs]
        if self.reconcile_new_rs(all_rss, new_rs):
            self.sync_rollout_status(all_rss, new_rs)
            return
        if self.reconcile_old_rss(all_rss, du.active(old_rss), new_rs):
            self.sync_rollout_status(all_rss, new_rs)
            return
        if ds.deployment_complete(self.d, self.d["status"]):
            self.cleanup(old_rss)
        self.sync_rollout_status(all_rss, new_rs)

    def reconcile_new_rs(self, all_rss: list[Obj], new_rs: Obj) -> bool:
        desired = du.replicas(self.d)
        if du.replicas(new_rs) == desired:
            return False
        if du.replicas(new_rs) > desired:
            return self.scale_rs_and_record_event(new_rs, desired)
        return self.scale_rs_and_record_event(new_rs, self.new_rs_new_replicas(all_rss, new_rs))

    def reconcile_old_rss(self, all_rss: list[Obj], old_rss: list[Obj], new_rs: Obj) -> bool:
        if du.sum_replicas(old_rss) == 0:
            return False
        min_available = du.replicas(self.d) - du.max_unavailable(self.d)
        new_unavailable = du.replicas(new_rs) - du.status_count(new_rs, "availableReplicas")
        max_scaled_down = du.sum_replicas(all_rss) - min_available - new_unavailable
        if max_scaled_down <= 0:
            return False
        old_rss, cleaned = self.cleanup_unhealthy_replicas(old_rss, max_scaled_down)
        scaled_down = self.scale_down_old_rss_for_rolling([*old_rss, new_rs], old_rss)
        return cleaned + scaled_down > 0

    def cleanup_unhealthy_replicas(self, old_rss: list[Obj], max_cleanup: int
                                   ) -> tuple[list[Obj], int]:
        """Scale down old pods that are not available first: they serve nobody."""
        old_rss = sorted(old_rss, key=du.by_creation)
        total = 0
        for rs in old_rss:
            if total >= max_cleanup:
                break
            size, available = du.replicas(rs), du.status_count(rs, "availableReplicas")
            if size == 0 or size == available:
                continue
            count = min(max_cleanup - total, size - available)
            self.scale_rs_and_record_event(rs, size - count)
            total += count
        return old_rss, total

    def scale_down_old_rss_for_rolling(self, all_rss: list[Obj], old_rss: list[Obj]) -> int:
        min_available = du.replicas(self.d) - du.max_unavailable(self.d)
        available = du.sum_status(all_rss, "availableReplicas")
        if available <= min_available:
            return 0
        budget, total = available - min_available, 0
        for rs in sorted(old_rss, key=du.by_creation):
            if total >= budget:
                break
            if du.replicas(rs) == 0:
                continue
            count = min(du.replicas(rs), budget - total)
            self.scale_rs_and_record_event(rs, du.replicas(rs) - count)
            total += count
        return total

    # -- recreate ----------------------------------------------------------------------------
    def rollout_recreate(self) -> None:
        new_rs, old_rss = self.get_all_rs_and_sync_revision(create=False)
        scaled_down = False
        for rs in du.active(old_rss):
            scaled_down = self.scale_rs_and_record_event(rs, 0) or scaled_down
        if scaled_down or self.old_pods_running(new_rs, old_rss):
            self.sync_rollout_status(_with(old_rss, new_rs), new_rs)
            return
        if new_rs is None:
            new_rs, old_rss = self.get_all_rs_and_sync_revision(create=True)
            if new_rs is None:
                return
        self.scale_rs_and_record_event(new_rs, du.replicas(self.d))
        if ds.deployment_complete(self.d, self.d["status"]):
            self.cleanup(old_rss)
        self.sync_rollout_status([*old_rss, new_rs], new_rs)

    def old_pods_running(self, new_rs: Obj | None, old_rss: list[Obj]) -> bool:
        if du.sum_status(old_rss, "replicas") > 0:
            return True
        old_uids = {rs["metadata"]["uid"] for rs in old_rss} - (
            {new_rs["metadata"]["uid"]} if new_rs else set())
        pods, _ = self.api.list(self.ctl.pod_rt, self.namespace)
        return any(controller_uid(pod) in old_uids
                   and pod.get("status", {}).get("phase") not in ("Succeeded", "Failed")
                   for pod in pods)

    # -- scaling and paused deployments ------------------------------------------------------
    def is_scaling_event(self) -> bool:
        new_rs, old_rss = self.get_all_rs_and_sync_revision(create=False)
        desired = du.replicas(self.d)
        for rs in du.active(_with(old_rss, new_rs)):
            annotated = du.desired_replicas_annotation(rs)
            if annotated is not None and annotated != desired:
                return True
        return False

    def sync(self) -> None:
        new_rs, old_rss = self.get_all_rs_and_sync_revision(create=False)
        self.scale(new_rs, old_rss)
        if self.d["spec"].get("paused"):
            self.cleanup(old_rss)
        self.sync_deployment_status(_with(old_rss, new_rs), new_rs)

    def scale(self, new_rs: Obj | None, old_rss: list[Obj]) -> None:
        """Scale proportionally: a resize during a rollout keeps the old/new ratio rather than
        hastening the rollout."""
        d = self.d
        desired = du.replicas(d)
        target = self.find_active_or_latest(new_rs, old_rss)
        if target is not None:
            if du.replicas(target) != desired:
                self.scale_rs_and_record_event(target, desired)
            return
        if self.is_saturated(new_rs):
            for rs in du.active(old_rss):
                self.scale_rs_and_record_event(rs, 0)
            return
        if not du.is_rolling(d):
            return
        all_rss = du.active(_with(old_rss, new_rs))
        allowed = desired + du.max_surge(d) if desired > 0 else 0
        to_add = allowed - du.sum_replicas(all_rss)
        if to_add > 0:  # larger first; on ties, newer first when growing, older when shrinking
            all_rss.sort(key=lambda rs: (du.replicas(rs), du.by_creation(rs)), reverse=True)
        elif to_add < 0:
            all_rss.sort(key=lambda rs: (-du.replicas(rs), du.by_creation(rs)))
        added = 0
        sizes: dict[str, int] = {}
        for rs in all_rss:
            proportion = self.proportion(rs, to_add, added) if to_add else 0
            sizes[rs["metadata"]["name"]] = du.replicas(rs) + proportion
            added += proportion
        for i, rs in enumerate(all_rss):
            name = rs["metadata"]["name"]
            if i == 0 and to_add:
                sizes[name] = max(sizes[name] + to_add - added, 0)
            self.scale_rs(rs, sizes[name])

    def find_active_or_latest(self, new_rs: Obj | None, old_rss: list[Obj]) -> Obj | None:
        if new_rs is None and not old_rss:
            return None
        newest_first = sorted(old_rss, key=du.by_creation, reverse=True)
        running = du.active(_with(newest_first, new_rs))
        if not running:
            return new_rs if new_rs is not None else newest_first[0]
        return running[0] if len(running) == 1 else None

    def is_saturated(self, rs: Obj | None) -> bool:
        desired = du.replicas(self.d)
        return (rs is not None and du.desired_replicas_annotation(rs) == desired
                and du.replicas(rs) == desired
                and du.status_count(rs, "availableReplicas") == desired)

    def proportion(self, rs: Obj, to_add: int, added: int) -> int:
        if du.replicas(rs) == 0 or to_add == added:
            return 0
        fraction = self.fraction(rs)
        allowed = to_add - added
        return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)

    def fraction(self, rs: Obj) -> int:
        d = self.d
        if du.replicas(d) == 0:
            return -du.replicas(rs)
        max_now = du.replicas(d) + du.max_surge(d)
        max_before = du.max_replicas_annotation(rs) or du.status_count(d, "replicas")
        if max_before == 0:
            return 0
        size = du.replicas(rs) * max_now / max_before
        return math.floor(size + 0.5) - du.replicas(rs)

    def cleanup(self, old_rss: list[Obj]) -> None:
        """Delete the oldest spent ReplicaSets beyond revisionHistoryLimit."""
        limit = self.d["spec"].get("revisionHistoryLimit")
        if limit is None:
            return
        cleanable = [rs for rs in old_rss if not rs["metadata"].get("deletionTimestamp")]
        excess = len(cleanable) - int(limit)
        if excess <= 0:
            return
        for rs in sorted(cleanable, key=du.by_revision)[:excess]:
            meta = rs["metadata"]
            if (du.status_count(rs, "replicas") or du.replicas(rs)
                    or meta.get("generation", 0) > du.status_count(rs, "observedGeneration")):
                continue
            try:
                self.api.delete(self.ctl.rs_rt, self.namespace, meta["name"])
            except ApiError as exc:
                if exc.code != 404:
                    raise
            self.rs_list = [r for r in self.rs_list if r is not rs]

    # -- status ------------------------------------------------------------------------------
    def check_paused_conditions(self) -> None:
        d = self.d
        if not du.has_progress_deadline(d):
            return
        cond = du.get_condition(d["status"], ds.PROGRESSING)
        if cond is not None and cond.get("reason") == ds.TIMED_OUT:
            return
        paused = bool(d["spec"].get("paused"))
        paused_recorded = cond is not None and cond.get("reason") == PAUSED
        if paused and not paused_recorded:
            du.set_condition(d["status"], du.new_condition(
                ds.PROGRESSING, "Unknown", PAUSED, "Deployment is paused"))
        elif not paused and paused_recorded:
            du.set_condition(d["status"], du.new_condition(
                ds.PROGRESSING, "Unknown", RESUMED, "Deployment is resumed"))
        else:
            return
        self.persist(False, True)

    def sync_deployment_status(self, all_rss: list[Obj], new_rs: Obj | None) -> None:
        status = ds.calculate_status(self.d, all_rss, new_rs)
        if status != self.d["status"]:
            self.d["status"] = status
            self.persist(False, True)

    def sync_rollout_status(self, all_rss: list[Obj], new_rs: Obj | None) -> None:
        status = ds.rollout_status(self.d, all_rss, new_rs)
        if status == self.d["status"]:
            self.requeue = ds.progress_check_after(self.d, status)
            return
        self.d["status"] = status
        self.persist(False, True)


def _with(old_rss: list[Obj], new_rs: Obj | None) -> list[Obj]:
    return [*old_rss, new_rs] if new_rs is not None else list(old_rss)


def _set_min_ready(rs: Obj, seconds: int) -> None:
    if seconds:
        rs["spec"]["minReadySeconds"] = seconds
    else:
        rs["spec"].pop("minReadySeconds", None)
