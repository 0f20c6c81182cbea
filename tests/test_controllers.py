"""Do the embedded cluster's controllers do what kube-controller-manager does?

Every test runs the real controllers against an in-process ObjectApi. No runtime runs here, so a
small stand-in kubelet (below) binds pods, reports them Ready with host ports and finishes graceful
deletions — only where a test asks for it. Waits poll the store against a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
from conftest import wait_until

from labs.embedded import controllers
from labs.embedded.apiserver.api import JSON_PATCH, MERGE_PATCH, ObjectApi
from labs.embedded.apiserver.objects import now
from labs.embedded.apiserver.resources import ResourceRegistry, ResourceType
from labs.embedded.apiserver.store import Store
from labs.embedded.controllers import deployment_util as du
from labs.embedded.controllers.eventttl import EventTTLController
from labs.embedded.controllers.garbagecollector import GarbageCollector
from labs.embedded.workload import HOST_PORTS

Obj = dict[str, Any]

CA_PEM = "-----BEGIN CERTIFICATE-----\nTEST\n-----END CERTIFICATE-----\n"
TEST_TIMEOUT = 30.0
REGISTRY = ResourceRegistry()


def rt(group: str, plural: str) -> ResourceType:
    found = REGISTRY.lookup(group, "v1", plural)
    assert found is not None
    return found


PODS, SERVICES, ENDPOINTS = rt("", "pods"), rt("", "services"), rt("", "endpoints")
NAMESPACES, CONFIGMAPS, EVENTS = rt("", "namespaces"), rt("", "configmaps"), rt("", "events")
SERVICEACCOUNTS = rt("", "serviceaccounts")
DEPLOYMENTS, REPLICASETS = rt("apps", "deployments"), rt("apps", "replicasets")


# -- harness ----------------------------------------------------------------------------------
def async_test(fn: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    @functools.wraps(fn)
    def run() -> None:
        asyncio.run(asyncio.wait_for(fn(), TEST_TIMEOUT))

    return run


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class FakeKubelet:
    """Stands in for the runtime: binds each pod to a node, gives it host ports and reports it
    Running and Ready; removes pods whose graceful deletion began."""

    def __init__(self, api: ObjectApi, auto_ready: bool = True) -> None:
        self.api = api
        self.auto_ready = auto_ready
        self.ports = itertools.count(31000)

    async def run(self) -> None:
        with self.api.store.subscribe(PODS.key) as sub:
            for pod in self.api.store.list(PODS.key):
                self.handle(pod)
            while True:
                event = await sub.queue.get()
                meta = event.object["metadata"]
                pod = self.api.store.get(PODS.key, meta["namespace"], meta["name"])
                if pod is not None:
                    self.handle(pod)

    def handle(self, pod: Obj) -> None:
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            self.api.delete(PODS, meta["namespace"], meta["name"], grace_period=0)
        elif self.auto_ready and not is_ready(pod):
            self.start(pod, ready=True)

    def start(self, pod: Obj, ready: bool) -> Obj:
        meta = pod["metadata"]
        if not pod["spec"].get("nodeName"):
            ports = {str(p["containerPort"]): next(self.ports)
                     for c in pod["spec"]["containers"] for p in c.get("ports") or []}
            pod["spec"]["nodeName"] = "meshlab-control-plane"
            pod["metadata"].setdefault("annotations", {})[HOST_PORTS] = json.dumps(ports)
            pod = self.api.update(PODS, meta["namespace"], meta["name"], pod).object
        pod["status"] = {
            "phase": "Running", "podIP": "127.0.0.1", "hostIP": "127.0.0.1",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                            "lastTransitionTime": now()}],
        }
        return self.api.update(PODS, meta["namespace"], meta["name"], pod,
                               subresource="status").object


@contextlib.asynccontextmanager
async def cluster(kubelet: bool = True, auto_ready: bool = True) -> AsyncIterator[ObjectApi]:
    api = ObjectApi(Store(None), ResourceRegistry())
    errors = _Errors()
    logging.getLogger("meshlab.controllers").addHandler(errors)
    await controllers.bootstrap(api)
    tasks = [asyncio.create_task(c.run()) for c in controllers.all_controllers(api, CA_PEM)]
    if kubelet:
        tasks.append(asyncio.create_task(FakeKubelet(api, auto_ready).run()))
    try:
        yield api
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        logging.getLogger("meshlab.controllers").removeHandler(errors)
    crashed = [r for r in results if not isinstance(r, asyncio.CancelledError)]
    assert not crashed, f"a controller task ended: {crashed}"
    assert not errors.records, [r.getMessage() for r in errors.records]


def is_ready(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions") or [])


def deployment(name: str = "web", replicas: int = 3, image: str = "nginx:1.25",
               **spec: Any) -> Obj:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image,
                                         "ports": [{"name": "http", "containerPort": 8080}]}]},
            },
            **spec,
        },
    }


def get(api: ObjectApi, kind: ResourceType, name: str, namespace: str = "default") -> Obj | None:
    return api.find(kind, namespace, name)


def items(api: ObjectApi, kind: ResourceType, namespace: str = "default") -> list[Obj]:
    return api.list(kind, namespace)[0]


def replica_sets(api: ObjectApi, d: Obj) -> list[Obj]:
    uid = d["metadata"]["uid"]
    return [rs for rs in items(api, REPLICASETS)
            if any(r["uid"] == uid for r in rs["metadata"].get("ownerReferences") or [])]


def pods_of(api: ObjectApi, rs: Obj, active_only: bool = True) -> list[Obj]:
    uid = rs["metadata"]["uid"]
    return [p for p in items(api, PODS)
            if any(r["uid"] == uid for r in p["metadata"].get("ownerReferences") or [])
            and not (active_only and p["metadata"].get("deletionTimestamp"))]


def events(api: ObjectApi, name: str, reason: str) -> list[str]:
    return [e["message"] for e in items(api, EVENTS)
            if e["involvedObject"]["name"] == name and e["reason"] == reason]


def condition(obj: Obj, ctype: str) -> Obj:
    for cond in obj.get("status", {}).get("conditions") or []:
        if cond["type"] == ctype:
            return cond
    return {}


def rolled_out(api: ObjectApi, name: str, replicas: int) -> Obj | None:
    """What `kubectl rollout status` waits for, plus the Progressing reason it then shows."""
    d = get(api, DEPLOYMENTS, name)
    if d is None:
        return None
    s = d.get("status", {})
    done = (d["metadata"]["generation"] <= s.get("observedGeneration", 0)
            and s.get("updatedReplicas", 0) == replicas == s.get("replicas", 0)
            and s.get("availableReplicas", 0) == replicas
            and condition(d, "Progressing").get("reason") == "NewReplicaSetAvailable")
    return d if done else None


def set_image(api: ObjectApi, name: str, image: str) -> None:
    """What `kubectl set image` amounts to: a new pod template."""
    d = get(api, DEPLOYMENTS, name)
    assert d is not None
    template = d["spec"]["template"]
    template["spec"]["containers"][0]["image"] = image
    api.patch(DEPLOYMENTS, "default", name, MERGE_PATCH,
              json.dumps({"spec": {"template": template}}).encode())


# -- Deployments and ReplicaSets --------------------------------------------------------------
@async_test
async def test_deployment_creates_a_replicaset_and_its_pods() -> None:
    """Does a Deployment of 3 get one ReplicaSet and 3 pods, labelled and owned like the real
    ones, with the events `kubectl describe` shows?"""
    async with cluster(kubelet=False) as api:
        d = api.create(DEPLOYMENTS, "default", deployment(replicas=3)).object
        rs = (await wait_until(lambda: replica_sets(api, d), "a ReplicaSet"))[0]
        pod_hash = rs["metadata"]["labels"]["pod-template-hash"]
        assert rs["metadata"]["name"] == f"web-{pod_hash}"
        assert re.fullmatch(r"[bcdfghjklmnpqrstvwxz2456789]{1,10}", pod_hash)
        assert rs["spec"]["selector"]["matchLabels"] == {"app": "web",
                                                         "pod-template-hash": pod_hash}
        assert rs["spec"]["template"]["metadata"]["labels"]["pod-template-hash"] == pod_hash
        assert rs["spec"]["replicas"] == 3
        ref = rs["metadata"]["ownerReferences"][0]
        assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
            "Deployment", "web", d["metadata"]["uid"], True)
        annotations = rs["metadata"]["annotations"]
        assert annotations[du.REVISION] == "1"
        assert annotations[du.DESIRED_REPLICAS] == "3"
        assert annotations[du.MAX_REPLICAS] == "4"  # 3 + 25% surge rounded up

        pods = await wait_until(lambda: len(pods_of(api, rs)) == 3 and pods_of(api, rs), "3 pods")
        for pod in pods:
            assert re.fullmatch(rf"web-{pod_hash}-[bcdfghjklmnpqrstvwxz2456789]{{5}}",
                                pod["metadata"]["name"])
            assert pod["metadata"]["labels"] == {"app": "web", "pod-template-hash": pod_hash}
            ref = pod["metadata"]["ownerReferences"][0]
            assert (ref["kind"], ref["name"], ref["controller"]) == ("ReplicaSet",
                                                                    rs["metadata"]["name"], True)
        assert events(api, "web", "ScalingReplicaSet") == [
            f"Scaled up replica set web-{pod_hash} from 0 to 3"]
        created = await wait_until(
            lambda: len(events(api, rs["metadata"]["name"], "SuccessfulCreate")) == 3
            and events(api, rs["metadata"]["name"], "SuccessfulCreate"), "SuccessfulCreate events")
        assert sorted(created) == sorted(f"Created pod: {p['metadata']['name']}" for p in pods)
        d = await wait_until(
            lambda: (x := get(api, DEPLOYMENTS, "web")) and x["status"].get("replicas") == 3 and x,
            "deployment status")
        assert d["metadata"]["annotations"][du.REVISION] == "1"
        assert condition(d, "Available")["reason"] == "MinimumReplicasUnavailable"
        assert d["status"]["unavailableReplicas"] == 3


@async_test
async def test_deployment_becomes_available_when_its_pods_are_ready() -> None:
    """Once the pods are Ready, does the status say what `kubectl rollout status` needs?"""
    async with cluster() as api:
        api.create(DEPLOYMENTS, "default", deployment(replicas=3))
        d = await wait_until(lambda: rolled_out(api, "web", 3), "the rollout")
        status = d["status"]
        assert status["observedGeneration"] == 1
        assert status["readyReplicas"] == 3
        assert "unavailableReplicas" not in status
        available = condition(d, "Available")
        assert (available["status"], available["reason"], available["message"]) == (
            "True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
        rs_name = replica_sets(api, d)[0]["metadata"]["name"]
        assert condition(d, "Progressing")["message"] == (
            f'ReplicaSet "{rs_name}" has successfully progressed.')
        rs = get(api, REPLICASETS, rs_name)
        assert rs is not None
        assert rs["status"] == {"replicas": 3, "fullyLabeledReplicas": 3, "readyReplicas": 3,
                                "availableReplicas": 3, "observedGeneration": 1,
                                "terminatingReplicas": 0}


@async_test
async def test_rolling_update_stays_within_surge_and_unavailability() -> None:
    """Does changing the image roll out a new ReplicaSet without ever exceeding
    replicas + maxSurge pods or dropping below replicas - maxUnavailable ready ones?"""
    async with cluster() as api:
        spec = {"strategy": {"type": "RollingUpdate",
                             "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}}
        api.create(DEPLOYMENTS, "default", deployment(replicas=4, **spec))
        d = await wait_until(lambda: rolled_out(api, "web", 4), "the first rollout")
        old_rs = replica_sets(api, d)[0]
        set_image(api, "web", "nginx:1.26")
        d = await wait_until(
            lambda: (x := rolled_out(api, "web", 4)) and x["metadata"]["generation"] == 2 and x,
            "the second rollout")
        history = _pod_history(api, d)
        assert max(active for active, _ in history) <= 5  # replicas + maxSurge
        assert min(ready for _, ready in history) >= 4  # replicas - maxUnavailable
        rss = {rs["metadata"]["name"]: rs for rs in replica_sets(api, d)}
        assert rss[old_rs["metadata"]["name"]]["spec"]["replicas"] == 0
        new_rs = next(rs for name, rs in rss.items() if name != old_rs["metadata"]["name"])
        assert new_rs["spec"]["replicas"] == 4
        assert new_rs["metadata"]["annotations"][du.REVISION] == "2"
        assert d["metadata"]["annotations"][du.REVISION] == "2"
        assert f"Scaled up replica set {new_rs['metadata']['name']} from 0 to 1" in events(
            api, "web", "ScalingReplicaSet")
        assert f"Scaled down replica set {old_rs['metadata']['name']} from 4 to 3" in events(
            api, "web", "ScalingReplicaSet")


def _pod_history(api: ObjectApi, d: Obj) -> list[tuple[int, int]]:
    """(active pods, ready pods) of the deployment after every pod change still in history."""
    uids = {rs["metadata"]["uid"] for rs in replica_sets(api, d)}
    state: dict[str, Obj] = {}
    steps = []
    for event in api.store.history_since(PODS.key, 0) or []:
        pod = event.object
        refs = pod["metadata"].get("ownerReferences") or []
        if not any(r["uid"] in uids for r in refs):
            continue
        if event.type == "DELETED":
            state.pop(pod["metadata"]["uid"], None)
        else:
            state[pod["metadata"]["uid"]] = pod
        live = [p for p in state.values() if not p["metadata"].get("deletionTimestamp")]
        steps.append((len(live), sum(1 for p in live if is_ready(p))))
    # Before the first rollout completed the counts were still climbing; judge from the moment
    # all four were first ready.
    start = next(i for i, (_, r) in enumerate(steps) if r == 4)
    return steps[start:]


@async_test
async def test_scaling_up_and_down_prefers_deleting_pods_that_are_not_ready() -> None:
    """Does `kubectl scale` resize the ReplicaSet, and does scaling down remove a not-ready pod
    before ready ones?"""
    async with cluster(auto_ready=False) as api:
        kubelet = FakeKubelet(api)
        d = api.create(DEPLOYMENTS, "default", deployment(replicas=3)).object
        rs = (await wait_until(lambda: replica_sets(api, d), "a ReplicaSet"))[0]
        pods = await wait_until(lambda: len(pods_of(api, rs)) == 3 and pods_of(api, rs), "pods")
        for pod in pods[:2]:
            kubelet.start(pod, ready=True)
        laggard = kubelet.start(pods[2], ready=False)

        api.patch(DEPLOYMENTS, "default", "web", MERGE_PATCH, b'{"spec": {"replicas": 5}}')
        await wait_until(lambda: len(pods_of(api, rs)) == 5, "5 pods")
        rs_name = rs["metadata"]["name"]
        assert f"Scaled up replica set {rs_name} from 3 to 5" in events(
            api, "web", "ScalingReplicaSet")
        for pod in pods_of(api, rs):
            if pod["metadata"]["name"] != laggard["metadata"]["name"]:
                kubelet.start(pod, ready=True)

        api.patch(DEPLOYMENTS, "default", "web", MERGE_PATCH, b'{"spec": {"replicas": 4}}')
        await wait_until(lambda: len(pods_of(api, rs)) == 4, "4 pods")
        names = {p["metadata"]["name"] for p in pods_of(api, rs)}
        assert laggard["metadata"]["name"] not in names
        assert f"Deleted pod: {laggard['metadata']['name']}" in events(
            api, rs_name, "SuccessfulDelete")
        d = await wait_until(
            lambda: (x := get(api, DEPLOYMENTS, "web")) and x["status"].get("replicas") == 4
            and x["status"].get("availableReplicas") == 4 and x, "status for 4 replicas")
        assert f"Scaled down replica set {rs_name} from 5 to 4" in events(
            api, "web", "ScalingReplicaSet")


@async_test
async def test_recreate_stops_every_old_pod_before_starting_new_ones() -> None:
    """With strategy Recreate, are old and new pods never running side by side?"""
    async with cluster() as api:
        api.create(DEPLOYMENTS, "default", deployment(replicas=3, strategy={"type": "Recreate"}))
        d = await wait_until(lambda: rolled_out(api, "web", 3), "the first rollout")
        old_rs = replica_sets(api, d)[0]
        set_image(api, "web", "nginx:1.26")
        d = await wait_until(
            lambda: (x := rolled_out(api, "web", 3)) and x["metadata"]["generation"] == 2 and x,
            "the second rollout")
        owners: dict[str, str] = {}
        live: dict[str, str] = {}
        for event in api.store.history_since(PODS.key, 0) or []:
            meta = event.object["metadata"]
            owners[meta["uid"]] = meta["ownerReferences"][0]["uid"]
            if event.type == "DELETED":
                live.pop(meta["uid"], None)
            else:
                live[meta["uid"]] = owners[meta["uid"]]
            assert len(set(live.values())) <= 1, "old and new pods existed at the same time"
        rss = replica_sets(api, d)
        assert len(rss) == 2
        assert get(api, REPLICASETS, old_rs["metadata"]["name"])["spec"]["replicas"] == 0


@async_test
async def test_rollout_undo_restores_the_previous_template() -> None:
    """Does what `kubectl rollout undo` sends (the old ReplicaSet's template, found by its
    revision annotation, patched back) make the old ReplicaSet current as revision 3?"""
    async with cluster() as api:
        api.create(DEPLOYMENTS, "default", deployment(replicas=2))
        await wait_until(lambda: rolled_out(api, "web", 2), "revision 1")
        set_image(api, "web", "nginx:1.26")
        d = await wait_until(
            lambda: (x := rolled_out(api, "web", 2)) and x["metadata"]["generation"] == 2 and x,
            "revision 2")
        by_revision = {rs["metadata"]["annotations"][du.REVISION]: rs
                       for rs in replica_sets(api, d)}
        assert set(by_revision) == {"1", "2"}
        # kubectl: template of the previous revision minus pod-template-hash, plus annotations.
        template = by_revision["1"]["spec"]["template"]
        del template["metadata"]["labels"]["pod-template-hash"]
        annotations = {k: v for k, v in d["metadata"]["annotations"].items()
                       if k in du.ANNOTATIONS_TO_SKIP}
        patch = [{"op": "replace", "path": "/spec/template", "value": template},
                 {"op": "replace", "path": "/metadata/annotations", "value": annotations}]
        api.patch(DEPLOYMENTS, "default", "web", JSON_PATCH, json.dumps(patch).encode())

        d = await wait_until(
            lambda: (x := rolled_out(api, "web", 2)) and x["metadata"]["generation"] == 3
            and x["metadata"]["annotations"].get(du.REVISION) == "3" and x, "revision 3")
        assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.25"
        restored = get(api, REPLICASETS, by_revision["1"]["metadata"]["name"])
        assert restored is not None
        assert restored["metadata"]["annotations"][du.REVISION] == "3"
        assert restored["metadata"]["annotations"][du.REVISION_HISTORY] == "1"
        assert restored["spec"]["replicas"] == 2
        assert get(api, REPLICASETS, by_revision["2"]["metadata"]["name"])["spec"]["replicas"] == 0
        assert len(replica_sets(api, d)) == 2


@async_test
async def test_paused_deployment_waits_and_resumes() -> None:
    """Does a paused deployment hold back a template change, say so, and roll out on resume?"""
    async with cluster() as api:
        api.create(DEPLOYMENTS, "default", deployment(replicas=2))
        await wait_until(lambda: rolled_out(api, "web", 2), "revision 1")
        api.patch(DEPLOYMENTS, "default", "web", MERGE_PATCH, b'{"spec": {"paused": true}}')
        set_image(api, "web", "nginx:1.26")
        d = await wait_until(
            lambda: (x := get(api, DEPLOYMENTS, "web"))
            and condition(x, "Progressing").get("reason") == "DeploymentPaused"
            and x["status"].get("observedGeneration") == x["metadata"]["generation"] and x,
            "the paused condition")
        assert condition(d, "Progressing")["status"] == "Unknown"
        assert len(replica_sets(api, d)) == 1
        api.patch(DEPLOYMENTS, "default", "web", MERGE_PATCH, b'{"spec": {"paused": false}}')
        d = await wait_until(
            lambda: (x := rolled_out(api, "web", 2))
            and x["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.26"
            and len(replica_sets(api, x)) == 2 and x, "the resumed rollout")


@async_test
async def test_revision_history_limit_deletes_the_oldest_spent_replicasets() -> None:
    """With revisionHistoryLimit 1, is only one old ReplicaSet kept after three rollouts?"""
    async with cluster() as api:
        api.create(DEPLOYMENTS, "default", deployment(replicas=1, revisionHistoryLimit=1))
        for generation, image in enumerate(("nginx:1.26", "nginx:1.27", "nginx:1.28"), start=2):
            await wait_until(
                lambda g=generation: (x := rolled_out(api, "web", 1))
                and x["metadata"]["generation"] == g - 1, f"generation {generation - 1}")
            set_image(api, "web", image)
        d = await wait_until(
            lambda: (x := rolled_out(api, "web", 1)) and x["metadata"]["generation"] == 4 and x,
            "the last rollout")
        revisions = await wait_until(
            lambda: len(rss := replica_sets(api, d)) == 2
            and sorted(rs["metadata"]["annotations"][du.REVISION] for rs in rss),
            "old ReplicaSets cleaned up")
        assert revisions == ["3", "4"]


@async_test
async def test_progress_deadline_exceeded_when_pods_never_become_ready() -> None:
    """Does a rollout that makes no progress report ProgressDeadlineExceeded, which makes
    `kubectl rollout status` fail?"""
    async with cluster(kubelet=False) as api:
        api.create(DEPLOYMENTS, "default", deployment(replicas=1, progressDeadlineSeconds=1))
        d = await wait_until(
            lambda: (x := get(api, DEPLOYMENTS, "web"))
            and condition(x, "Progressing").get("reason") == "ProgressDeadlineExceeded" and x,
            "the progress deadline", timeout=6.0)
        cond = condition(d, "Progressing")
        assert cond["status"] == "False"
        assert cond["message"].endswith("has timed out progressing.")


def test_surge_rounds_up_and_unavailability_rounds_down() -> None:
    """Are percentages turned into pods the way the real controller rounds them?"""
    def posts(replicas: int, surge: int | str, unavailable: int | str) -> tuple[int, int]:
        d = deployment(replicas=replicas, strategy={"type": "RollingUpdate", "rollingUpdate": {
            "maxSurge": surge, "maxUnavailable": unavailable}})
        return du.fenceposts(d)

    assert posts(10, "25%", "25%") == (3, 2)
    assert posts(1, "25%", "25%") == (1, 0)
    assert posts(3, 0, "10%") == (0, 1)  # both zero would stall the rollout
    with pytest.raises(ValueError, match=r"maxSurge.*percentage"):
        posts(3, "lots", 1)


# -- Endpoints --------------------------------------------------------------------------------
def _pod(name: str, ports: dict[str, int], labels: dict[str, str]) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels,
                         "annotations": {HOST_PORTS: json.dumps(ports)}},
            "spec": {"nodeName": "meshlab-control-plane", "containers": [{
                "name": "app", "image": "httpbin",
                "ports": [{"name": "http", "containerPort": 8080}, {"containerPort": 9090}]}]}}


def _set_ready(api: ObjectApi, name: str, ready: bool) -> None:
    pod = get(api, PODS, name)
    assert pod is not None
    pod["status"] = {"phase": "Running", "podIP": "127.0.0.1", "conditions": [
        {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": now()}]}
    api.update(PODS, "default", name, pod, subresource="status")


@async_test
async def test_endpoints_list_host_ports_resolved_from_target_ports() -> None:
    """Does a Service get Endpoints naming each pod's own host port for a named and a numeric
    targetPort, with not-ready pods under notReadyAddresses?"""
    async with cluster(kubelet=False) as api:
        api.create(SERVICES, "default", {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "httpbin", "labels": {"app": "httpbin"}},
            "spec": {"selector": {"app": "httpbin"}, "ports": [
                {"name": "http", "port": 8000, "targetPort": "http"},
                {"name": "metrics", "port": 9090, "targetPort": 9090}]}})
        a = api.create(PODS, "default", _pod("a", {"8080": 31001, "9090": 31002},
                                             {"app": "httpbin"})).object
        b = api.create(PODS, "default", _pod("b", {"8080": 31003, "9090": 31004},
                                             {"app": "httpbin"})).object
        api.create(PODS, "default", _pod("other", {"8080": 31005}, {"app": "other"}))
        _set_ready(api, "a", True)
        _set_ready(api, "b", False)

        def subsets() -> list[Obj] | None:
            ep = get(api, ENDPOINTS, "httpbin")
            return ep.get("subsets") if ep else None

        found = await wait_until(lambda: (s := subsets()) and len(s) == 2 and s, "two subsets")
        by_pod = {(s.get("addresses") or s.get("notReadyAddresses"))[0]["targetRef"]["name"]: s
                  for s in found}
        assert by_pod["a"] == {
            "addresses": [{"ip": "127.0.0.1", "nodeName": "meshlab-control-plane",
                           "targetRef": {"kind": "Pod", "namespace": "default", "name": "a",
                                         "uid": a["metadata"]["uid"]}}],
            "ports": [{"name": "http", "port": 31001, "protocol": "TCP"},
                      {"name": "metrics", "port": 31002, "protocol": "TCP"}]}
        assert "addresses" not in by_pod["b"]
        assert by_pod["b"]["notReadyAddresses"][0]["targetRef"]["uid"] == b["metadata"]["uid"]
        assert by_pod["b"]["ports"][0] == {"name": "http", "port": 31003, "protocol": "TCP"}
        ep = get(api, ENDPOINTS, "httpbin")
        assert ep is not None
        assert ep["metadata"]["labels"] == {"app": "httpbin"}
        assert "ownerReferences" not in ep["metadata"]

        _set_ready(api, "b", True)
        await wait_until(lambda: all("addresses" in s and "notReadyAddresses" not in s
                                     for s in subsets() or [{}]), "b ready")
        api.delete(SERVICES, "default", "httpbin")
        await wait_until(lambda: get(api, ENDPOINTS, "httpbin") is None, "Endpoints deleted")


@async_test
async def test_services_without_selector_keep_user_managed_endpoints() -> None:
    """Is an Endpoints object the user wrote for a selector-less Service left alone?"""
    async with cluster(kubelet=False) as api:
        manual = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "external"},
                  "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": 5432}]}]}
        api.create(ENDPOINTS, "default", manual)
        api.create(SERVICES, "default", {"apiVersion": "v1", "kind": "Service",
                                         "metadata": {"name": "external"},
                                         "spec": {"ports": [{"port": 5432}]}})
        api.create(SERVICES, "default", {"apiVersion": "v1", "kind": "Service",
                                         "metadata": {"name": "marker"},
                                         "spec": {"selector": {"app": "x"},
                                                  "ports": [{"port": 80}]}})
        await wait_until(lambda: get(api, ENDPOINTS, "marker"), "the controller to catch up")
        ep = get(api, ENDPOINTS, "external")
        assert ep is not None
        assert ep["subsets"] == [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": 5432}]}]


# -- Namespaces and service accounts ------------------------------------------------------------
@async_test
async def test_system_namespaces_and_default_service_accounts_exist() -> None:
    """Does every namespace get a `default` ServiceAccount and the root CA ConfigMap, put back
    when deleted or edited?"""
    async with cluster(kubelet=False) as api:
        names = {ns["metadata"]["name"] for ns in api.list(NAMESPACES, None)[0]}
        assert set(controllers.SYSTEM_NAMESPACES) <= names
        api.create(NAMESPACES, "", {"apiVersion": "v1", "kind": "Namespace",
                                    "metadata": {"name": "lab"}})
        await wait_until(lambda: get(api, SERVICEACCOUNTS, "default", "lab"), "default SA")
        cm = await wait_until(lambda: get(api, CONFIGMAPS, "kube-root-ca.crt", "lab"), "CA map")
        assert cm["data"] == {"ca.crt": CA_PEM}
        for name in controllers.SYSTEM_NAMESPACES:
            await wait_until(lambda n=name: get(api, SERVICEACCOUNTS, "default", n),
                             f"the default SA in {name}")
        api.delete(SERVICEACCOUNTS, "lab", "default")
        await wait_until(lambda: get(api, SERVICEACCOUNTS, "default", "lab"), "SA recreated")
        cm["data"] = {"ca.crt": "edited"}
        api.update(CONFIGMAPS, "lab", "kube-root-ca.crt", cm)
        await wait_until(
            lambda: (x := get(api, CONFIGMAPS, "kube-root-ca.crt", "lab"))
            and x["data"] == {"ca.crt": CA_PEM}, "the CA restored")


@async_test
async def test_namespace_deletion_removes_contents_then_the_namespace() -> None:
    """Does deleting a namespace delete everything in it, report what remains while a
    finalizer holds an object, and remove the namespace once it is empty?"""
    async with cluster() as api:
        api.create(NAMESPACES, "", {"apiVersion": "v1", "kind": "Namespace",
                                    "metadata": {"name": "lab"}})
        api.create(DEPLOYMENTS, "lab", deployment(replicas=2))
        api.create(SERVICES, "lab", {"apiVersion": "v1", "kind": "Service",
                                     "metadata": {"name": "web"},
                                     "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})
        api.create(CONFIGMAPS, "lab", {"apiVersion": "v1", "kind": "ConfigMap",
                                       "metadata": {"name": "held",
                                                    "finalizers": ["example.com/hold"]}})
        await wait_until(lambda: len([p for p in items(api, PODS, "lab") if is_ready(p)]) == 2,
                         "pods running")
        api.delete(NAMESPACES, "", "lab")
        ns = await wait_until(
            lambda: (x := get(api, NAMESPACES, "lab", ""))
            and condition(x, "NamespaceFinalizersRemaining").get("status") == "True" and x,
            "the finalizer to be reported")
        assert ns["status"]["phase"] == "Terminating"
        assert condition(ns, "NamespaceContentRemaining")["message"] == (
            "Some resources are remaining: configmaps. has 1 resource instances")
        assert condition(ns, "NamespaceFinalizersRemaining")["message"] == (
            "Some content in the namespace has finalizers remaining: "
            "example.com/hold in 1 resource instances")
        for kind in (PODS, DEPLOYMENTS, REPLICASETS, SERVICES, ENDPOINTS, SERVICEACCOUNTS):
            assert items(api, kind, "lab") == [], kind.plural

        held = get(api, CONFIGMAPS, "held", "lab")
        assert held is not None
        del held["metadata"]["finalizers"]
        api.update(CONFIGMAPS, "lab", "held", held)
        await wait_until(lambda: get(api, NAMESPACES, "lab", "") is None, "the namespace to go")


@async_test
async def test_replicaset_releases_a_relabelled_pod_and_replaces_it() -> None:
    """Does `kubectl label pod <p> app-` take a pod out of its ReplicaSet (a classic debugging
    move) and get it replaced, and does `minReadySeconds` delay availability?"""
    async with cluster() as api:
        body = replica_set("web", 2)
        body["spec"]["minReadySeconds"] = 3600
        rs = api.create(REPLICASETS, "default", body).object
        pods = await wait_until(lambda: len(pods_of(api, rs)) == 2 and pods_of(api, rs), "pods")
        status = await wait_until(lambda: (x := get(api, REPLICASETS, "web"))
                                  and x["status"].get("readyReplicas") == 2 and x["status"],
                                  "ready pods")
        assert "availableReplicas" not in status  # not ready for an hour yet
        api.patch(REPLICASETS, "default", "web", MERGE_PATCH, b'{"spec": {"minReadySeconds": 0}}')
        await wait_until(lambda: (x := get(api, REPLICASETS, "web"))
                         and x["status"].get("availableReplicas") == 2, "available pods")
        pulled = pods[0]
        pulled["metadata"]["labels"] = {"app": "debug"}
        api.update(PODS, "default", pulled["metadata"]["name"], pulled)
        await wait_until(lambda: len(pods_of(api, rs)) == 2
                         and pulled["metadata"]["name"] not in
                         {p["metadata"]["name"] for p in pods_of(api, rs)}, "a replacement")
        kept = get(api, PODS, pulled["metadata"]["name"])
        assert kept is not None
        assert "ownerReferences" not in kept["metadata"]


WIDGETS_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {"group": "example.com", "scope": "Namespaced",
             "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                 "openAPIV3Schema": {"type": "object",
                                     "x-kubernetes-preserve-unknown-fields": True}}}]}}


@async_test
async def test_namespace_deletion_removes_custom_resources_too() -> None:
    """Are objects of a CRD-defined kind deleted with their namespace?"""
    async with cluster(kubelet=False) as api:
        api.create(rt("apiextensions.k8s.io", "customresourcedefinitions"), "", WIDGETS_CRD)
        widgets = api.registry.lookup("example.com", "v1", "widgets")
        assert widgets is not None
        api.create(NAMESPACES, "", {"apiVersion": "v1", "kind": "Namespace",
                                    "metadata": {"name": "lab"}})
        api.create(widgets, "lab", {"apiVersion": "example.com/v1", "kind": "Widget",
                                    "metadata": {"name": "w"}, "spec": {"size": 1}})
        api.delete(NAMESPACES, "", "lab")
        await wait_until(lambda: get(api, NAMESPACES, "lab", "") is None, "the namespace to go")
        assert items(api, widgets, "lab") == []


# -- Garbage collection -----------------------------------------------------------------------
DANGLING_OWNER = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "gone",
                  "uid": "00000000-0000-0000-0000-000000000000", "controller": True}


def replica_set(name: str, replicas: int) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "app", "image": "x"}]}}}}


@async_test
async def test_deleting_a_replicaset_deletes_its_pods_but_not_orphans() -> None:
    """Does a background delete of a ReplicaSet take its pods along, while
    `--cascade=orphan` leaves them running without an owner?"""
    async with cluster() as api:
        rs = api.create(REPLICASETS, "default", replica_set("cascade", 2)).object
        await wait_until(lambda: len(pods_of(api, rs)) == 2, "2 pods")
        api.delete(REPLICASETS, "default", "cascade")
        await wait_until(lambda: not [p for p in items(api, PODS)
                                      if p["metadata"]["labels"]["app"] == "cascade"],
                         "the pods to be collected")

        kept = api.create(REPLICASETS, "default", replica_set("kept", 2)).object
        await wait_until(lambda: len(pods_of(api, kept)) == 2, "2 pods")
        api.delete(REPLICASETS, "default", "kept", propagation="Orphan")
        orphans = [p for p in items(api, PODS) if p["metadata"]["labels"]["app"] == "kept"]
        assert len(orphans) == 2
        assert all("ownerReferences" not in p["metadata"] for p in orphans)
        # The collector works through events in order: once it has collected an object made
        # dangling after the orphaning, it has seen the orphans too.
        api.create(CONFIGMAPS, "default", {"apiVersion": "v1", "kind": "ConfigMap",
                                           "metadata": {"name": "barrier",
                                                        "ownerReferences": [DANGLING_OWNER]}})
        await wait_until(lambda: get(api, CONFIGMAPS, "barrier") is None, "the barrier")
        assert len([p for p in items(api, PODS) if p["metadata"]["labels"]["app"] == "kept"]) == 2


@async_test
async def test_an_object_with_one_owner_left_survives_and_loses_the_dangling_reference() -> None:
    """Does an object with two owners outlive the first and follow the second?"""
    async with cluster(kubelet=False) as api:
        owners = [api.create(CONFIGMAPS, "default", {"apiVersion": "v1", "kind": "ConfigMap",
                                                     "metadata": {"name": n}}).object
                  for n in ("owner-a", "owner-b")]
        refs = [{"apiVersion": "v1", "kind": "ConfigMap", "name": o["metadata"]["name"],
                 "uid": o["metadata"]["uid"]} for o in owners]
        api.create(CONFIGMAPS, "default", {"apiVersion": "v1", "kind": "ConfigMap",
                                           "metadata": {"name": "shared", "ownerReferences": refs}})
        api.delete(CONFIGMAPS, "default", "owner-a")
        await wait_until(
            lambda: (x := get(api, CONFIGMAPS, "shared"))
            and [r["name"] for r in x["metadata"]["ownerReferences"]] == ["owner-b"],
            "the dangling reference to be removed")
        api.delete(CONFIGMAPS, "default", "owner-b")
        await wait_until(lambda: get(api, CONFIGMAPS, "shared") is None, "the dependent to go")


@async_test
async def test_collector_cleans_up_dependents_orphaned_while_it_was_not_running() -> None:
    """After a crash, are dependents whose owner vanished meanwhile collected at start-up?"""
    api = ObjectApi(Store(None), ResourceRegistry())
    await controllers.bootstrap(api)
    api.create(CONFIGMAPS, "default", {"apiVersion": "v1", "kind": "ConfigMap",
                                       "metadata": {"name": "leftover",
                                                    "ownerReferences": [DANGLING_OWNER]}})
    collector = GarbageCollector(api)
    task = asyncio.create_task(collector.run())
    try:
        await wait_until(lambda: get(api, CONFIGMAPS, "leftover") is None, "the leftover to go")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@async_test
async def test_events_expire_one_ttl_after_they_were_last_seen() -> None:
    """Is an event deleted once its TTL after lastTimestamp has passed, and a fresh one kept?"""
    api = ObjectApi(Store(None), ResourceRegistry())
    await controllers.bootstrap(api)
    stale = "2020-01-01T00:00:00Z"
    for name, stamp in (("old.1", stale), ("new.1", now())):
        api.create(EVENTS, "default", {
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": name},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
            "reason": "Test", "message": "m", "type": "Normal",
            "firstTimestamp": stamp, "lastTimestamp": stamp})
    expiry = EventTTLController(api)
    task = asyncio.create_task(expiry.run())
    try:
        await wait_until(lambda: get(api, EVENTS, "old.1") is None, "the stale event to expire")
        assert get(api, EVENTS, "new.1") is not None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
