"""What every part of the runtime shares: the API, the state directory, ports, timing knobs."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..apiserver.api import ObjectApi
from ..apiserver.resources import ResourceType
from ..workload import pod_dir_name
from .forkserver import ForkServer
from .ports import PortAllocator

Obj = dict[str, Any]
COMPONENT = "kubelet"
BACKOFF_ENV = "MESHLAB_RESTART_BACKOFF_BASE"
BACKOFF_CAP = 300.0  # the kubelet's 5 minutes
BACKOFF_RESET_AFTER = 600.0  # a container that ran this long starts its back-off afresh
# Pods ask for 30 s of grace by default; on a laptop that only makes learners wait, so the
# runtime SIGKILLs after at most this many seconds.
GRACE_CAP = 3.0


def backoff_base() -> float:
    """Restart back-off base (seconds): 10 like the kubelet, or $MESHLAB_RESTART_BACKOFF_BASE."""
    raw = os.environ.get(BACKOFF_ENV, "10")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{BACKOFF_ENV}={raw!r} is not a number of seconds (e.g. 0.5)") from None
    if value < 0:
        raise ValueError(f"{BACKOFF_ENV}={raw!r} must not be negative")
    return value


@dataclass
class RuntimeContext:
    api: ObjectApi
    pods_dir: Path
    node_name: str
    ports: PortAllocator = field(default_factory=PortAllocator)
    forwarder_port: int | None = None  # the node forwarder's HTTP-proxy port, if it runs
    # awaited before a pod without a sidecar needs the forwarder (it starts on first need)
    start_forwarder: Callable[[], Awaitable[None]] | None = None
    backoff_base: float = field(default_factory=backoff_base)
    forks: ForkServer = field(default_factory=ForkServer)  # forks the app twins

    @property
    def pod_rt(self) -> ResourceType:
        rt = self.api.registry.lookup("", "v1", "pods")
        assert rt is not None
        return rt

    def pod_dir(self, pod: Obj) -> Path:
        return self.pods_dir / pod_dir_name(pod)

    def event(self, pod: Obj, event_type: str, reason: str, message: str,
              component: str = COMPONENT) -> None:
        self.api.record_event(dict(pod, apiVersion="v1", kind="Pod"), event_type, reason,
                              message, component)
