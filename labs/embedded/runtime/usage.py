"""Real CPU and memory of containers and of the node, read from /proc (Linux).

A container is its main process's session: every process started in it (the runtime starts
each container and each `kubectl exec` in a session of its own, see process.py) carries that
session id, as every process of a real container sits in its cgroup. Per process:
`/proc/PID/stat` fields 6 (session), 14+15 (utime+stime, clock ticks, all threads) and 24 (rss,
pages); a container's memory is the sum of its processes' resident sets (the stand-in for the
cgroup working set metrics-server reports), its CPU the growth of their CPU time between two
samples divided by the time between them. The node: `/proc/stat` (busy time of all CPUs) and
`/proc/meminfo` (MemTotal - MemAvailable).

Samples are taken on demand: a rate needs a sample at least `MIN_WINDOW` older than the new
one, so the first request after a quiet spell waits that long once (metrics-server would need
two scrapes, 15 s apart by default).
"""

from __future__ import annotations

import asyncio
import datetime
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..apiserver.errors import ApiError
from ..apiserver.metrics_api import Usage, Window

MIN_WINDOW = 1.0  # seconds between the two samples of a rate
KEEP = 60.0  # seconds a sample stays usable as the base of a rate
PROC = Path("/proc")
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user nice system irq softirq steal (not idle, iowait)


@dataclass(frozen=True)
class Process:
    session: int
    cpu_ns: int
    rss_bytes: int


@dataclass(frozen=True)
class Snapshot:
    monotonic: float
    wall: datetime.datetime
    processes: dict[int, Process]  # by pid
    node_cpu_ns: int
    node_memory_bytes: int


def _process(stat: str) -> Process:
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ", which may hold spaces
    return Process(session=int(fields[3]),
                   cpu_ns=(int(fields[11]) + int(fields[12])) * 10**9 // TICKS,
                   rss_bytes=int(fields[21]) * PAGE)


def _processes() -> dict[int, Process]:
    found = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = _process((entry / "stat").read_text())
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile, or not ours to read
    return found


def _node_cpu_ns() -> int:
    line = (PROC / "stat").read_text().splitlines()[0].split()[1:]
    return sum(int(line[i]) for i in _BUSY_FIELDS if i < len(line)) * 10**9 // TICKS


def _node_memory_bytes() -> int:
    info = {}
    for line in (PROC / "meminfo").read_text().splitlines():
        key, _, value = line.partition(":")
        info[key] = int(value.split()[0]) * 1024
    return info["MemTotal"] - info.get("MemAvailable", info.get("MemFree", 0))


def snapshot() -> Snapshot:
    """One reading of every process and of the node. Blocking file reads: run in a thread."""
    if not (PROC / "stat").exists():
        raise ApiError(503, "ServiceUnavailable", "CPU and memory metrics need Linux (/proc); "
                       "this host has none, so `kubectl top` has nothing to show")
    return Snapshot(time.monotonic(), datetime.datetime.now(datetime.UTC), _processes(),
                    _node_cpu_ns(), _node_memory_bytes())


def _cpu_between(base: Snapshot, now: Snapshot, sessions: set[int]) -> int:
    """CPU nanoseconds the sessions' processes used between the snapshots (a process started
    in between counts from zero)."""
    used = 0
    for pid, proc in now.processes.items():
        if proc.session in sessions:
            before = base.processes.get(pid)
            start = before.cpu_ns if before is not None and before.session == proc.session else 0
            used += max(proc.cpu_ns - start, 0)
    return used


class UsageMeter:
    """Rates between the newest snapshot and one at least `MIN_WINDOW` older."""

    def __init__(self) -> None:
        self._snapshots: list[Snapshot] = []
        self._lock = asyncio.Lock()

    async def _pair(self) -> tuple[Snapshot, Snapshot]:
        async with self._lock:
            now = await asyncio.to_thread(snapshot)
            old = [s for s in self._snapshots if now.monotonic - s.monotonic >= MIN_WINDOW]
            if old:
                base = old[-1]
            else:
                base = now
                await asyncio.sleep(MIN_WINDOW)
                now = await asyncio.to_thread(snapshot)
            kept = [s for s in self._snapshots if s is not base]
            self._snapshots = [s for s in [*kept, base, now]
                               if now.monotonic - s.monotonic <= KEEP][-8:]
            return base, now

    async def containers(self, groups: Mapping[str, Mapping[str, Iterable[int]]]
                         ) -> tuple[Window, dict[str, dict[str, Usage]]]:
        """`groups`: pod uid -> container name -> the session ids of its processes."""
        base, now = await self._pair()
        seconds = now.monotonic - base.monotonic
        out: dict[str, dict[str, Usage]] = {}
        for uid, containers in groups.items():
            for name, sessions in containers.items():
                members = set(sessions)
                memory = sum(p.rss_bytes for p in now.processes.values()
                             if p.session in members)
                cpu = _cpu_between(base, now, members)
                out.setdefault(uid, {})[name] = Usage(round(cpu / seconds), memory)
        return Window(now.wall, seconds), out

    async def node(self) -> tuple[Window, Usage]:
        base, now = await self._pair()
        seconds = now.monotonic - base.monotonic
        cpu = max(now.node_cpu_ns - base.node_cpu_ns, 0)
        return Window(now.wall, seconds), Usage(round(cpu / seconds), now.node_memory_bytes)
