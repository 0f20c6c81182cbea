"""One container's life: configure, start, probe, restart with back-off, report its status.

Restarts follow the kubelet: the first restart after a crash is immediate, the next ones wait
`base`, 2×`base`, … up to 5 minutes (waiting reason CrashLoopBackOff, event BackOff); a container
that ran for 10 minutes starts afresh. While a probe-less container's ports do not answer yet,
it is running but not ready. A readiness probe is tried a few times a second until it first
succeeds (the kubelet would wait `periodSeconds`; learners should not), then every
`periodSeconds`, going unready after `failureThreshold` failures in a row.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from ..apiserver.objects import now
from ..loopback import tcp_check
from . import process
from .context import BACKOFF_CAP, BACKOFF_RESET_AFTER, GRACE_CAP, RuntimeContext
from .environment import ContainerConfigError, container_env
from .probes import Probe
from .twins import twin_for

Obj = dict[str, Any]
FAST_POLL = 0.2
CONFIG_RETRY = 1.0


class PodHandle(Protocol):
    """What a container needs from its pod's worker."""

    pod: Obj
    terminating: bool

    def changed(self) -> None: ...


def image_id(image: str) -> str:
    """A stable, content-free image reference: images are simulated, never pulled."""
    digest = hashlib.sha256(image.encode()).hexdigest()
    return f"docker-pullable://{image.split('@')[0]}@sha256:{digest}"


def should_restart(policy: str, code: int) -> bool:
    return policy == "Always" or (policy == "OnFailure" and code != 0)


