"""The fork server of the app twins: one Python per cluster with the twins' modules imported,
which forks each twin's process, so twins share that interpreter and those modules copy-on-write
instead of each loading its own (a Bookinfo twin alone took ~12 MB PSS).

The runtime (labs/embedded/runtime/forkserver.py) starts it on the first twin
(`python -I -m labs.embedded.apps.forkserver FD`) and sends one request per container over the
socket FD: the module and arguments of the twin's `python -I -m` command line (`twin_command`),
the environment, the working directory, and the write ends of the stdout/stderr pipes the
runtime reads as the container's log. It answers on its stdout with JSON lines: `{"pid": N}` per
request, and `{"exited": N, "code": C}` (`os.waitstatus_to_exitcode`: -SIG when killed) when a
twin ends — the twins are its children, so only it can reap them. It imports no asyncio and
nothing of the daemon: what it holds is what the twins share.

Each forked twin is what `python -I -m module args` would be for the runtime: its own session
(pid == process group == session, which stop, `kubectl top` and exec rely on), dying with its
parent (PR_SET_PDEATHSIG, `subprocesses.child_setup`; the fork server itself dies with the
daemon), stdin /dev/null, stdout/stderr the pipes, the environment and cwd of the request,
default signal dispositions, `sys.argv` as `-m` sets it, `__main__` run afresh, and the
interpreter's normal exit (atexit, non-daemon threads joined, a traceback and exit 1 on an
uncaught exception). What differs: /proc/PID/environ and /proc/PID/cmdline show the fork
server's (the kernel keeps those given at exec), so `runtime/process.kill_leftovers` also
recognises a pod's processes by their working directory; and the interpreter's start-up
settings (stdio encoding, hash seed) are the fork server's, which starts with the containers'
base locale.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import runpy
import selectors
import signal
import socket
import struct
import sys
from collections.abc import Callable
from typing import NoReturn, TextIO

from ..subprocesses import child_setup
from .catalog import APPS
from .http import python_module

TWINS_PACKAGE = "labs.embedded.apps."
# the generic echo server the runtime runs for an image the catalog does not know
ECHO_MODULE = f"{TWINS_PACKAGE}echo"
HEADER = struct.Struct("!I")  # a request: its JSON's length, then the JSON
ENV = {"PATH": os.defpath, "LANG": "C.UTF-8"}  # the containers' base locale (stdio)


def twin_command(argv: list[str]) -> list[str] | None:
    """[module, *args] when `argv` runs a twin of labs.embedded.apps with this interpreter
    (`python -I -m labs.embedded.apps.X ...`, what the catalog's launchers write); else None."""
    prefix = python_module("")[:-1]
    if argv[: len(prefix)] == prefix and len(argv) > len(prefix):
        module = argv[len(prefix)]
        if module.startswith(TWINS_PACKAGE):
            return argv[len(prefix):]
    return None


def command(requests_fd: int) -> list[str]:
    """The command line of a fork server reading its requests from `requests_fd`."""
    return python_module(__name__, str(requests_fd))


def _preload() -> None:
    """Import every twin of the catalog and the generic echo server, then forget the twins
    themselves: what they import stays loaded and shared, and each child runs its twin as a
    fresh `__main__`, as `python -m` does (runpy warns about a module already imported)."""
    names = {twin[0] for app in APPS.values() if (twin := twin_command(app.argv([])))}
    names.add(ECHO_MODULE)
    for name in names:
        importlib.import_module(name)
    for name in names:
        del sys.modules[name]
    gc.freeze()  # the children's collections then leave these objects' pages unwritten


def _read_request(requests: socket.socket) -> tuple[dict[str, object], list[int]] | None:
    """One request and its two descriptors; None at EOF (the daemon has gone)."""
    head, fds, _, _ = socket.recv_fds(requests, HEADER.size, 2)
    if not head:
        return None
    body = b""
    (length,) = HEADER.unpack(head)
    while len(body) < length:
        chunk = requests.recv(length - len(body))
        if not chunk:
            return None
        body += chunk
    return json.loads(body), fds


def _become_twin(request: dict[str, object], stdout: int, stderr: int,
                 setup: Callable[[], None], close_private: Callable[[], None]) -> NoReturn:
    """In the forked child: set up the container's process, run its twin, exit as Python does
    (never returns: SystemExit or the twin's exception unwinds to the interpreter's exit)."""
    os.setsid()
    setup()
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    close_private()
    devnull = os.open(os.devnull, os.O_RDONLY)
    for fd, target in ((devnull, 0), (stdout, 1), (stderr, 2)):
        os.dup2(fd, target)
        os.close(fd)
    env, twin = request["env"], request["command"]
    assert isinstance(env, dict) and isinstance(twin, list)
    os.chdir(str(request["cwd"]))
    os.environ.clear()
    os.environ.update(env)
    sys.argv = list(twin)
    runpy.run_module(twin[0], run_name="__main__", alter_sys=True)
    raise SystemExit(0)


def serve(requests: socket.socket) -> None:
    """Fork a twin per request and report the exits of the twins, until the daemon goes."""
    _preload()
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # a twin's fd 1 is never the reply channel
    os.close(devnull)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    selector = selectors.DefaultSelector()
    selector.register(requests, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    setup = child_setup()

    def close_private() -> None:
        """What only the fork server uses, closed through its owners (so that no object
        closes a descriptor number the twin reuses later)."""
        selector.close()
        requests.close()
        replies.close()
        os.close(wake_r)
        os.close(wake_w)

    while True:
        for key, _ in selector.select():
            if key.fd == wake_r:
                os.read(wake_r, 4096)
                _report_exits(replies)
                continue
            received = _read_request(requests)
            if received is None:
                return
            request, fds = received
            if len(fds) != 2:
                for fd in fds:
                    os.close(fd)
                replies.write(json.dumps({"error": "expected two descriptors"}) + "\n")
                continue
            pid = os.fork()
            if pid == 0:
                _become_twin(request, fds[0], fds[1], setup, close_private)
            for fd in fds:
                os.close(fd)
            replies.write(json.dumps({"pid": pid}) + "\n")


def _report_exits(replies: TextIO) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        replies.write(json.dumps({"exited": pid, "code": os.waitstatus_to_exitcode(status)})
                      + "\n")


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])))
