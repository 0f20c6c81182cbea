"""The pod-loopback shim: a pod's `localhost` for any program `kubectl exec` runs.

Built-in programs and curl see a pod's `localhost` through its port map (network.py); any other
program (a Python script, wget, bash's /dev/tcp, nc) would dial the host's ports. The shim
(pod_loopback.c, shipped with the package) is an LD_PRELOAD library wrapping connect(2): for a
TCP connection to loopback it dials the pod map's host port, and refuses a port the pod does not
have, as a real pod's network namespace does. It is compiled on first use with the host's `cc`
into a per-user cache, one file per source hash and machine, written atomically, then checked
once per daemon by loading it into `/bin/sh`.

Only `kubectl exec` processes (and what they start) get it: every container's own process is a
forked Python twin (which dials through apps/localhost.py already and never execs), or a real
Envoy / Prometheus (which must dial the host's ports it was configured with). Where it cannot be
had (not Linux, no `cc`, a failed build), execs run as before — curl (its `.curlrc`) and the
course's programs still see the pod's ports — and the reason is in the exec'd environment as
`MESHLAB_POD_LOCALHOST_SHIM=off: …` and logged once by the daemon.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..apps.localhost import LOCALHOST_ENV
from .exec_user import exec_uid

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("pod_loopback.c")
SHIM_ENV = "MESHLAB_POD_LOCALHOST_SHIM"  # set (to why) only when the shim is off
BUILD_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Shim:
    """The built library, or why there is none."""

    path: Path | None
    reason: str = ""

    def exec_env(self, env: Mapping[str, str]) -> dict[str, str]:
        """`env` for a process run in a pod: LD_PRELOAD extended with the shim (after any the
        pod spec set), or the reason it is off. Outside a pod (no map) `env` unchanged."""
        if LOCALHOST_ENV not in env:
            return dict(env)
        if self.path is None:
            return {**env, SHIM_ENV: f"off: {self.reason}"}
        preload = env.get("LD_PRELOAD", "").strip()
        return {**env, "LD_PRELOAD": f"{preload}:{self.path}" if preload else str(self.path)}


def cache_dir() -> Path:
    """The per-user cache ($XDG_CACHE_HOME, else ~/.cache) of built shims."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "meshlab" / "pod-loopback"


def build(directory: Path, compiler: str = "cc", system: str = sys.platform) -> Shim:
    """The shim in `directory`, compiled there with `compiler` unless a build of this source
    for this machine is there already."""
    if system != "linux":
        return Shim(None, f"the pod-loopback shim needs Linux's LD_PRELOAD (this is {system})")
    cc = shutil.which(compiler)
    if cc is None:
        return Shim(None, f"no C compiler ({compiler!r}) on PATH to build the pod-loopback "
                          "shim; install one (e.g. `apt-get install gcc`) and restart the cluster")
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + platform.machine().encode()).hexdigest()[:16]
    target = directory / f"pod_loopback-{key}.so"
    try:
        if not target.exists():
            _compile(cc, target)
        _check_loads(target)
    except (OSError, subprocess.SubprocessError, BuildError) as exc:
        return Shim(None, f"the pod-loopback shim could not be built in {directory}: {exc}")
    if exec_uid() is not None and not _others_can_read(target):
        return Shim(None, f"{target} is not readable by the exec user (uid {exec_uid()}): "
                          "it, or a directory above it, is not open to others")
    return Shim(target)


class BuildError(Exception):
    """The compiler or the loader said no."""


def _compile(cc: str, target: Path) -> None:
    """Compile to a temporary file beside `target`, then rename: a concurrent daemon sees
    either no file or a whole one."""
    for directory in reversed([target.parent, *target.parent.parents]):
        if not directory.exists():  # searchable by the exec user (umask aside)
            directory.mkdir(exist_ok=True)
            directory.chmod(0o755)
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-Wall", "-o", tmp, str(SOURCE),
                               "-ldl"], capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise BuildError(f"{Path(cc).name} exited {done.returncode}: "
                             f"{(done.stderr.strip().splitlines() or [''])[-1]}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _check_loads(target: Path) -> None:
    """The dynamic loader only warns about a library it cannot preload: ask it once."""
    done = subprocess.run(["/bin/sh", "-c", ":"], capture_output=True, text=True,
                          timeout=BUILD_TIMEOUT_S, stdin=subprocess.DEVNULL,
                          env={"LD_PRELOAD": str(target), LOCALHOST_ENV: "{}"})
    if done.returncode != 0 or done.stderr.strip():
        raise BuildError(f"{target} does not load: {done.stderr.strip() or done.returncode}")


def _others_can_read(path: Path) -> bool:
    """Can any user read `path` (every directory above it searchable by others)?"""
    if not os.stat(path).st_mode & stat.S_IROTH:
        return False
    return all(os.stat(parent).st_mode & stat.S_IXOTH for parent in path.parents)


_lock = threading.Lock()


def shim() -> Shim:
    """This daemon's shim, built (or found wanting) once. Blocking: call it in a thread."""
    with _lock:
        return _daemon_shim()


@functools.cache
def _daemon_shim() -> Shim:
    built = build(cache_dir(), os.environ.get("CC") or "cc")  # conda's compiler sets CC
    if built.path is None:
        log.warning("kubectl exec: %s; only curl and the course's own programs see a pod's "
                    "localhost", built.reason)
    return built
