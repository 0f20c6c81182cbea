"""Start, stop and inspect embedded clusters (the daemon runs in its own process group), and
reach their sidecars the way only a local cluster allows: the Envoy admin port on 127.0.0.1 and
the sidecar's JSON access log on disk."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labs.embedded.paths import ClusterPaths
from labs.embedded.workload import PROXY_PORTS, TELEMETRY_LOG, proxy_ports
from labs.istio_names import SIDECAR_CONTAINER

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
HEALTH_TIMEOUT_S = 3.0  # a loaded 2-core machine can take a second or more to answer
ADMIN_TIMEOUT_S = 5.0
Obj = dict[str, Any]


class ClusterError(RuntimeError):
    """Starting or stopping a cluster failed; the message says why and what to do."""


class SidecarError(RuntimeError):
    """A pod's sidecar could not be asked; the message says what to fix."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _held(lock: Path) -> bool:
    """Whether a daemon holds the cluster's lock (it does, exclusively, while it runs)."""
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _healthy(port: int, ca_file: Path) -> bool:
    try:
        context = ssl.create_default_context(cafile=str(ca_file))
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/readyz", timeout=HEALTH_TIMEOUT_S,
                                    context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


@dataclass(frozen=True)
class Status:
    name: str
    running: bool
    pid: int | None
    port: int | None
    kubeconfig: Path
    state_dir: Path


class EmbeddedCluster:
    """A named embedded cluster under a state root; cheap to create, starts nothing by itself."""

    def __init__(self, name: str | None = None, state_root: Path | str | None = None) -> None:
        try:
            self.paths = ClusterPaths.of(name, state_root)
        except ValueError as exc:
            raise ClusterError(str(exc)) from None

    @property
    def name(self) -> str:
        return self.paths.name

    @property
    def kubeconfig(self) -> Path:
        return self.paths.kubeconfig

    def status(self) -> Status:
        endpoint = self.paths.read_endpoint()
        running = bool(endpoint and _pid_alive(endpoint["pid"])
                       and _healthy(endpoint["port"], self.paths.ca_cert))
        return Status(self.name, running, endpoint["pid"] if endpoint and running else None,
                      endpoint["port"] if endpoint and running else None, self.paths.kubeconfig,
                      self.paths.dir)

    def up(self, timeout: float = START_TIMEOUT_S) -> Path:
        """Start the daemon unless it runs already; returns the kubeconfig path. A daemon that
        holds the cluster's lock but does not answer yet (a busy machine, or one still exiting
        after `kill -9`) is waited for rather than started twice."""
        deadline = time.monotonic() + timeout
        self.paths.dir.mkdir(parents=True, exist_ok=True)
        while time.monotonic() < deadline:
            if self.status().running:
                return self.paths.kubeconfig
            if _held(self.paths.lock):
                time.sleep(0.1)
                continue
            if self._start(deadline):
                return self.paths.kubeconfig
        raise ClusterError(f"the embedded cluster {self.name!r} did not become ready within "
                           f"{timeout:.0f}s; see {self.paths.log}")

    def _start(self, deadline: float) -> bool:
        """Start a daemon and wait until it answers (True); False when another one won the
        lock meanwhile, or the deadline passed."""
        self.paths.endpoint.unlink(missing_ok=True)  # left by a daemon that was killed
        with open(self.paths.log, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "labs.embedded.daemon", "--name", self.name,
                 "--state-dir", str(self.paths.root)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=self.paths.dir,
                env={**os.environ, "PYTHONPATH": _package_root()},
            )
        while time.monotonic() < deadline:
            endpoint = self.paths.read_endpoint()
            if (endpoint and endpoint["pid"] == process.pid
                    and _healthy(endpoint["port"], self.paths.ca_cert)):
                return True
            code = process.poll()
            if code == 3:  # another `up` won the race for the lock: wait for its daemon
                return False
            if code is not None:
                raise ClusterError(
                    f"the embedded cluster {self.name!r} stopped while starting (exit {code}); "
                    f"its log is {self.paths.log}:\n{_tail(self.paths.log)}")
            time.sleep(0.02)
        process.terminate()
        return False

    def down(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Stop the daemon and its pods; True if one was running. State stays on disk."""
        endpoint = self.paths.read_endpoint()
        if not endpoint or not _pid_alive(endpoint["pid"]):
            self.paths.endpoint.unlink(missing_ok=True)
            return False
        pid = endpoint["pid"]
        try:
            os.kill(pid, signal.SIGTERM)
        except PermissionError:
            raise ClusterError(f"the embedded cluster {self.name!r} (pid {pid}) runs as another "
                               "user: only that user, or root, can stop it") from None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _pid_alive(pid) or _is_zombie(pid):
                return True
            time.sleep(0.05)
        os.killpg(pid, signal.SIGKILL)
        return True

    def sidecar_admin(self, pod: Obj, path: str) -> str:
        """GET `path` from the Envoy admin API of `pod`'s sidecar, on the admin port the runtime
        wrote into the pod (annotation meshlab.dev/proxy-ports)."""
        meta = pod["metadata"]
        what = f"pod {meta['name']} in namespace {meta.get('namespace', '')}"
        port = proxy_ports(pod).get("admin")
        if port is None:
            raw = (meta.get("annotations") or {}).get(PROXY_PORTS)
            raise SidecarError(f"pod {meta['name']} has no sidecar admin port yet (annotation "
                               f"{PROXY_PORTS} is {raw!r}); wait until the pod is Running: "
                               f"`kubectl wait --for=condition=Ready pod/{meta['name']}`")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}",
                                        timeout=ADMIN_TIMEOUT_S) as response:
                return str(response.read().decode())
        except urllib.error.HTTPError as exc:
            raise SidecarError(f"the sidecar of {what} answered /{path} with {exc.code}: "
                               f"{exc.read().decode(errors='replace')[:200]}") from None
        except OSError as exc:
            raise SidecarError(f"the sidecar of {what} does not answer on its admin port {port} "
                               f"({exc}); is the pod Running 2/2? `kubectl get pods`") from None

    def sidecar_access_log(self, pod: Obj, tail: int) -> list[Obj] | None:
        """The last `tail` entries of the sidecar's JSON access log (Envoy's fields plus
        `direction` and the RBAC filters' metadata `rbac`), oldest first; None where the
        cluster's files cannot be read (a sandboxed grading kernel)."""
        path = self.paths.pod_dir(pod) / SIDECAR_CONTAINER / TELEMETRY_LOG
        try:
            lines = path.read_text().splitlines()[-tail:]
        except OSError:
            return None
        entries = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:  # a line Envoy is still writing
                continue
            if isinstance(entry, dict):
                entries.append(entry)
        return entries


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _package_root() -> str:
    """The directory holding the `labs` package, so the daemon imports the same code."""
    return str(Path(__file__).resolve().parents[2])
