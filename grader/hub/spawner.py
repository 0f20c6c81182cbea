"""`MeshlabSpawner`: JupyterHub's LocalProcessSpawner (each server a process of the
participant's own Unix user) running `python -m labs.hub.singleuser`, inside a control group
that enforces `mem_limit` and a task limit.

LocalProcessSpawner itself enforces no limit: `mem_limit`/`cpu_limit` only reach the server as
MEM_LIMIT/CPU_LIMIT in its environment (jupyterhub/jupyterhub, jupyterhub/spawner.py, the
help of `mem_limit`: "The default spawner, `LocalProcessSpawner`, does **not** implement this
support. A custom spawner **must** add support"). Here the server (and so the kernel and
the whole embedded cluster it starts) joins a cgroup made with the grader's StudentCgroup
(grader/sandbox/cgroup.py: cgroup v2 memory.max + pids.max, or v1), joined in the child before
it drops root. `cpu_limit` stays advisory (no CPU controller is set). Where no cgroup can be
written, the hub logs that the limits are advisory and spawns anyway.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jupyterhub.spawner import LocalProcessSpawner
from traitlets import Integer, List, Unicode, default

from grader.sandbox.cgroup import CgroupLimits, StudentCgroup

DEFAULT_MEMORY = 3 << 30  # an embedded cluster with the mesh, its Envoys and a kernel


def closed_directory(path: Path) -> Path | None:
    """The first directory above `path` that other users cannot enter (no o+x), or None: a
    Python under /root (pyenv's default, mode 700) cannot be run by participants."""
    for parent in reversed(path.parents):
        if not parent.stat().st_mode & stat.S_IXOTH:
            return parent
    return None


class MeshlabSpawner(LocalProcessSpawner):  # type: ignore[misc]  # jupyterhub: no type hints
    """One participant's server and embedded cluster, as that participant, within limits."""

    tasks_limit = Integer(2048, config=True,
                          help="processes and threads the server, kernel and cluster may have")
    hub_config_dir = Unicode("", config=True,
                             help="a Jupyter config directory every server reads "
                             "(nbgrader's exchange settings), put in JUPYTER_CONFIG_PATH")
    cgroup_dirs = List(Unicode())  # this server's cgroup, kept in the hub's state

    @default("cmd")
    def _cmd_default(self) -> list[str]:
        return [sys.executable, "-m", "labs.hub.singleuser"]

    @default("interrupt_timeout")
    def _interrupt_default(self) -> int:
        return 40  # the server's own shutdown, then `meshlab down` (up to 15 s)

    def get_env(self) -> dict[str, str]:
        env: dict[str, str] = super().get_env()
        env["MESHLAB_CLUSTER"] = self.user.name
        if self.hub_config_dir:
            env["JUPYTER_CONFIG_PATH"] = self.hub_config_dir
        return env

    def make_preexec_fn(self, name: str) -> Callable[[], None]:
        drop_root = super().make_preexec_fn(name)
        procs = [str(Path(d) / "cgroup.procs") for d in self.cgroup_dirs]

        def preexec() -> None:
            for path in procs:  # as root, before the user is set: the kernel checks the writer
                with open(path, "w") as handle:
                    handle.write(str(os.getpid()))
            drop_root()

        return preexec

    async def start(self) -> Any:
        python = Path(sys.executable).resolve()
        closed = closed_directory(python) or closed_directory(Path(sys.prefix) / "bin")
        if closed is not None:
            raise RuntimeError(f"{self.user.name} cannot run the hub's Python {python}: "
                               f"{closed} is closed to other users (chmod o+x {closed}, or "
                               "install meshlab with a Python outside it, e.g. under /opt)")
        self._end_cgroup()  # a server that died by itself left its cgroup
        made = StudentCgroup.create(CgroupLimits(self.mem_limit or DEFAULT_MEMORY,
                                                 self.tasks_limit))
        if made is None:
            self.log.warning("no writable cgroup: mem_limit and tasks_limit of %s are advisory "
                             "only", self.user.name)
        self.cgroup_dirs = list(made.directories) if made else []
        return await super().start()

    async def stop(self, now: bool = False) -> None:
        await super().stop(now=now)
        self._end_cgroup()

    def _end_cgroup(self) -> None:
        """Kill what outlived the server (a cluster after a SIGKILL), remove the cgroup."""
        if not self.cgroup_dirs:
            return
        for directory in self.cgroup_dirs:
            with contextlib.suppress(OSError):
                for pid in (Path(directory) / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
        StudentCgroup(tuple(self.cgroup_dirs)).remove()
        self.cgroup_dirs = []

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = super().get_state()
        if self.cgroup_dirs:
            state["cgroup_dirs"] = list(self.cgroup_dirs)
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.cgroup_dirs = list(state.get("cgroup_dirs", []))
