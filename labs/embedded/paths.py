"""Where an embedded cluster keeps its files, shared by the daemon and its clients."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .workload import pod_dir_name

NAME_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")
DEFAULT_CLUSTER = "meshlab"


def default_state_root() -> Path:
    return Path(os.environ.get("MESHLAB_STATE_DIR") or Path.home() / ".meshlab")


def pods_dir(cluster_dir: Path | str) -> Path:
    """The runtime's folder of pod folders in a cluster's directory; for the daemon's parts,
    which are handed that directory rather than a `ClusterPaths`."""
    return Path(cluster_dir) / "pods"


@dataclass(frozen=True)
class ClusterPaths:
    """The files of one named embedded cluster under a state root."""

    name: str
    root: Path

    @classmethod
    def of(cls, name: str | None = None, state_root: Path | str | None = None) -> ClusterPaths:
        name = name or DEFAULT_CLUSTER
        if not NAME_PATTERN.match(name):
            raise ValueError(
                f"cluster name {name!r} is not valid: use 1-40 lower-case letters, digits and "
                "'-', starting and ending with a letter or digit (e.g. 'student-07')")
        root = Path(state_root) if state_root else default_state_root()
        return cls(name, root.expanduser().resolve())

    @property
    def dir(self) -> Path:
        return self.root / "clusters" / self.name

    @property
    def database(self) -> Path:
        return self.dir / "state.db"

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def endpoint(self) -> Path:
        """Written by a running daemon: its pid and port. Removed on a clean stop."""
        return self.dir / "endpoint.json"

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def pods_dir(self) -> Path:
        return pods_dir(self.dir)

    def pod_dir(self, pod: dict[str, Any]) -> Path:
        """A pod's folder: a directory per container (its HOME, e.g. the sidecar's xDS files),
        the containers' logs and pid files."""
        return self.pods_dir / pod_dir_name(pod)

    @property
    def log(self) -> Path:
        return self.dir / "daemon.log"

    @property
    def lock(self) -> Path:
        return self.dir / "daemon.lock"

    def read_endpoint(self) -> dict[str, int] | None:
        """pid and API port of the running daemon, plus the ports of its services when they
        run (`telemetry`, `prometheus`); None without a (valid) file."""
        try:
            data = json.loads(self.endpoint.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or not {"pid", "port"} <= data.keys():
            return None
        try:
            return {key: int(value) for key, value in data.items() if value is not None}
        except (TypeError, ValueError):
            return None


def write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only, atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)
