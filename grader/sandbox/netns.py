"""A network namespace per student in replay mode: a loopback of its own and nothing else.

Its cluster's daemon (with the pods and Envoys it starts) and its kernel listen on loopback;
in the host's network namespace every submission could reach every other student's kernel
ports, pods and Envoy admin ports (which need no credentials). In a namespace of its own a
submission reaches its own listeners only, and nobody else's reach it.

The grader's own steps that talk to that cluster (the readiness wait, the nbgrader process
with its verdict processes, restarts) join the namespace with setns(2): for one thread, which
its children inherit, or for a whole freshly forked process. Namespaces come from iproute2
(`ip netns add`, a name under /run/netns) and are deleted with `ip netns del`; the kernel
frees one when its last process has gone.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RUN_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
IP_TIMEOUT_S = 30.0
_LIBC = ctypes.CDLL(None, use_errno=True)


class NetnsError(RuntimeError):
    """A network namespace could not be made, joined or deleted; the message says why."""


def _ip(*args: str) -> None:
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True,
                              timeout=IP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"ip {' '.join(args)}: {exc}") from None
    if done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def create() -> str:
    """A new namespace with its loopback up; returns its path (under /run/netns)."""
    name = f"meshlab-{secrets.token_hex(6)}"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
    except NetnsError:
        delete(str(RUN_DIR / name))
        raise
    return str(RUN_DIR / name)


def delete(path: str) -> None:
    """Remove the namespace's name; it goes away with the last process in it."""
    if Path(path).exists():
        _ip("netns", "del", Path(path).name)


def join(path: str) -> None:
    """Move the calling thread (and what it starts from now on) into the namespace."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(fd)
    finally:
        os.close(fd)


def _setns(fd: int) -> None:
    if _LIBC.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise NetnsError(f"setns: {os.strerror(errno)}")


@contextmanager
def entered(path: str | None) -> Iterator[None]:
    """The calling thread inside the namespace for the block (nothing to do for None)."""
    if path is None:
        yield
        return
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        join(path)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


def problem() -> str | None:
    """Why no network namespace can be made here (None when one can)."""
    missing = [tool for tool in ("ip", "nsenter") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not found (Debian: apt-get install iproute2 util-linux)"
    try:
        path = create()
        try:
            with entered(path):
                pass
        finally:
            delete(path)
    except (NetnsError, OSError) as exc:
        return f"no network namespace for a student: {exc}"
    return None
