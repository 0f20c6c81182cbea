"""A Jupyter kernel manager whose kernel starts in the student's sandbox (see jail.py).

The kernel's argv is the jail's command line around `python -m ipykernel_launcher`; its
connection file is bound read-only and handed to the student's uid; interrupts go as messages
(a signal would reach the launcher, not the kernel); its working directory — the notebook's
folder, as nbclient asks — is the sandbox's own work directory, filled with a copy of the
notebook's folder, so nothing the kernel writes lands in the course directory."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager

from grader.sandbox.accounts import hand_over
from grader.sandbox.environment import sandbox_env
from grader.sandbox.student import StudentSandbox


class SandboxedKernelManager(AsyncKernelManager):
    def __init__(self, sandbox: StudentSandbox, workdir: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sandbox = sandbox
        self.workdir = workdir
        self.connection_file = str(sandbox.connection_file)
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        self._sandboxed_spec = KernelSpec(
            argv=sandbox.kernel_jail(workdir).command(argv, workdir),
            display_name="Python 3 (meshlab sandbox)", language="python",
            interrupt_mode="message")

    @property
    def kernel_spec(self) -> KernelSpec:
        """Always the sandboxed one (the base class would look a spec up by kernel name)."""
        return self._sandboxed_spec

    async def _async_pre_start_kernel(self, **kw: Any) -> Any:
        work = self.sandbox.work
        shutil.copytree(self.workdir, work, symlinks=True, dirs_exist_ok=True)
        hand_over(work, self.sandbox.uid)
        kw["env"] = sandbox_env(kw.get("env") or os.environ, str(self.workdir))
        return await super()._async_pre_start_kernel(**kw)

    def write_connection_file(self, **kwargs: Any) -> None:
        super().write_connection_file(**kwargs)
        os.chown(self.connection_file, self.sandbox.uid, self.sandbox.uid)