class ContainerRunner:
    """Supervises the processes of one container of one pod."""

    def __init__(self, ctx: RuntimeContext, pod: PodHandle, spec: Obj, listen_ports: list[int],
                 bind_ports: dict[int, int], *, restart_policy: str,
                 previous: Obj | None = None, network: Mapping[str, str] | None = None,
                 bin_dir: Path | None = None) -> None:
        """`listen_ports`: the container ports its process serves; `bind_ports`: container
        port -> the port on 127.0.0.1 the process listens on (and the probes check)."""
        self.ctx = ctx
        self.handle = pod
        self.spec = spec
        self.name: str = spec["name"]
        self.restart_policy = restart_policy
        self.listen_ports = listen_ports
        self.bind_ports = bind_ports
        self.network = dict(network or {})
        self.bin_dir = bin_dir
        self.state: Obj = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: Obj = {}
        self.ready = False
        self.started = False
        self.restart_count = 0
        self.container_id = ""
        self.env: dict[str, str] | None = None
        self.process: process.ContainerProcess | None = None
        self.exec_pids: set[int] = set()  # `kubectl exec` sessions, stopped with the container
        self.finished = False  # terminated for good (restartPolicy said no)
        self._stopping = False
        self._wake = asyncio.Event()
        self._last_probe_event = 0.0
        if previous and previous.get("containerID"):  # ran under a previous daemon
            self.restart_count = int(previous.get("restartCount", 0)) + 1
            self.last_state = {"terminated": {
                "exitCode": 255, "reason": "Unknown", "startedAt": _started_at(previous),
                "finishedAt": now(), "containerID": previous["containerID"],
                "message": "the embedded cluster's daemon stopped while the container ran"}}

    # -- paths ---------------------------------------------------------------------------
    @property
    def workdir(self) -> Path:
        return self.ctx.pod_dir(self.handle.pod) / self.name

    @property
    def log_path(self) -> Path:
        return self.ctx.pod_dir(self.handle.pod) / f"{self.name}.log"

    # -- status --------------------------------------------------------------------------
    def status(self) -> Obj:
        out: Obj = {"name": self.name, "image": self.spec.get("image", ""),
                    "imageID": image_id(self.spec.get("image", "")), "ready": self.ready,
                    "started": self.started, "restartCount": self.restart_count,
                    "state": self.state, "lastState": self.last_state}
        if self.container_id:
            out["containerID"] = self.container_id
        return out

    # -- lifecycle -----------------------------------------------------------------------
    async def run(self) -> None:
        backoff = 0.0
        restarting = False
        while not self._stopping:
            env = await self._configure()
            if env is None:
                return
            started_at = time.monotonic()
            code = await self._run_once(env, restarting)
            restarting = True
            if self._stopping or not should_restart(self.restart_policy, code):
                self.finished = True
                self.handle.changed()
                return
            self.last_state = self.state
            if time.monotonic() - started_at > BACKOFF_RESET_AFTER:
                backoff = 0.0
            delay, backoff = backoff, min(max(backoff * 2, self.ctx.backoff_base), BACKOFF_CAP)
            if delay > 0:
                await self._back_off(delay)

    async def _configure(self) -> dict[str, str] | None:
        """The environment, retried while a ConfigMap/Secret it needs is missing."""
        reported = ""
        while not self._stopping:
            try:
                return container_env(self.ctx.api, self.handle.pod, self.spec, self.workdir,
                                     network=self.network, bin_dir=self.bin_dir)
            except ContainerConfigError as exc:
                message = str(exc)
                self.state = {"waiting": {"reason": "CreateContainerConfigError",
                                          "message": message}}
                if message != reported:
                    self.ctx.event(self.handle.pod, "Warning", "Failed", f"Error: {message}")
                    self.handle.changed()
                    reported = message
            await self._sleep(CONFIG_RETRY)
        return None

    async def _run_once(self, env: dict[str, str], restart: bool) -> int:
        """One run; a restart is counted once the new process exists, so that a status never
        shows the new count with the previous run's container id."""
        pod = self.handle.pod
        twin = twin_for(self.spec.get("image", ""))
        pod_dir = self.ctx.pod_dir(pod)
        argv = twin.argv([self.bind_ports[p] for p in self.listen_ports])
        proc = await process.start(argv, env, self.workdir, self.log_path,
                                   pod_dir / f"{self.name}.pid", self.ctx.forks)
        self.env, self.process = env, proc
        if restart:
            self.restart_count += 1
        self.container_id = f"meshlab://{proc.pid}"
        started = now()
        self.state = {"running": {"startedAt": started}}
        self.ctx.event(pod, "Normal", "Created", f"Created container: {self.name}")
        self.ctx.event(pod, "Normal", "Started", f"Started container {self.name}")
        self.handle.changed()
        probes = asyncio.create_task(self._probe(proc))
        code = await proc.wait()
        probes.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probes
        self.ready = self.started = False
        self.state = {"terminated": {
            "exitCode": code, "reason": "Completed" if code == 0 else "Error",
            "startedAt": started, "finishedAt": now(), "containerID": self.container_id}}
        self.handle.changed()
        return code

    async def _back_off(self, delay: float) -> None:
        pod, meta = self.handle.pod, self.handle.pod["metadata"]
        ident = f"{meta['name']}_{meta.get('namespace', '')}({meta['uid']})"
        self.state = {"waiting": {"reason": "CrashLoopBackOff", "message": (
            f"back-off {_duration(delay)} restarting failed container={self.name} pod={ident}")}}
        self.ctx.event(pod, "Warning", "BackOff",
                       f"Back-off restarting failed container {self.name} in pod {ident}")
        self.handle.changed()
        await self._sleep(delay)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def stop(self, grace: float) -> None:
        """Stop for good (pod deleted or daemon stopping): SIGTERM, SIGKILL after `grace`."""
        self._stopping = True
        self._wake.set()
        for pid in list(self.exec_pids):
            process.kill_group(pid, signal.SIGKILL)
        if self.process is not None and self.process.running:
            await self.process.stop(grace)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    # -- probes --------------------------------------------------------------------------
    def _probe_of(self, kind: str) -> Probe | None:
        spec = self.spec.get(f"{kind.lower()}Probe")
        return Probe(kind, spec, self.spec, self.bind_ports) if spec else None

    async def _probe(self, proc: process.ContainerProcess) -> None:
        """Startup probe first (it gates the others), then readiness and liveness together."""
        startup = self._probe_of("Startup")
        if startup is not None and not await self._startup(startup, proc):
            return
        self.started = True
        self.handle.changed()
        liveness = self._probe_of("Liveness")
        tasks = [asyncio.create_task(self._readiness())]
        if liveness is not None:
            tasks.append(asyncio.create_task(self._liveness(liveness, proc)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    def _set_ready(self, ready: bool) -> None:
        if ready != self.ready:
            self.ready = ready
            self.handle.changed()

    async def _ports_answer(self) -> bool:
        for port in self.listen_ports:
            if not (await tcp_check(self.bind_ports[port], 1.0)).ok:
                return False
        return True

    async def _readiness(self) -> None:
        probe = self._probe_of("Readiness")
        if probe is None:
            while not await self._ports_answer():
                await asyncio.sleep(FAST_POLL)
            self._set_ready(True)
            return
        await asyncio.sleep(probe.initial_delay)
        failures = 0
        while True:
            result = await probe.check(self.env or {}, self.workdir)
            if result.ok:
                failures = 0
                self._set_ready(True)
            else:
                failures += 1
                self._probe_failed(probe, result.message)
                if failures >= probe.failure_threshold or not self.ready:
                    self._set_ready(False)
            await asyncio.sleep(probe.period if self.ready else min(probe.period, FAST_POLL))

    async def _liveness(self, probe: Probe, proc: process.ContainerProcess) -> None:
        await asyncio.sleep(probe.initial_delay)
        failures = 0
        while True:
            result = await probe.check(self.env or {}, self.workdir)
            failures = 0 if result.ok else failures + 1
            if not result.ok:
                self._probe_failed(probe, result.message)
            if failures >= probe.failure_threshold:
                self.ctx.event(self.handle.pod, "Normal", "Killing",
                               f"Container {self.name} failed liveness probe, will be restarted")
                await proc.stop(_grace(self.handle.pod))
                return
            await asyncio.sleep(probe.period)

    async def _startup(self, probe: Probe, proc: process.ContainerProcess) -> bool:
        await asyncio.sleep(probe.initial_delay)
        deadline = time.monotonic() + probe.period * probe.failure_threshold
        while True:
            result = await probe.check(self.env or {}, self.workdir)
            if result.ok:
                return True
            self._probe_failed(probe, result.message)
            if time.monotonic() > deadline:
                self.ctx.event(self.handle.pod, "Normal", "Killing",
                               f"Container {self.name} failed startup probe, will be restarted")
                await proc.stop(_grace(self.handle.pod))
                return False
            await asyncio.sleep(min(probe.period, FAST_POLL))

    def _probe_failed(self, probe: Probe, message: str) -> None:
        """A warning event, at most one per period (fast polling must not flood events)."""
        if time.monotonic() - self._last_probe_event >= probe.period:
            self._last_probe_event = time.monotonic()
            self.ctx.event(self.handle.pod, "Warning", "Unhealthy",
                           f"{probe.kind} probe failed: {message}")


def _grace(pod: Obj) -> float:
    return min(float(pod.get("spec", {}).get("terminationGracePeriodSeconds", 30)), GRACE_CAP)


def _started_at(status: Obj) -> str:
    state = status.get("state") or {}
    for value in state.values():
        if isinstance(value, dict) and value.get("startedAt"):
            return value["startedAt"]
    return now()


def _duration(seconds: float) -> str:
    """Go's duration style as the kubelet prints it: 10s, 1m20s, 5m0s."""
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"
