"""Run provisioning steps: find each tool (the pinned one `meshlab tools install` put in
.tools/bin, else PATH), run a step's pipeline with a deadline, retry readiness checks, and turn
a failure into one StepFailed naming the step, its stderr tail and what to do."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from labs.cluster import ClusterError, kubectl_binary
from labs.provision.steps import Step
from labs.setup.releases import TOOLS
from labs.setup.tools import INSTALL_HINT, ToolMissing, tool_path

TAIL_LINES = 12
Progress = Callable[[str], None]


class ToolNotFound(RuntimeError):
    """A tool a plan needs is neither installed by meshlab nor on PATH."""


class StepFailed(RuntimeError):
    """A step failed for good; the message has the step, its output's tail and the fix."""

    def __init__(self, step: Step, number: int, detail: str) -> None:
        self.step = step
        self.number = number
        hint = f"\nwhat to do: {step.hint}" if step.hint else ""
        super().__init__(f"step {number} ({step.title}) failed: {detail}{hint}")


def resolve(tools: Iterable[str]) -> dict[str, str]:
    """Each tool's binary: meshlab's pinned install first, else PATH; kubectl (not one of
    meshlab's tools) from PATH, else the pinned kubectl beside this Python."""
    found: dict[str, str] = {}
    missing: list[str] = []
    for name in dict.fromkeys(tools):
        if name in TOOLS:
            try:
                found[name] = str(tool_path(name))
                continue
            except ToolMissing:
                pass
        path = shutil.which(name) or (_pinned_kubectl() if name == "kubectl" else None)
        if path is None:
            missing.append(name)
        else:
            found[name] = path
    if missing:
        raise ToolNotFound(f"{', '.join(missing)} not found (neither in meshlab's tools "
                           f"directory nor on PATH): run `{INSTALL_HINT}`" + (
                               "; Docker: https://docs.docker.com/engine/install/"
                               if "docker" in missing else ""))
    return found


def _pinned_kubectl() -> str | None:
    try:
        return kubectl_binary()
    except ClusterError:
        return None


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str


def run_pipeline(step: Step, binaries: dict[str, str]) -> Outcome:
    """Run the step's commands connected by pipes; its exit status is the first failing
    command's (as bash's pipefail), its stderr all of theirs (in files: a chatty command
    cannot block on a full pipe)."""
    deadline = time.monotonic() + step.timeout_s
    processes: list[subprocess.Popen[str]] = []
    with contextlib.ExitStack() as files:
        errors = [files.enter_context(tempfile.TemporaryFile("w+")) for _ in step.pipeline]
        for argv, error in zip(step.pipeline, errors, strict=True):
            upstream = processes[-1].stdout if processes else None
            try:
                processes.append(subprocess.Popen(
                    [binaries[argv[0]], *argv[1:]], text=True, stdout=subprocess.PIPE,
                    stderr=error, stdin=upstream if upstream is not None else (
                        subprocess.PIPE if step.stdin is not None else subprocess.DEVNULL)))
            except OSError as exc:  # not executable, a build for another CPU...
                _stop(processes)
                return Outcome(126, "", f"cannot run {binaries[argv[0]]}: {exc.strerror}; "
                               f"reinstall it (`{INSTALL_HINT}`)")
            if upstream is not None:
                upstream.close()  # the next command owns the pipe now
        try:
            stdout, _ = processes[-1].communicate(input=step.stdin if len(processes) == 1
                                                  else None,
                                                  timeout=max(0.1, deadline - time.monotonic()))
            for process in processes[:-1]:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _stop(processes)
            return Outcome(124, "", f"did not finish within {step.timeout_s:g} s")
        said = []
        for error in errors:
            error.seek(0)
            said.append(error.read())
    code = next((p.returncode for p in processes if p.returncode), 0)
    return Outcome(code, stdout, "".join(said))


def _stop(processes: list[subprocess.Popen[str]]) -> None:
    for process in processes:
        process.kill()
        process.wait()


def tail(text: str, lines: int = TAIL_LINES) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return "\n".join("    " + line for line in kept) or "    (no output)"


def run_steps(steps: list[Step], binaries: dict[str, str], progress: Progress,
              retry_delay_s: float) -> None:
    """Run each step in order; raise StepFailed at the first that fails for good."""
    for number, step in enumerate(steps, start=1):
        started = time.monotonic()
        progress(f"step {number}/{len(steps)}: {step.title}")
        for attempt in range(1, step.retries + 2):
            outcome = run_pipeline(step, binaries)
            if outcome.returncode == 0:
                break
            if attempt <= step.retries:
                progress(f"step {number}/{len(steps)}: {step.title}: attempt {attempt} of "
                         f"{step.retries + 1} failed (exit {outcome.returncode}); retrying in "
                         f"{retry_delay_s:g} s")
                time.sleep(retry_delay_s)
        else:
            tries = f" after {step.retries + 1} attempts" if step.retries else ""
            command = step.shell().splitlines()[0]
            raise StepFailed(step, number, f"exit {outcome.returncode}{tries}; `{command}` "
                             f"said:\n{tail(outcome.stderr or outcome.stdout)}")
        if step.refuse_if_listed and step.refuse_if_listed in outcome.stdout.split():
            raise StepFailed(step, number, f"a kind cluster named {step.refuse_if_listed} "
                             "exists already; nothing was changed")
        progress(f"step {number}/{len(steps)}: {step.title}: done in "
                 f"{time.monotonic() - started:.1f} s")
