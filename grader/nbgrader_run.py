"""Run the real `nbgrader` command for this course: from grader/ (where nbgrader_config.py
is), against a chosen course directory, killed with everything it started after a deadline.

Importing nbgrader costs seconds of CPU (it pulls in jupyter_server, whose JSON-schema format
checkers compile grammars at import). A grading run starts nbgrader once per student, so each
run is a process forked from a multiprocessing fork server that imported nbgrader once; the
child is then exactly `nbgrader ARGS` (NbGraderApp.launch_instance, the console script's
entry point) in its own session, with its own environment and log file — and, for a student
graded in a network namespace of its own, in that namespace: its kernel, its verdict processes
and its cluster (restarted if need be) listen and are reached there only.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from grader.course import COURSE_DIR_ENV, GRADER_DIR
from grader.sandbox.netns import join

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["nbgrader.apps", "grader.config"])


@dataclass(frozen=True)
class Run:
    returncode: int
    log: Path
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def tail(self, lines: int = 6) -> str:
        """The last log lines, for a failure message."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])


def _child(args: tuple[str, ...], env: dict[str, str], log: str, netns: str | None) -> None:
    """In the forked process: become `nbgrader ARGS`, output to `log` (a pipe would keep us
    waiting on any process a submission left behind holding it), in `netns` if given."""
    os.setsid()  # one process group with the kernels it starts, killed together on timeout
    if netns:
        join(netns)  # single-threaded here: the whole process and all it starts
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(GRADER_DIR)
    sys.argv = ["nbgrader", *args]
    from nbgrader.apps.nbgraderapp import NbGraderApp

    NbGraderApp.launch_instance(list(args))


def nbgrader(*args: str, course: Path, log: Path, env: dict[str, str] | None = None,
             timeout: float = 600, netns: str | None = None) -> Run:
    """`nbgrader ARGS` with the course directory `course`, in the network namespace `netns`
    (None: this process's); its process group is killed when it outlives `timeout`."""
    full = {**os.environ, **(env or {}), COURSE_DIR_ENV: str(course)}
    # nbgrader runs `alembic` (gradebook migrations) from PATH: use this Python's scripts
    full["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), full.get("PATH", "")])
    process = _CONTEXT.Process(target=_child, args=(args, full, str(log), netns),
                               daemon=False)
    process.start()
    process.join(timeout)
    timed_out = process.exitcode is None
    with contextlib.suppress(ProcessLookupError):  # also whatever it left behind in its group
        os.killpg(process.pid, signal.SIGKILL)
    process.join()
    return Run(-9 if timed_out else process.exitcode or 0, log, timed_out)
