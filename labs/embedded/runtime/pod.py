"""One pod on this node: schedule it, give it host ports, run its containers, report, stop.

Init containers with `restartPolicy: Always` (native sidecars) run like regular containers and
start first: the regular containers start once every one of them has started (its startupProbe
passed, e.g. Linkerd's proxy answering `/ready`), as the kubelet orders them. Other init
containers are reported as completed without running anything: images are simulated and the
generic twin never exits. Both are said in the pod's `Simulated` events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from pathlib import Path
from typing import Any

from ..apiserver.errors import ApiError
from ..apiserver.objects import now
from ..workload import running_containers
from . import network
from .container import ContainerRunner, image_id
from .context import GRACE_CAP, RuntimeContext
from .podstatus import pod_status
from .twins import twin_for

log = logging.getLogger(__name__)
Obj = dict[str, Any]
TERMINAL = ("Succeeded", "Failed")
SIDECAR_START_POLL = 0.05  # seconds between looks at whether the native sidecars started


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
        self._ports = network.PodPorts(meshed=False)
        self.command_paths: dict[str, str] = {}  # see exec_command
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
            await self.forwarder_ready()
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
        """Bind to this node and record its ports before anything can start (the control plane
        configures a sidecar from them) or become ready."""
        meta = self.pod["metadata"]
        pod = self.ctx.api.find(self.ctx.pod_rt, meta.get("namespace", ""), meta["name"])
        if pod is None or pod["metadata"].get("uid") != self.uid:
            return False
        self.pod = pod
        meta, spec = pod["metadata"], pod.setdefault("spec", {})
        scheduled = not spec.get("nodeName")
        if scheduled:
            spec["nodeName"] = self.ctx.node_name
        self._ports = network.allocate(pod, self._containers(), self.ctx.ports)
        wanted = self._ports.annotations()
        annotations = meta.setdefault("annotations", {})
        if scheduled or any(annotations.get(k) != v for k, v in wanted.items()):
            annotations.update(wanted)
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

    async def forwarder_ready(self, exec_session: bool = False) -> None:
        """A pod without a sidecar reaches services through the node forwarder, which starts on
        first need: before the pod's containers start if one of their programs dials services,
        before an exec session into it (the command may: `curl`)."""
        start = self.ctx.start_forwarder
        if start is None or self._ports.meshed or self.ctx.forwarder_port is None:
            return
        if exec_session or any(twin_for(c.get("image", "")).dials_services
                               for c in self._containers()):
            await start()

    def _containers(self) -> list[Obj]:
        """The containers that run: native sidecars (restartable init containers) first."""
        return running_containers(self.pod)

    def _write_shims(self) -> Path | None:
        """Scripts for the commands the pod's images provide; their directory goes on PATH."""
        commands: dict[str, list[str]] = {}
        for container in self._containers():
            for name, argv in twin_for(container.get("image", "")).commands.items():
                commands.setdefault(name, argv)
        if not commands:
            return None
        bin_dir = self.ctx.pod_dir(self.pod) / "bin"
        self.command_paths = network.write_shims(bin_dir, commands)
        return bin_dir

    def exec_command(self, command: list[str]) -> list[str]:
        """`kubectl exec` argv with an image's absolute command path (`/usr/bin/fortio`)
        replaced by its shim."""
        if command and command[0] in self.command_paths:
            return [self.command_paths[command[0]], *command[1:]]
        return command

    def _start_containers(self) -> None:
        spec = self.pod["spec"]
        old = self.pod.get("status") or {}
        previous = {s["name"]: s for s in (old.get("containerStatuses") or [])
                    + (old.get("initContainerStatuses") or [])}
        claimed: set[int] = set()
        bin_dir = self._write_shims()
        forwarder = self.ctx.forwarder_port

        def runner(container: Obj, policy: str, is_init: bool) -> ContainerRunner:
            ports = [p for p in network.listen_ports(container) if p not in claimed]
            claimed.update(ports)
            self._simulated_event(container, is_init)
            item = ContainerRunner(
                self.ctx, self, container, ports, self._ports.bind_ports(container),
                restart_policy=policy, previous=previous.get(container["name"]),
                network=network.network_env(self.pod, self._ports, container, forwarder),
                bin_dir=bin_dir)
            network.prepare_home(item.workdir, self._ports, forwarder)
            return item

        for container in spec.get("initContainers") or []:
            if container.get("restartPolicy") == "Always":
                self._sidecars.append(runner(container, "Always", True))
            else:
                self._simulated_event(container, True)
                self._init_statuses.append(self._completed_init(container))
        for container in spec.get("containers") or []:
            self.runners[container["name"]] = runner(
                container, spec.get("restartPolicy", "Always"), False)
        self._tasks += [asyncio.create_task(item.run()) for item in self._sidecars]
        self._tasks.append(asyncio.create_task(self._run_after_sidecars()))

    async def _run_after_sidecars(self) -> None:
        """The regular containers, once each native sidecar has started or ended for good
        (KEP-753: the kubelet starts the next container after a sidecar's startup probe)."""
        while not all(s.started or s.finished for s in self._sidecars):
            if self.terminating:
                return
            await asyncio.sleep(SIDECAR_START_POLL)
        await asyncio.gather(*(item.run() for item in self.runners.values()))

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
        self.ctx.ports.release(self._ports.allocated())
        self._ports = network.PodPorts(meshed=False)

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
