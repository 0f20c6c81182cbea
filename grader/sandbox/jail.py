"""The command line that runs a program as a student's own unprivileged uid, in a mount
namespace holding only what it needs, with resource limits and (in replay mode) a network
namespace of its own — built from Debian's tools: `nsenter`, `prlimit`, `unshare`, `setpriv`
(util-linux) and `bwrap` (bubblewrap).

    nsenter --net=/run/netns/meshlab-… --     (replay mode only: the student's own loopback)
      prlimit --as=… --cpu=… --nproc=… --fsize=… --core=0 --
        unshare --mount --propagation private --
          sh -c '[echo $$ > CGROUP/cgroup.procs && …] mount -t proc -o hidepid=invisible proc
                 /proc && exec "$@"' meshlab-sandbox
            bwrap --die-with-parent --new-session --unshare-ipc --unshare-uts … mounts …
                  --cap-add CAP_SETUID --cap-add CAP_SETGID [--cap-add CAP_KILL] --
              setpriv --reuid=UID --regid=UID --clear-groups --inh-caps=-all[,+CAPS]
                      [--ambient-caps=+CAPS] --no-new-privs --
                PROGRAM

Why each step: bwrap runs as root so it can bind what root can read (the Python under /root,
say), then `setpriv` makes the program a real, unprivileged uid outside any user namespace —
root-owned 0600 files stay unreadable even where mounted, and RLIMIT_NPROC counts that uid
alone. The procfs with `hidepid=invisible` (in a mount namespace of its own, so the host's
/proc is untouched) shows that uid its own processes only; signals to others fail on uid.
The network namespace is named by the caller (netns.py), not made here, because the grader
joins it too; the jail enters it itself, so a program of the jail never runs on the host's
network by a caller's mistake. Without one (live mode) the host's network is shared.
`--new-session` also gives the sandbox its own scheduler autogroup, so a fork bomb competes
with other students as one group, not as hundreds of tasks.
A program may keep a few capabilities (`keep`): the replay daemon keeps setuid, setgid and kill
to run what `kubectl exec` asks as a uid of its own and to stop it (runtime/exec_user.py);
a kernel keeps none.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from grader.course import REPO_ROOT

HIDE_PROCESSES = 'mount -t proc -o hidepid=invisible proc /proc && exec "$@"'
TOOLS = ("prlimit", "unshare", "setpriv", "bwrap")
# Top-level system directories bound read-only (or recreated as the symlinks they are).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
# Made by bwrap itself (the jail's own root, and its memory-backed scratch directories).
TMPFS_ROOTS = (Path("/"), Path("/tmp"), Path("/dev"), Path("/dev/shm"))
# Course code a kernel or a daemon imports or reads (never the course dir, day1/, day2/,
# grader/hidden or the tests): the `labs` package, the hidden test cells' import, the pins.
COURSE_CODE = ("labs", "grader/__init__.py", "grader/verify.py",
               "cluster-setup/versions.env", "course.yaml")


@dataclass(frozen=True)
class Limits:
    """Per-process limits (setrlimit), except `processes`, which counts the uid's tasks."""

    memory_bytes: int = 4 << 30  # address space; a 20 GB allocation fails with MemoryError
    cpu_seconds: int = 900
    processes: int = 512  # threads included: a cluster with sidecars needs a few hundred
    file_bytes: int = 1 << 30
    tmp_bytes: int = 256 << 20  # /tmp and /dev/shm are memory: sized, unlike the disk

    def prlimit(self) -> list[str]:
        return ["prlimit", f"--as={self.memory_bytes}", f"--cpu={self.cpu_seconds}",
                f"--nproc={self.processes}", f"--fsize={self.file_bytes}", "--core=0", "--"]


@dataclass(frozen=True)
class Bind:
    """`source` seen at `dest` inside the jail, read-only unless `writable`."""

    source: str
    dest: str
    writable: bool = False

    @classmethod
    def same(cls, path: str | Path, writable: bool = False) -> Bind:
        return cls(str(path), str(path), writable)


