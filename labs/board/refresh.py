"""Re-run every student's checks, a few students at a time, each in a worker process
(labs.board.worker) the board can kill when a check runs past its time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator

from labs.board.model import Board
from labs.checks import Check, Outcome, Report, Result, Status, failed, skipped
from labs.cluster.roster import Student

DEFAULT_CONCURRENCY = 2
DEFAULT_CHECK_TIMEOUT_S = 30.0
STARTUP_ALLOWANCE_S = 20.0  # worker start-up and the API probe, before the first verdict
STDERR_KEPT = 2000


class Refresher:
    """Feeds `board` with fresh verdicts. At most `concurrency` students are checked at once;
    a check gets `check_timeout` seconds (plus its retry deadline, for behavioural checks)."""

    def __init__(self, board: Board, students: list[Student], *, hidden: bool = False,
                 concurrency: int = DEFAULT_CONCURRENCY,
                 check_timeout: float = DEFAULT_CHECK_TIMEOUT_S) -> None:
        self.board = board
        self.students = students
        self.hidden = hidden
        self.check_timeout = check_timeout
        self._slots = asyncio.Semaphore(concurrency)

    async def run(self, interval: float) -> None:
        """Refresh forever, a round every `interval` seconds (back to back if a round is
        slower than that)."""
        while True:
            started = time.monotonic()
            await self.refresh_once()
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def refresh_once(self) -> None:
        started = time.monotonic()
        await asyncio.gather(*(self._refresh(student) for student in self.students))
        self.board.record_round(time.monotonic() - started)

    async def _refresh(self, student: Student) -> None:
        async with self._slots:
            try:
                reason = await asyncio.to_thread(student.not_running)
                if reason:
                    self.board.record_problem(student.name, "unreachable",
                                              f"cluster unreachable: {reason}")
                    return
                await self._run_worker(student)
            except (OSError, ValueError, KeyError) as exc:  # one student's trouble, not the board's
                self.board.record_problem(student.name, "error", f"the board could not check "
                                          f"this student: {type(exc).__name__}: {exc}")

    def _command(self, student: Student) -> list[str]:
        checks = [c for checks in self.board.plan.values() for c in checks]
        command = [sys.executable, "-m", "labs.board.worker", "--name", student.name]
        address = student.address
        for flag, value in (("--cluster", address.cluster), ("--state-dir", address.state_dir),
                            ("--context", address.context),
                            ("--kubeconfig", address.kubeconfig)):
            if value is not None:
                command += [flag, str(value)]
        for module in dict.fromkeys(c.func.__module__ for c in checks):
            command += ["--module", module]
        if self.hidden:
            command.append("--hidden")
        return command + [c.id for c in checks]

    async def _run_worker(self, student: Student) -> None:
        # The worker imports what this process can import (course checkout, fixture modules).
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        process = await asyncio.create_subprocess_exec(
            *self._command(student), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
            start_new_session=True)
        stderr = bytearray()
        drain = asyncio.create_task(_keep_tail(process.stderr, stderr))
        try:
            await self._read_verdicts(student, process, stderr)
        finally:
            if process.returncode is None:
                _kill_group(process.pid)
            await process.wait()
            drain.cancel()

    async def _read_verdicts(self, student: Student, process: asyncio.subprocess.Process,
                             stderr: bytearray) -> None:
        assert process.stdout is not None
        results: dict[str, list[Result]] = {lab: [] for lab in self.board.plan}
        pending = list(self._expected())
        budget = STARTUP_ALLOWANCE_S
        while pending:
            lab, item = pending[0]
            budget += self.check_timeout + (item.retry.deadline if item.retry else 0.0)
            try:
                line = await asyncio.wait_for(process.stdout.readline(), timeout=budget)
            except TimeoutError:
                _kill_group(process.pid)
                results[lab].append(Result(item, failed(
                    f"no verdict within {budget:g}s: the board stopped this check"), budget))
                for other_lab, rest in pending[1:]:
                    results[other_lab].append(Result(rest, skipped(
                        f"not run: {item.id} timed out"), 0.0, 0))
                break
            budget = 0.0
            if not line:
                await asyncio.sleep(0.2)  # let the stderr reader catch the last words
                self.board.record_problem(student.name, "error", "the checks could not run: " + (
                    _last_line(stderr) or f"the worker exited {process.returncode}"))
                return
            message = json.loads(line)
            if "unreachable" in message:
                self.board.record_problem(student.name, "unreachable",
                                          f"cluster unreachable: {message['unreachable']}")
                return
            if "error" in message:
                self.board.record_problem(student.name, "error",
                                          f"the checks could not run: {message['error']}")
                return
            if message.get("id") != item.id:
                self.board.record_problem(student.name, "error", f"the worker answered for "
                                          f"{message.get('id')!r} instead of {item.id!r}")
                return
            outcome = Outcome(Status(message["status"]), message["reason"])
            results[lab].append(Result(item, outcome, message["seconds"], message["attempts"]))
            pending.pop(0)
        self.board.record(student.name, {lab: Report(lab, found)
                                         for lab, found in results.items()})

    def _expected(self) -> Iterator[tuple[str, Check]]:
        for lab, checks in self.board.plan.items():
            for item in checks:
                yield lab, item


async def _keep_tail(stream: asyncio.StreamReader | None, tail: bytearray) -> None:
    if stream is None:
        return
    while chunk := await stream.read(4096):
        tail.extend(chunk)
        del tail[:-STDERR_KEPT]


def _last_line(data: bytearray) -> str:
    lines = [line for line in data.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
