"""The embedded cluster's kubelet: watches pods, runs them as local processes, serves logs, exec,
port-forward and the containers' CPU and memory (metrics.k8s.io).

`PodRuntime` implements the API server's `PodIO` protocol; the daemon runs `run()` as a task and
awaits `shutdown()` when it stops.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from ..apiserver.api import ObjectApi
from ..apiserver.errors import ApiError, bad_request
from ..apiserver.metrics_api import Usage, Window
from ..apps import localhost
from ..paths import pods_dir
from . import exec as exec_stream
from . import logs, portforward, usage
from .context import GRACE_CAP, RuntimeContext
from .node import register_node
from .pod import TERMINAL, PodWorker
from .process import kill_leftovers, previous_log

log = logging.getLogger(__name__)
Obj = dict[str, Any]
SHUTDOWN_GRACE = 2.0


class PodRuntime:
    """Runs the pods bound to (or schedulable on) one node."""

    def __init__(self, api: ObjectApi, state_dir: Path, node_name: str,
                 forwarder_port: int | None = None,
                 start_forwarder: Callable[[], Awaitable[None]] | None = None) -> None:
        """`forwarder_port`: the node forwarder's HTTP-proxy port, which pods without a sidecar
        use to reach services by name (None: no proxy settings for them); `start_forwarder`
        starts it unless it runs, awaited before such a pod needs it."""
        self.ctx = RuntimeContext(api, pods_dir(state_dir), node_name,
                                  forwarder_port=forwarder_port,
                                  start_forwarder=start_forwarder)
        self._workers: dict[str, PodWorker] = {}  # by pod uid
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cleanups: set[asyncio.Task[None]] = set()
        self._meter = usage.UsageMeter()

    # -- lifecycle -----------------------------------------------------------------------
    async def run(self) -> None:
        """Until cancelled: converge every pod's processes with the API's pods."""
        pods_dir = self.ctx.pods_dir
        pods_dir.mkdir(parents=True, exist_ok=True)
        killed = await asyncio.to_thread(kill_leftovers, pods_dir)
        if killed:
            log.info("killed %d container processes left by a previous daemon", len(killed))
        register_node(self.ctx.api, self.ctx.node_name)
        try:
            with self.ctx.api.store.subscribe("/pods") as sub:
                existing = self.ctx.api.store.list("/pods")
                for pod in existing:
                    self._observe("ADDED", pod)
                await self._remove_stale_dirs({p["metadata"]["uid"] for p in existing})
                while True:
                    event = await sub.queue.get()
                    self._observe(event.type, copy.deepcopy(event.object))
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        """Stop every process (SIGTERM, short grace, SIGKILL); pods stay in the store."""
        workers, self._workers = list(self._workers.values()), {}
        tasks, self._tasks = list(self._tasks.values()), {}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(w.shutdown(SHUTDOWN_GRACE) for w in workers),
                             return_exceptions=True)
        await asyncio.gather(*self._cleanups, return_exceptions=True)
        await self.ctx.forks.stop()

    def _observe(self, event_type: str, pod: Obj) -> None:
        uid = pod["metadata"]["uid"]
        if event_type == "DELETED":
            worker = self._workers.pop(uid, None)
            task = self._tasks.pop(uid, None)
            if worker is not None and task is not None:
                self._spawn_cleanup(self._forget(worker, task))
            return
        node = pod.get("spec", {}).get("nodeName")
        if node and node != self.ctx.node_name:
            return  # bound elsewhere: stays Pending, as on a cluster without that node
        if uid in self._workers:
            self._workers[uid].observe(pod)
        elif pod.get("status", {}).get("phase") not in TERMINAL:
            worker = PodWorker(self.ctx, pod)
            self._workers[uid] = worker
            self._tasks[uid] = task = asyncio.create_task(worker.run())
            task.add_done_callback(self._report_crash)

    async def _forget(self, worker: PodWorker, task: asyncio.Task[None]) -> None:
        """A pod removed outright (grace period 0, or after our own graceful stop)."""
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await worker.shutdown(GRACE_CAP)
        await worker.remove_files()

    def _spawn_cleanup(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    @staticmethod
    def _report_crash(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("pod worker failed", exc_info=task.exception())

    async def _remove_stale_dirs(self, live_uids: set[str]) -> None:
        """Directories of pods deleted while the daemon was down."""
        for path in self.ctx.pods_dir.iterdir():
            if path.is_dir() and path.name.rsplit("_", 1)[-1] not in live_uids:
                await asyncio.to_thread(shutil.rmtree, path, True)

    # -- PodIO ---------------------------------------------------------------------------
    def _worker(self, pod: Obj) -> PodWorker | None:
        return self._workers.get(pod["metadata"].get("uid", ""))

    def log_stream(self, pod: Obj, container: str, *, follow: bool, tail_lines: int | None,
                   previous: bool, since_seconds: int | None, timestamps: bool,
                   ) -> AsyncIterator[bytes]:
        """The container's log; errors (nothing logged yet, no previous run) raise ApiError
        here, before the response starts."""
        name = pod["metadata"]["name"]
        path = self.ctx.pod_dir(pod) / f"{container}.log"
        worker = self._worker(pod)
        runner = worker.runner(container) if worker else None
        if previous:
            path = previous_log(path)
            if not path.exists():
                raise bad_request(f'previous terminated container "{container}" in pod '
                                  f'"{name}" not found')
            follow = False
        elif not path.exists():
            state = runner.state if runner else {}
            reason = (state.get("waiting") or {}).get("reason", "ContainerCreating")
            raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: '
                              f"{reason}")
        run = runner.process if runner else None
        return logs.stream(path, follow=follow, tail_lines=tail_lines,
                           since_seconds=since_seconds, timestamps=timestamps,
                           active=lambda: run is not None and run.running)

    async def exec_websocket(self, request: web.Request, pod: Obj, container: str,
                             command: list[str], stdin: bool, tty: bool) -> web.StreamResponse:
        phase = pod.get("status", {}).get("phase")
        if phase in TERMINAL:
            raise bad_request(f"cannot exec into a container in a completed pod; current phase "
                              f"is {phase}")
        worker = self._worker(pod)
        runner = worker.runner(container) if worker else None
        if worker is None or runner is None or not runner.running or runner.env is None:
            raise ApiError(400, "BadRequest", f'unable to upgrade connection: container not '
                           f'found ("{container}")')
        await worker.forwarder_ready(exec_session=True)
        return await exec_stream.exec_websocket(request, worker.exec_command(command),
                                                runner.env, runner.workdir, stdin, tty,
                                                runner.exec_pids)

    async def portforward(self, request: web.Request, pod: Obj) -> web.StreamResponse:
        """`pods/portforward`: forward to ports of the pod's `localhost` (its port map, which
        every container of the pod carries in its environment)."""
        worker = self._worker(pod)
        if worker is None or pod.get("status", {}).get("phase") in TERMINAL:
            raise ApiError(400, "BadRequest", "unable to upgrade connection: pod does not exist")
        envs = [r.env for r in worker.runners.values() if r.env is not None]
        ports = localhost.pod_localhost(envs[0]) if envs else {}
        return await portforward.portforward_stream(
            request, portforward.PortForwarder(pod, ports))

    # -- MetricsSource -------------------------------------------------------------------
    async def pod_usage(self, pods: list[Obj]) -> tuple[Window, dict[str, dict[str, Usage]]]:
        """Each running container's processes: its main process's session and its exec
        sessions (exec'd processes run in the container's cgroup on a real node)."""
        groups: dict[str, dict[str, list[int]]] = {}
        for pod in pods:
            worker = self._worker(pod)
            spec = pod.get("spec", {})
            for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
                runner = worker.runner(container["name"]) if worker else None
                if runner is not None and runner.process is not None and runner.running:
                    groups.setdefault(pod["metadata"]["uid"], {})[runner.name] = [
                        runner.process.pid, *runner.exec_pids]
        return await self._meter.containers(groups)

    async def node_usage(self) -> tuple[Window, dict[str, Usage]]:
        window, node = await self._meter.node()
        return window, {self.ctx.node_name: node}
