"""Events expire after an hour, as with kube-apiserver's default `--event-ttl=1h`.

A two-day workshop records thousands of events (every pod start, probe failure, rollout); without
expiry the store, every `kubectl get events` and every namespace deletion would keep growing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.errors import ApiError
from labs.embedded.apiserver.objects import parse_time
from labs.embedded.apiserver.store import Event

from .base import Controller

EVENT_TTL = dt.timedelta(hours=1)

Key = tuple[str, str]  # namespace, name


def _last_seen(event: dict) -> dt.datetime | None:
    stamp = (event.get("lastTimestamp") or event.get("eventTime")
             or event.get("metadata", {}).get("creationTimestamp"))
    try:
        return parse_time(stamp) if stamp else None
    except ValueError:
        return None


class EventTTLController(Controller[Key]):
    """Deletes each Event one TTL after it was last seen."""

    name = "event-ttl"
    resync_seconds = 300.0

    def __init__(self, api: ObjectApi, ttl: dt.timedelta = EVENT_TTL) -> None:
        super().__init__(api)
        self.ttl = ttl
        self.events = self.resource("", "events")

    def initial_keys(self) -> Iterable[Key]:
        items, _ = self.api.list(self.events, None)
        return [(e["metadata"].get("namespace", ""), e["metadata"]["name"]) for e in items]

    def keys_for(self, event: Event) -> Iterable[Key]:
        if event.key != self.events.key or event.type == "DELETED":
            return []
        meta = event.object["metadata"]
        return [(meta.get("namespace", ""), meta["name"])]

    def reconcile(self, key: Key) -> float | None:
        event = self.api.find(self.events, *key)
        if event is None:
            return None
        seen = _last_seen(event)
        if seen is None:
            return None
        remaining = (seen + self.ttl - dt.datetime.now(dt.UTC)).total_seconds()
        if remaining > 0:
            return remaining
        try:
            self.api.delete(self.events, *key)
        except ApiError as err:
            if err.code != 404:
                raise
        return None
