"""A control group per student for one grading run: one memory limit and one task limit on
everything that student's sandboxes run together — kernel, cluster daemon, containers, execs —
and an equal share of the CPU. `prlimit` (jail.py) bounds each process; this bounds the student,
so many processes that each stay under their own limit still cannot starve the others.

Made below the grader's own cgroup, with the kernel's cgroupfs: cgroup v2 where the memory and
pids controllers are delegated to that cgroup's children, else v1 (one directory in each of the
memory, pids and cpu hierarchies). No systemd is needed (CI machines and containers have none).
Where neither can be written (not root, a read-only cgroupfs), `StudentCgroup.create` returns
None, `problem()` says why, and the per-process limits are all there is.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("memory", "pids", "cpu")
V2_CONTROLLERS = {"memory", "pids"}
REMOVE_ROUNDS = 40  # a cgroup is removable once its last (killed) task is reaped


@dataclass(frozen=True)
class CgroupLimits:
    memory_bytes: int = 3 << 30  # kernel + cluster (API server, Envoys, Prometheus) + execs
    tasks: int = 2048


@dataclass(frozen=True)
class StudentCgroup:
    directories: tuple[str, ...]  # one per hierarchy (v2: one)

    @property
    def procs_files(self) -> tuple[str, ...]:
        """Where a process writes its pid to join (jail.py does, before it drops root)."""
        return tuple(str(Path(d) / "cgroup.procs") for d in self.directories)

    @classmethod
    def create(cls, limits: CgroupLimits) -> StudentCgroup | None:
        for make in (_create_v2, _create_v1):
            with contextlib.suppress(OSError):
                made = make(f"meshlab-{secrets.token_hex(8)}", limits)
                if made is not None:
                    return made
        return None

    def remove(self) -> None:
        """Delete the directories; call once the student's processes are ended."""
        for directory in map(Path, reversed(self.directories)):
            for _ in range(REMOVE_ROUNDS):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)


def problem() -> str | None:
    """Why no student cgroup can be made here (None when one can)."""
    made = StudentCgroup.create(CgroupLimits())
    if made is None:
        return (f"no writable cgroup v2 (memory and pids delegated) or v1 (memory, pids, cpu) "
                f"hierarchy under {CGROUP_ROOT}")
    made.remove()
    return None


def _own_paths() -> dict[str, str]:
    """This process's cgroup per hierarchy: {"memory": "/a/b", ..., "": "/c"} (v2 is "")."""
    paths: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def _create_v2(name: str, limits: CgroupLimits) -> StudentCgroup | None:
    own = _own_paths().get("")
    unified = CGROUP_ROOT if (CGROUP_ROOT / "cgroup.controllers").exists() else None
    if own is None or unified is None:
        return None
    parent = unified / own.lstrip("/")
    if not set((parent / "cgroup.subtree_control").read_text().split()) >= V2_CONTROLLERS:
        return None
    directory = parent / name
    directory.mkdir()
    try:
        (directory / "memory.max").write_text(str(limits.memory_bytes))
        (directory / "pids.max").write_text(str(limits.tasks))
    except OSError:
        directory.rmdir()
        raise
    return StudentCgroup((str(directory),))


def _create_v1(name: str, limits: CgroupLimits) -> StudentCgroup | None:
    own = _own_paths()
    roots = {c: CGROUP_ROOT / c for c in V1_CONTROLLERS}
    if not all(c in own and (roots[c] / "cgroup.procs").exists() for c in V1_CONTROLLERS):
        return None
    made: list[Path] = []
    try:
        for controller in V1_CONTROLLERS:
            directory = roots[controller] / own[controller].lstrip("/") / name
            directory.mkdir()
            made.append(directory)
        (made[0] / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
        (made[1] / "pids.max").write_text(str(limits.tasks))
    except OSError:
        StudentCgroup(tuple(map(str, made))).remove()
        raise
    return StudentCgroup(tuple(map(str, made)))
