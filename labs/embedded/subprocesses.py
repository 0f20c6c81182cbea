"""How the daemon starts and stops child processes: the runtime's containers and execs, and the
mesh's own helpers (the node forwarder's Envoy). Below both, so neither imports the other.

Every child gets its own session (so a signal reaches its whole process group, as stopping a
container stops everything in it) and, on Linux, PR_SET_PDEATHSIG=SIGKILL (so it dies with the
daemon). The death signal follows the *thread* that forked the child: the daemon runs its event
loop in the main thread, which lives as long as the process.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import sys
import termios
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # asyncio is imported where used: the twins' fork server needs the rest only
    import asyncio

_PR_SET_PDEATHSIG = 1
_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def become(uid: int) -> None:
    """In a forked child before exec: be `uid` (its own group, no others) with no
    capabilities — ambient ones cleared, so the program exec'd gets none (no_new_privs, set by
    the sandbox, already denies file capabilities). Who runs as whom: runtime/exec_user.py."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if LIBC is not None and LIBC.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0):
        os._exit(126)


def child_setup(controlling_tty: bool = False, run_as: int | None = None
                ) -> Callable[[], None]:
    """A `preexec_fn`: become `run_as`; die with the daemon — set after the uid changes, which
    clears it; optionally make fd 0 (a pty) the controlling tty."""
    parent = os.getpid()

    def setup() -> None:
        if run_as is not None:
            become(run_as)
        if LIBC is not None:
            LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # the daemon died before prctl took effect
                os._exit(1)
        if controlling_tty:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    return setup


def kill_group(pid: int, sig: int) -> None:
    """Signal a child's process group: each child leads its own session, so pgid == pid."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def start_helper(argv: Sequence[str], log_path: Path) -> asyncio.subprocess.Process:
    """Start one of the daemon's own helpers (an Envoy) with its output appended to
    `log_path`: in its own session and dying with the daemon, like a container's process."""
    import asyncio

    with log_path.open("ab") as out:  # the child keeps its own copy of the descriptor
        return await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
            start_new_session=True, preexec_fn=child_setup())


async def stop_helper(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM a helper, SIGKILL it after `grace` seconds; returns once it has exited."""
    import asyncio

    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
