"""Flagger's controller in the embedded daemon (fluxcd/flagger v1.44.0
`pkg/controller/controller.go` syncHandler, `scheduler.go` scheduleCanaries, `job.go`): it
watches Canaries only, so a cluster without one costs a subscription and nothing else. Each
Canary gets one asyncio task that runs a tick at once (the bootstrap) and then every
`analysis.interval` (at least 10 s, as GetAnalysisInterval clamps it); a changed interval
restarts the task, a deleted Canary stops it. A new Canary first gets the `Initializing`
status (setPhaseInitializing).

Deployments, Services, Endpoints and MetricTemplates are read from the API server's store at
each tick, which is what upstream's listers and GETs amount to here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.errors import ApiError

from . import spec
from .scheduler import Scheduler

Obj = dict[str, Any]
CANARIES = "flagger.app/canaries"  # the store's key for the resource
log = logging.getLogger("meshlab.flagger")


class _Job:
    def __init__(self, task: asyncio.Task[None], interval: float) -> None:
        self.task, self.interval = task, interval


class FlaggerController:
    def __init__(self, api: ObjectApi) -> None:
        self.api = api
        self.scheduler = Scheduler(api)
        self.jobs: dict[tuple[str, str], _Job] = {}

    async def run(self) -> None:
        """Schedule a job per Canary until cancelled."""
        with self.api.store.subscribe(CANARIES) as sub:
            rt = self.scheduler.canaries
            for cd in self.api.list(rt, None)[0]:
                self._sync_logged(cd)
            try:
                while True:
                    event = await sub.queue.get()
                    meta = event.object["metadata"]
                    if event.type == "DELETED":
                        self._stop((meta["namespace"], meta["name"]))
                    else:
                        current = self.api.find(rt, meta["namespace"], meta["name"])
                        if current is not None:
                            self._sync_logged(current)
            finally:
                for key in list(self.jobs):
                    self._stop(key)

    def _sync_logged(self, cd: Obj) -> None:
        """One Canary that cannot be scheduled is logged; the others, and the cluster, go on."""
        try:
            self._sync(cd)
        except Exception:
            meta = cd.get("metadata") or {}
            log.exception("Canary %s.%s could not be scheduled", meta.get("name"),
                          meta.get("namespace"))

    def _sync(self, cd: Obj) -> None:
        """syncHandler + scheduleCanaries for one Canary."""
        meta = cd["metadata"]
        key = (meta["namespace"], meta["name"])
        if meta.get("deletionTimestamp"):
            return
        if not (cd.get("status") or {}).get("conditions"):
            try:
                self.scheduler.status.set_initializing(cd)
            except ApiError as err:
                log.error("%s.%s unable to set initializing status: %s", meta["name"],
                          meta["namespace"], err.message)
                return
        interval = spec.analysis_interval(cd)
        job = self.jobs.get(key)
        if job is not None and job.interval == interval and not job.task.done():
            return
        if job is not None:
            job.task.cancel()
        task = asyncio.create_task(self._tick_every(key, interval),
                                   name=f"flagger-{meta['name']}.{meta['namespace']}")
        self.jobs[key] = _Job(task, interval)

    def _stop(self, key: tuple[str, str]) -> None:
        job = self.jobs.pop(key, None)
        if job is not None:
            job.task.cancel()

    async def _tick_every(self, key: tuple[str, str], interval: float) -> None:
        loop = asyncio.get_running_loop()
        namespace, name = key
        while True:
            started = loop.time()
            try:
                await self.scheduler.advance(name, namespace)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Canary %s.%s: the analysis step failed", name, namespace)
            # a tick longer than the interval makes the next start at once (Go's ticker drops
            # the missed ticks)
            await asyncio.sleep(max(0.0, started + interval - loop.time()))
