"""The loop every controller shares: watch events in, keys on a work queue, one reconcile at a time.

A real controller-manager reconciles from informer caches; here the store *is* the cache (reads are
in-process and always current), so a controller only needs a de-duplicating queue of keys, an
initial full sync, a slow periodic resync and delayed requeues. Reconcile functions read the
current state and are idempotent: running one twice, or after a missed event, is harmless.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections.abc import Hashable, Iterable
from typing import Any, ClassVar, Generic, TypeVar

from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.errors import ApiError
from labs.embedded.apiserver.resources import ResourceType
from labs.embedded.apiserver.store import Event

Obj = dict[str, Any]

MAX_BACKOFF_SECONDS = 30.0

K = TypeVar("K", bound=Hashable)


class Controller(abc.ABC, Generic[K]):
    """Base class: subclasses say which keys an event touches and how to reconcile one key.

    `reconcile` returns None when done, or a number of seconds after which the key should be
    looked at again (a deadline, a minReadySeconds wait, a namespace still emptying).
    """

    name: ClassVar[str] = "controller"
    resync_seconds: ClassVar[float] = 60.0

    def __init__(self, api: ObjectApi) -> None:
        self.api = api
        self.log = logging.getLogger(f"meshlab.controllers.{self.name}")
        self._dirty: dict[K, None] = {}  # insertion-ordered set: the work queue
        self._wake = asyncio.Event()
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._failures: dict[K, int] = {}

    # -- what subclasses provide -------------------------------------------------------------
    @abc.abstractmethod
    def initial_keys(self) -> Iterable[K]:
        """Every key worth reconciling now (start-up and periodic resync)."""

    @abc.abstractmethod
    def keys_for(self, event: Event) -> Iterable[K]:
        """The keys a store event may affect."""

    @abc.abstractmethod
    def reconcile(self, key: K) -> float | None:
        """Bring the world in line with the object named by `key`."""

    # -- helpers for subclasses --------------------------------------------------------------
    def resource(self, group: str, plural: str) -> ResourceType:
        rt = self.api.registry.lookup(group, "v1", plural)
        if rt is None:
            raise RuntimeError(f"the API server does not serve {plural}.{group or 'core'}/v1")
        return rt

    # -- the queue ---------------------------------------------------------------------------
    def enqueue(self, key: K) -> None:
        self._dirty[key] = None
        self._wake.set()

    def enqueue_after(self, key: K, delay: float) -> None:
        """Look at `key` again after `delay` seconds; an earlier pending requeue wins."""
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        timer = self._timers.get(key)
        if timer is not None and not timer.cancelled() and timer.when() <= due:
            return
        if timer is not None:
            timer.cancel()
        self._timers[key] = loop.call_at(due, self._fire, key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.enqueue(key)

    def _enqueue_all(self) -> None:
        try:
            for key in self.initial_keys():
                self.enqueue(key)
        except Exception:
            self.log.exception("%s: listing keys for a full sync failed", self.name)

    # -- running -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Reconcile until cancelled."""
        with self.api.store.subscribe(None) as sub:
            self._enqueue_all()
            pump = asyncio.create_task(self._pump(sub.queue), name=f"{self.name}-events")
            resync = asyncio.create_task(self._resync(), name=f"{self.name}-resync")
            try:
                await self._work()
            finally:
                pump.cancel()
                resync.cancel()
                for timer in self._timers.values():
                    timer.cancel()
                self._timers.clear()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.gather(pump, resync)

    async def _pump(self, queue: asyncio.Queue[Event]) -> None:
        while True:
            event = await queue.get()
            try:
                for key in self.keys_for(event):
                    self.enqueue(key)
            except Exception:
                self.log.exception("%s: routing a %s event for %s failed", self.name,
                                   event.type, event.key)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.resync_seconds)
            self._enqueue_all()

    async def _work(self) -> None:
        while True:
            if not self._dirty:
                self._wake.clear()
                await self._wake.wait()
                continue
            key = next(iter(self._dirty))
            del self._dirty[key]
            self.process(key)
            await asyncio.sleep(0)  # let the event pump and other controllers run

    def process(self, key: K) -> None:
        """Reconcile one key; failures are retried with backoff, never end the controller."""
        try:
            requeue = self.reconcile(key)
        except ApiError as exc:
            if exc.code in (404, 409):
                # Someone changed or removed an object under us: the watch event for that
                # change will bring us back; the short requeue covers a lost race.
                self.log.debug("%s: %s raced another writer (%s)", self.name, key, exc.message)
                self.enqueue_after(key, 0.2)
            else:
                self._retry(key, f"{exc.code} {exc.reason}: {exc.message}")
            return
        except Exception as exc:  # a bug must not stop every other object being reconciled
            self.log.exception("%s: reconciling %s failed", self.name, key)
            self._retry(key, repr(exc))
            return
        self._failures.pop(key, None)
        if requeue is not None:
            self.enqueue_after(key, max(requeue, 0.0))

    def _retry(self, key: K, why: str) -> None:
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        delay = min(0.5 * 2 ** (failures - 1), MAX_BACKOFF_SECONDS)
        self.log.warning("%s: %s failed (%s); retrying in %.1fs", self.name, key, why, delay)
        self.enqueue_after(key, delay)


def owner_key(obj: Obj, kind: str) -> tuple[str, str] | None:
    """(namespace, name) of the object's controller when it is of `kind`."""
    meta = obj.get("metadata", {})
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == kind:
            return meta.get("namespace", ""), ref.get("name", "")
    return None