@dataclass(frozen=True)
class Jail:
    uid: int
    binds: tuple[Bind, ...] = ()
    limits: Limits = field(default_factory=Limits)
    netns: str | None = None  # a network namespace (/run/netns/NAME); None: the host's
    keep: tuple[str, ...] = ()  # capabilities the program keeps, e.g. ("setuid", "kill")
    cgroup_procs: tuple[str, ...] = ()  # the student's cgroup (cgroup.py), joined as root

    def command(self, argv: list[str], cwd: str | Path) -> list[str]:
        """The full command line running `argv` in this jail, in `cwd` (a bound path)."""
        binds = sorted((*_runtime_binds(), *self.binds), key=lambda b: b.dest.count("/"))
        mounts = [*_system_mounts(), *(_bind(b) for b in binds)]
        dirs = _parents([Path(b.dest) for b in binds])
        network = ["nsenter", f"--net={self.netns}", "--"] if self.netns else []
        return [*network, *self.limits.prlimit(),
                "unshare", "--mount", "--propagation", "private", "--",
                "sh", "-c", self._setup_script(), "meshlab-sandbox",
                "bwrap", "--die-with-parent", "--new-session", "--unshare-ipc", "--unshare-uts",
                "--unshare-cgroup-try", "--ro-bind", "/proc", "/proc", "--dev", "/dev",
                "--size", str(self.limits.tmp_bytes), "--perms", "1777", "--tmpfs", "/tmp",
                "--size", str(self.limits.tmp_bytes), "--perms", "1777", "--tmpfs", "/dev/shm",
                *[arg for d in dirs for arg in ("--perms", "0755", "--dir", d)],
                *[arg for m in mounts for arg in m],
                "--chdir", str(cwd), *self._bwrap_caps(), "--", "setpriv",
                f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups",
                *self._setpriv_caps(), "--no-new-privs", "--", *argv]

    def _setup_script(self) -> str:
        """Join the student's cgroup (while still root), hide other uids' processes, go on."""
        joins = "".join(f"echo $$ > {shlex.quote(path)} && " for path in self.cgroup_procs)
        return joins + HIDE_PROCESSES

    def _bwrap_caps(self) -> list[str]:
        """What bwrap leaves setpriv: enough to change uid, plus what the program keeps."""
        names = dict.fromkeys(("setuid", "setgid", *self.keep))
        return [arg for name in names for arg in ("--cap-add", f"CAP_{name.upper()}")]

    def _setpriv_caps(self) -> list[str]:
        if not self.keep:
            return ["--inh-caps=-all"]
        kept = ",".join(f"+{name}" for name in self.keep)
        return [f"--inh-caps=-all,{kept}", f"--ambient-caps={kept}"]


def _bind(bind: Bind) -> list[str]:
    return ["--bind" if bind.writable else "--ro-bind", bind.source, bind.dest]


def _system_mounts() -> Iterable[list[str]]:
    for name in SYSTEM_DIRS:
        path = Path(name)
        if path.is_symlink():
            yield ["--symlink", str(path.readlink()), name]
        elif path.is_dir():
            yield ["--ro-bind", name, name]


def _runtime_binds() -> list[Bind]:
    """This Python (base install and venv) and the course code, read-only."""
    prefixes = {Path(sys.base_prefix).resolve(), Path(sys.prefix)}
    outside = [p for p in prefixes if not any(p.is_relative_to(d) for d in SYSTEM_DIRS)]
    code = [REPO_ROOT / item for item in COURSE_CODE if (REPO_ROOT / item).exists()]
    return [Bind.same(p) for p in sorted({*outside, *code})]


def _parents(dests: list[Path]) -> list[str]:
    """Directories to create (0755) above the mount points — bwrap would make them 0700 —
    except those inside a system directory or another mount."""
    inside = [Path(d) for d in SYSTEM_DIRS] + dests
    needed = {parent for dest in dests for parent in dest.parents
              if parent not in TMPFS_ROOTS and not any(parent.is_relative_to(d) for d in inside)}
    return [str(p) for p in sorted(needed, key=lambda p: len(p.parts))]


def problem() -> str | None:
    """Why no jail can be made here (None when one can): not root, a tool missing, or the
    kernel refusing a namespace — found by running `true` in a jail."""
    if os.geteuid() != 0:
        return "grading in a sandbox needs root (each student gets a uid of its own)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return (f"{', '.join(missing)} not found (Debian: apt-get install bubblewrap "
                f"util-linux)")
    try:
        done = subprocess.run(Jail(uid=65534).command(["true"], "/"), capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"a test sandbox did not run: {exc}"
    if done.returncode != 0:
        return f"a test sandbox failed: {done.stderr.strip().splitlines()[-1:]}"
    return None
