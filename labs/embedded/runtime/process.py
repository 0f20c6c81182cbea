"""Local processes standing in for containers — start, log capture, stop, crash clean-up — and
the daemon's own helper processes (the node forwarder's Envoy, Prometheus).

Every child gets its own session (so a signal reaches its whole process group, as stopping a
container stops everything in it) and, on Linux, PR_SET_PDEATHSIG=SIGKILL (so it dies with the
daemon). The death signal follows the *thread* that forked the child: the daemon runs its event
loop in the main thread, which lives as long as the process. Each container's pid goes to a file; a
daemon restarted after `kill -9` kills whatever those files still name, once it has checked
through /proc that the process really belongs to that pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import termios
from collections.abc import Callable, Sequence
from pathlib import Path

from . import crilog
from .exec_user import LIBC, become

POD_UID_ENV = "MESHLAB_POD_UID"  # the marker that proves a leftover process is ours
_PR_SET_PDEATHSIG = 1


def child_setup(controlling_tty: bool = False, run_as: int | None = None
                ) -> Callable[[], None]:
    """A `preexec_fn`: become `run_as` (see exec_user.py); die with the daemon — set after
    the uid changes, which clears it; optionally make fd 0 (a pty) the controlling tty."""
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


def exit_code(returncode: int) -> int:
    """Container runtimes report death by signal N as 128+N (SIGKILL -> 137)."""
    return 128 - returncode if returncode < 0 else returncode


class ContainerProcess:
    """One run of a container: the child, the tasks copying its output to the log, its pid file."""

    def __init__(self, proc: asyncio.subprocess.Process, log_path: Path, pid_path: Path) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.pid_path = pid_path
        self._log = log_path.open("ab", buffering=0)
        self._pumps = [
            asyncio.create_task(self._pump(proc.stdout, "stdout")),
            asyncio.create_task(self._pump(proc.stderr, "stderr")),
        ]
        self._exit: asyncio.Task[int] = asyncio.create_task(self._wait())

    async def _pump(self, stream: asyncio.StreamReader | None, name: str) -> None:
        assert stream is not None
        splitter = crilog.LineSplitter(name)
        while data := await stream.read(65536):
            self._log.write(splitter.feed(data))
        self._log.write(splitter.flush())

    async def _wait(self) -> int:
        returncode = await self.proc.wait()
        kill_group(self.pid, signal.SIGKILL)  # a container ends with its main process
        await asyncio.gather(*self._pumps, return_exceptions=True)
        self._log.close()
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()
        return exit_code(returncode)

    @property
    def running(self) -> bool:
        return not self._exit.done()

    async def wait(self) -> int:
        """The exit code, once the process has exited and its output is in the log."""
        return await asyncio.shield(self._exit)

    async def stop(self, grace: float) -> int:
        """SIGTERM the group, SIGKILL it after `grace` seconds, as the kubelet stops a container."""
        if self.running:
            kill_group(self.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self._exit), grace)
            except TimeoutError:
                kill_group(self.pid, signal.SIGKILL)
        return await self.wait()


async def start(argv: list[str], env: dict[str, str], cwd: Path, log_path: Path,
                pid_path: Path) -> ContainerProcess:
    """Start `argv`; the previous run's log becomes `<name>.previous.log` (`logs --previous`)."""
    if log_path.exists():
        log_path.replace(previous_log(log_path))
    cwd.mkdir(parents=True, exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True, preexec_fn=child_setup())
    pid_path.write_text(f"{proc.pid}\n")
    return ContainerProcess(proc, log_path, pid_path)


async def start_helper(argv: Sequence[str], log_path: Path) -> asyncio.subprocess.Process:
    """Start one of the daemon's own helpers (an Envoy, Prometheus) with its output appended to
    `log_path`: in its own session and dying with the daemon, like a container's process."""
    with log_path.open("ab") as out:  # the child keeps its own copy of the descriptor
        return await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
            start_new_session=True, preexec_fn=child_setup())


async def stop_helper(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM a helper, SIGKILL it after `grace` seconds; returns once it has exited."""
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


def previous_log(log_path: Path) -> Path:
    return log_path.with_name(log_path.name.removesuffix(".log") + ".previous.log")


def _belongs_to(pid: int, pod_uid: str) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone, not ours to read, or no /proc (macOS): leave it alone
        return False
    return f"{POD_UID_ENV}={pod_uid}".encode() in environ.split(b"\0")


def kill_leftovers(pods_dir: Path) -> list[int]:
    """Kill the containers a previous daemon left running (it was killed without clean-up).

    Pod directories are named `<namespace>_<name>_<uid>`; pid files `<container>.pid`.
    Returns the pids killed. Blocking file work: run it in a thread.
    """
    killed = []
    for pid_file in pods_dir.glob("*/*.pid"):
        pod_uid = pid_file.parent.name.rsplit("_", 1)[-1]
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if pid > 0 and _belongs_to(pid, pod_uid):
            kill_group(pid, signal.SIGKILL)
            killed.append(pid)
        pid_file.unlink(missing_ok=True)
    return killed
