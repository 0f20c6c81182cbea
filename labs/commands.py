"""Command-line tools in a notebook cell: a streaming command (`linkerd viz tap`, `linkerd viz
top`, `kubectl get --watch`) run while requests are sent, then stopped as Ctrl-C would; and a
command re-run until its output shows what the cell waits for (what `linkerd viz` shows comes
from Prometheus, which sees a change only at its next scrape). A cell runs one thing at a time
and has no terminal to press Ctrl-C in: hence these."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from labs.traffic import ProbeError, settle


def console_script(name: str) -> str:
    """The venv's console script `name` (what `!linkerd` runs in the notebook), else `name`."""
    script = Path(sys.executable).parent / name
    return str(script) if script.exists() else name


def while_running(command: list[str], action: Callable[[], object], *,
                  lines: int | None = None, seconds: float = 30) -> list[str]:
    """Run a streaming `command` while `action` sends requests, again and again, until the
    command printed `lines` lines (with `lines`) or `seconds` passed; then stop it (SIGINT, as
    Ctrl-C) and return what it printed. A streaming command shows only the requests made
    while it runs."""
    process = subprocess.Popen([console_script(command[0]), *command[1:]],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    out = process.stdout
    assert out is not None  # stdout=PIPE
    reader = threading.Thread(target=lambda: seen.extend(iter(out.readline, "")), daemon=True)
    reader.start()
    try:
        settle(action, lambda _: (lines is not None and len(seen) >= lines)
               or process.poll() is not None, seconds, 0.5, lambda result, _limit: result)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        reader.join(timeout=5)
    return [line.rstrip("\n") for line in seen]


def output_until(command: list[str], shows: Callable[[str], bool], what: str,
                 deadline: float = 120, hint: str = "") -> str:
    """The output of `command`, run every 2 s until `shows(output)` holds. Raises ProbeError
    at once when the command fails, and after `deadline` seconds, naming `what` was awaited
    (and `hint`, what to look at)."""
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([console_script(command[0]), *command[1:]], capture_output=True,
                              text=True, timeout=60)

    done = settle(run, lambda result: result.returncode != 0 or shows(result.stdout),
                  deadline, 2, lambda result, _limit: result)
    if done.returncode != 0 or not shows(done.stdout):
        said = (done.stderr or done.stdout).strip()[:300] or "no output"
        raise ProbeError(f"`{' '.join(command)}` did not show {what} within {deadline:.0f} s "
                         f"({said})" + (f": {hint}" if hint else ""))
    return done.stdout
