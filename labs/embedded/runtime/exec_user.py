"""Who runs the commands a learner picks inside a pod: `kubectl exec` and exec probes.

A container runs one of the course's twins, never its own `command`/`args` (twins.py), so an
exec is the only learner-chosen program in a pod. On a learner's machine it runs as the daemon's
user, like everything else. The grader's sandbox starts the daemon with `$MESHLAB_EXEC_UID` set
and with CAP_SETUID, CAP_SETGID and CAP_KILL kept: each exec then switches to that uid and drops
every capability before it starts, so a submission's `kubectl exec` cannot signal the daemon
or its containers, read the daemon's keys, or serve a fake API server in its place — and the
daemon can still stop what the exec started. The switch itself is `subprocesses.become`.
"""

from __future__ import annotations

import os
from pathlib import Path

EXEC_UID_ENV = "MESHLAB_EXEC_UID"


def exec_uid() -> int | None:
    """The uid execs run as, when the daemon was given one."""
    value = os.environ.get(EXEC_UID_ENV)
    return int(value) if value else None


def open_workdir(path: Path) -> None:
    """Let an exec write in its container's working directory (its HOME), as a container may:
    sticky, so it cannot replace the files the daemon put there (`.curlrc`)."""
    path.mkdir(parents=True, exist_ok=True)
    if exec_uid() is not None:
        path.chmod(0o1777)
