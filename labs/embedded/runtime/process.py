"""Local processes standing in for containers — start, log capture, stop, crash clean-up.

Children start as every child of the daemon does (labs/embedded/subprocesses.py: own session,
dying with the daemon); the app twins are forked by the cluster's fork server instead
(forkserver.py: they share its pre-imported interpreter), with the same semantics. Each
container's pid goes to a file; a daemon restarted after `kill -9` kills whatever those files
still name, once it has checked through /proc that the process really belongs to that pod (its
environment names the pod, or — a forked twin's /proc environment being the fork server's — its
working directory is in the pod's directory).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import Protocol

from ..apps.forkserver import twin_command
from ..subprocesses import child_setup, kill_group
from . import crilog
from .forkserver import ForkServer

POD_UID_ENV = "MESHLAB_POD_UID"  # the marker that proves a leftover process is ours


def exit_code(returncode: int) -> int:
    """Container runtimes report death by signal N as 128+N (SIGKILL -> 137)."""
    return 128 - returncode if returncode < 0 else returncode


class Child(Protocol):
    """What the runtime uses of a started process: an asyncio one, or a forked twin."""

    pid: int
    stdout: asyncio.StreamReader | None
    stderr: asyncio.StreamReader | None

    async def wait(self) -> int: ...


class ContainerProcess:
    """One run of a container: the child, the tasks copying its output to the log, its pid file."""

    def __init__(self, proc: Child, log_path: Path, pid_path: Path) -> None:
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
                pid_path: Path, forks: ForkServer) -> ContainerProcess:
    """Start `argv` (an app twin through `forks`); the previous run's log becomes
    `<name>.previous.log` (`logs --previous`)."""
    if log_path.exists():
        log_path.replace(previous_log(log_path))
    cwd.mkdir(parents=True, exist_ok=True)
    proc: Child
    if (twin := twin_command(argv)) is not None:
        proc = await forks.spawn(twin, env, cwd)
    else:
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True, preexec_fn=child_setup())
    pid_path.write_text(f"{proc.pid}\n")
    return ContainerProcess(proc, log_path, pid_path)


def previous_log(log_path: Path) -> Path:
    return log_path.with_name(log_path.name.removesuffix(".log") + ".previous.log")


def _belongs_to(pid: int, pod_dir: Path) -> bool:
    pod_uid = pod_dir.name.rsplit("_", 1)[-1]
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:  # gone, not ours to read, or no /proc (macOS): leave it alone
        return False
    return (f"{POD_UID_ENV}={pod_uid}".encode() in environ.split(b"\0")
            or cwd.is_relative_to(pod_dir.resolve()))


def kill_leftovers(pods_dir: Path) -> list[int]:
    """Kill the containers a previous daemon left running (it was killed without clean-up).

    Pod directories are named `<namespace>_<name>_<uid>`; pid files `<container>.pid`.
    Returns the pids killed. Blocking file work: run it in a thread.
    """
    killed = []
    for pid_file in pods_dir.glob("*/*.pid"):
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if pid > 0 and _belongs_to(pid, pid_file.parent):
            kill_group(pid, signal.SIGKILL)
            killed.append(pid)
        pid_file.unlink(missing_ok=True)
    return killed
