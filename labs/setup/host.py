"""Facts about this host that `meshlab preflight` weighs: memory and CPUs (within the cgroup
limits of a container or a JupyterHub pod), inotify limits and use, listening ports, free disk.
Linux's /proc and /sys; elsewhere a fact is None and the check says it could not tell."""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CGROUP = Path("/sys/fs/cgroup")  # cgroup v2, as a container sees its own


@dataclass(frozen=True)
class Memory:
    total: int  # bytes: MemTotal, or the cgroup's memory.max when lower
    available: int  # bytes: MemAvailable, capped likewise
    limited_by_cgroup: bool


def _meminfo() -> dict[str, int]:
    found = {}
    for line in (PROC / "meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            found[key] = int(fields[0]) * 1024  # the file says kB
    return found


def _cgroup_value(name: str) -> str | None:
    try:
        return (CGROUP / name).read_text().strip()
    except OSError:
        return None


def memory() -> Memory | None:
    try:
        info = _meminfo()
    except OSError:
        return None
    total, available = info.get("MemTotal"), info.get("MemAvailable")
    if total is None or available is None:
        return None
    limit = _cgroup_value("memory.max")
    if limit and limit.isdigit() and int(limit) < total:
        used = _cgroup_value("memory.current")
        cap = int(limit) - (int(used) if used and used.isdigit() else 0)
        return Memory(int(limit), max(0, min(available, cap)), True)
    return Memory(total, available, False)


def cpu_cores() -> float:
    """CPUs this process may use: its affinity mask, or the cgroup's cpu.max quota if lower."""
    try:
        cores = float(len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        cores = float(os.cpu_count() or 1)
    quota = (_cgroup_value("cpu.max") or "max").split()
    if len(quota) == 2 and quota[0].isdigit() and quota[1].isdigit() and int(quota[1]) > 0:
        cores = min(cores, int(quota[0]) / int(quota[1]))
    return cores


def sysctl(name: str) -> int | None:
    """A numeric sysctl such as fs.inotify.max_user_instances, or None where unreadable."""
    try:
        return int((PROC / "sys" / name.replace(".", "/")).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def inotify_instances_in_use() -> int:
    """inotify instances held by this user's processes (the limit is per user). Processes of
    other users are not readable, and do not count against this user's limit."""
    uid = os.getuid()
    count = 0
    for proc in PROC.glob("[0-9]*"):
        try:
            if proc.stat().st_uid == uid:
                count += inotify_instances_of(proc)
        except OSError:
            continue  # the process ended
    return count


def inotify_instances_of(proc: Path) -> int:
    """A process's open file descriptors that are inotify instances (`anon_inode:inotify`)."""
    count = 0
    try:
        for fd in (proc / "fd").iterdir():
            try:
                count += os.readlink(fd) == "anon_inode:inotify"
            except OSError:
                continue  # closed meanwhile
    except OSError:
        return 0  # the process ended, or is not ours to read
    return count


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Can a server listen on host:port now? (Bound and released at once.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:  # in use, or not ours to take (a privileged port)
            return False
    return True


def disk_free(path: Path) -> tuple[Path, int]:
    """Free bytes for `path`, measured at its nearest existing folder (it may not exist yet)."""
    probe = path.expanduser().absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe, shutil.disk_usage(probe).free
