"""One pod on this node: schedule it, give it host ports, run its containers, report, stop.

Init containers with `restartPolicy: Always` (native sidecars) run like regular containers and
start first. Other init containers are reported as completed without running anything: images
are simulated and the generic twin never exits. Both are said in the pod's `Simulated` events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
from typing import Any

from ..apiserver.errors import ApiError
from ..apiserver.objects import now
from .container import ContainerRunner, image_id
from .context import GRACE_CAP, HOST_PORTS_ANNOTATION, RuntimeContext
from .podstatus import pod_status
from .probes import probe_ports
from .twins import twin_for

log = logging.getLogger(__name__)
Obj = dict[str, Any]
TERMINAL = ("Succeeded", "Failed")


def _listen_ports(container: Obj) -> list[int]:
    """TCP container ports to serve: the declared ones plus any a probe targets."""
    declared = [int(p["containerPort"]) for p in container.get("ports") or []
                if p.get("protocol", "TCP") == "TCP" and "containerPort" in p]
    return list(dict.fromkeys(declared + probe_ports(container)))


def _previous_host_ports(pod: Obj) -> dict[str, int]:
    raw = (pod["metadata"].get("annotations") or {}).get(HOST_PORTS_ANNOTATION, "")
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class PodWorker:
    """Drives one pod (by uid) from scheduling to deletion."""

    def __init__(self, ctx: RuntimeContext, pod: Obj) -> None:
        self.ctx = ctx
        self.pod = pod
        self.uid: str = pod["metadata"]["uid"]
        self.terminating = False
        self.runners: dict[str, ContainerRunner] = {}
        self._sidecars: list[ContainerRunner] = []
        self._init_statuses: list[Obj] = []
        self._host_ports: dict[int, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._changed = asyncio.Event()
        self._start_time = now()

    def changed(self) -> None:
        self._changed.set()

    def observe(self, pod: Obj) -> None:
        """A newer version of the pod from the watch."""
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self._changed.set()

    # -- main loop -----------------------------------------------------------------------
    async def run(self) -> None:
        if not self.pod["metadata"].get("deletionTimestamp") and self._admit():
            self._start_containers()
        self.changed()
        terminal = False
        while True:
            await self._changed.wait()
            self._changed.clear()
            if self.pod["metadata"].get("deletionTimestamp"):
                await self._terminate()
                return
            phase = self._write_status()
            if phase in TERMINAL and not terminal:
                terminal = True
                await self._stop_all(GRACE_CAP)  # sidecars end with the regular containers
                self._release_ports()

    def _admit(self) -> bool:
        """Bind to this node and record host ports before anything can become ready."""
        meta = self.pod["metadata"]
        pod = self.ctx.api.find(self.ctx.pod_rt, meta.get("namespace", ""), meta["name"])
        if pod is None or pod["metadata"].get("uid") != self.uid:
            return False
        self.pod = pod
        meta, spec = pod["metadata"], pod.setdefault("spec", {})
        scheduled = not spec.get("nodeName")
        if scheduled:
            spec["nodeName"] = self.ctx.node_name
        previous = _previous_host_ports(pod)
        for container in self._sidecar_specs() + (spec.get("containers") or []):
            for port in _listen_ports(container):
                if port not in self._host_ports:
                    hint = previous.get(str(port))
                    self._host_ports[port] = self.ctx.ports.allocate(
                        hint if isinstance(hint, int) else None)
        annotation = json.dumps({str(k): v for k, v in self._host_ports.items()})
        annotations = meta.setdefault("annotations", {})
        if scheduled or annotations.get(HOST_PORTS_ANNOTATION) != annotation:
            annotations[HOST_PORTS_ANNOTATION] = annotation
            try:
                self.pod = self.ctx.api.update(self.ctx.pod_rt, meta.get("namespace", ""),
                                               meta["name"], pod).object
            except ApiError as exc:
                log.warning("pod %s/%s could not be admitted: %s", meta.get("namespace"),
                            meta["name"], exc)
                self._release_ports()
                return False
        if scheduled:
            self.ctx.event(self.pod, "Normal", "Scheduled",
                           f"Successfully assigned {meta.get('namespace')}/{meta['name']} to "
                           f"{self.ctx.node_name}", component="default-scheduler")
        return True

    def _sidecar_specs(self) -> list[Obj]:
        return [c for c in self.pod["spec"].get("initContainers") or []
                if c.get("restartPolicy") == "Always"]

    def _start_containers(self) -> None:
        spec = self.pod["spec"]
        old = self.pod.get("status") or {}
        previous = {s["name"]: s for s in (old.get("containerStatuses") or [])
                    + (old.get("initContainerStatuses") or [])}
        claimed: set[int] = set()

        def runner(container: Obj, policy: str, is_init: bool) -> ContainerRunner:
            ports = [p for p in _listen_ports(container) if p not in claimed]
            claimed.update(ports)
            self._simulated_event(container, is_init)
            return ContainerRunner(self.ctx, self, container, ports, self._host_ports,
                                   restart_policy=policy, previous=previous.get(container["name"]))

        for container in spec.get("initContainers") or []:
            if container.get("restartPolicy") == "Always":
                self._sidecars.append(runner(container, "Always", True))
            else:
                self._simulated_event(container, True)
                self._init_statuses.append(self._completed_init(container))
        for container in spec.get("containers") or []:
            self.runners[container["name"]] = runner(
                container, spec.get("restartPolicy", "Always"), False)
        for item in [*self._sidecars, *self.runners.values()]:
            self._tasks.append(asyncio.create_task(item.run()))

    def _simulated_event(self, container: Obj, is_init: bool) -> None:
        image = container.get("image", "")
        twin = twin_for(image)
        kind = "init container" if is_init else "container"
        if is_init and container.get("restartPolicy") != "Always":
            what = "is reported as completed without running (images are simulated)"
        else:
            what = f"runs the built-in {twin.description}"
            if container.get("command") or container.get("args"):
                what += "; its command/args are not run (images are simulated)"
        self.ctx.event(self.pod, "Normal" if twin.known else "Warning", "Simulated",
                       f'image "{image}" is simulated: {kind} {container["name"]} {what}')

    def _completed_init(self, container: Obj) -> Obj:
        stamp = now()
        return {"name": container["name"], "image": container.get("image", ""),
                "imageID": image_id(container.get("image", "")), "ready": True,
                "started": False, "restartCount": 0, "lastState": {},
                "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                         "startedAt": stamp, "finishedAt": stamp}}}

    def runner(self, name: str) -> ContainerRunner | None:
        if name in self.runners:
            return self.runners[name]
        return next((r for r in self._sidecars if r.name == name), None)

    # -- status --------------------------------------------------------------------------
    def _write_status(self) -> str | None:
        meta = self.pod["metadata"]
        rt = self.ctx.pod_rt
        current = self.ctx.api.find(rt, meta.get("namespace", ""), meta["name"])
        if current is None or current["metadata"].get("uid") != self.uid:
            return None
        if not self.runners:  # not admitted: leave the status as the API server made it
            return current.get("status", {}).get("phase")
        init = list(self._init_statuses) + [r.status() for r in self._sidecars]
        status = pod_status(current.get("status") or {},
                            [r.status() for r in self.runners.values()], init,
                            current["spec"].get("restartPolicy", "Always"), self._start_time)
        if status != current.get("status"):
            current["status"] = status
            try:
                self.pod = self.ctx.api.update(rt, meta.get("namespace", ""), meta["name"],
                                               current, subresource="status").object
            except ApiError as exc:
                log.warning("status of pod %s/%s not written: %s", meta.get("namespace"),
                            meta["name"], exc)
        return status["phase"]

    # -- stopping ------------------------------------------------------------------------
    async def _stop_all(self, grace: float) -> None:
        """Regular containers first, then sidecars, as the kubelet orders it."""
        await asyncio.gather(*(r.stop(grace) for r in self.runners.values()))
        await asyncio.gather(*(r.stop(grace) for r in self._sidecars))

    def _release_ports(self) -> None:
        self.ctx.ports.release(list(self._host_ports.values()))
        self._host_ports.clear()

    async def _terminate(self) -> None:
        """Graceful deletion: stop the containers, then remove the pod (grace period 0)."""
        self.terminating = True
        meta = self.pod["metadata"]
        grace = min(float(meta.get("deletionGracePeriodSeconds") or 0), GRACE_CAP)
        for item in [*self.runners.values(), *self._sidecars]:
            if item.running:
                self.ctx.event(self.pod, "Normal", "Killing", f"Stopping container {item.name}")
        await self.shutdown(grace)
        with contextlib.suppress(ApiError):  # already gone: what we wanted
            self.ctx.api.delete(self.ctx.pod_rt, meta.get("namespace", ""), meta["name"],
                                grace_period=0, precondition_uid=self.uid)

    async def shutdown(self, grace: float) -> None:
        """Stop every process and task of this pod and free its ports."""
        self.terminating = True
        await self._stop_all(grace)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._release_ports()

    async def remove_files(self) -> None:
        await asyncio.to_thread(shutil.rmtree, self.ctx.pod_dir(self.pod), True)
