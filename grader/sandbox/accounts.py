"""Unprivileged uids for sandboxes: a fresh one per student per run (no passwd entry needed),
and the end of everything that uid still runs — which, the uid being unique, is exactly what
that student's sandboxes started, wherever it went (daemonized, reparented, a fork bomb)."""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import signal
import time
from pathlib import Path

# Far above any account a system creates; 2**31 - 1 is the largest uid every tool accepts.
UID_RANGE = (1 << 28, (1 << 31) - 2)
KILL_ROUNDS = 50


def new_uid() -> int:
    """A uid no account has and no process runs as."""
    while True:
        uid = UID_RANGE[0] + secrets.randbelow(UID_RANGE[1] - UID_RANGE[0])
        try:
            pwd.getpwuid(uid)
        except KeyError:
            if not processes_of(uid):
                return uid


def new_uids(count: int) -> tuple[int, ...]:
    """`count` distinct fresh uids."""
    uids: list[int] = []
    while len(uids) < count:
        uid = new_uid()
        if uid not in uids:
            uids.append(uid)
    return tuple(uids)


def processes_of(uid: int) -> list[int]:
    """Pids whose real uid is `uid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("Uid:"):
                    if int(line.split()[1]) == uid:
                        found.append(int(entry.name))
                    break
    return found


def end_processes(uid: int) -> None:
    """SIGKILL every process of `uid` until none is left (a fork bomb forks while we kill)."""
    for _ in range(KILL_ROUNDS):
        pids = processes_of(uid)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def hand_over(root: Path, uid: int) -> None:
    """Make `root` and everything below it (links themselves, never their targets) `uid`'s."""
    os.lchown(root, uid, uid)
    for folder, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            os.lchown(os.path.join(folder, name), uid, uid)
