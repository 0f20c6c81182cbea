"""Writes one proxy's file-based xDS (cds/rds/lds), touching only files whose content changed.

Envoy watches the xDS directory for files moved into it, so each file is written to a temp file
in the same directory and renamed over the old one: Envoy never reads half a file. Clusters go
first, then routes, then listeners, so every name a newer resource refers to already exists.
A file rewritten with identical content would still make Envoy re-apply it (and log it), so
the writer remembers a digest of what each path holds and skips unchanged files (a digest, not
the text: every sidecar's files list every service, so the texts of a pass grow as services²).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .proxyfiles import EnvoyResources, ProxyFiles

Obj = dict[str, Any]
LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"


def render(resources: list[Obj], type_url: str) -> str:
    """The text of one xDS file: `resources:` with each entry typed. Compact JSON is valid
    YAML and the fastest to produce (an indented dump takes the pure-Python encoder, ten
    times slower); `istioctl proxy-config`-style views read Envoy's config_dump instead."""
    typed = [{"@type": type_url, **{k: v for k, v in r.items() if k != "@type"}}
             for r in resources]
    return json.dumps({"resources": typed}) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` through a temp file in the same directory (same filesystem,
    so the rename is atomic and Envoy's directory watch sees one move)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _digest(text: str) -> bytes:
    """A 128-bit hash of a file's text: enough to tell a changed file, 16 bytes to keep."""
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


class XdsWriter:
    """Writes proxies' xDS files and remembers their content's digest, to skip unchanged ones."""

    def __init__(self) -> None:
        self._content: dict[Path, bytes] = {}

    def write(self, files: ProxyFiles, resources: EnvoyResources) -> list[Path]:
        """Write the changed files of one proxy (cds, rds, lds in that order); return them."""
        changed = []
        for path, items, type_url in (
                (files.cds, resources.clusters, CLUSTER_TYPE),
                (files.rds, resources.route_configs, ROUTE_TYPE),
                (files.lds, resources.listeners, LISTENER_TYPE)):
            text = render(items, type_url)
            new = _digest(text)
            if self._current(path) == new:
                continue
            write_atomic(path, text)
            self._content[path] = new
            changed.append(path)
        return changed

    def _current(self, path: Path) -> bytes | None:
        """The digest of what `path` holds: remembered, or read once (a restarted daemon finds
        the files of the previous run and need not rewrite identical ones)."""
        if path not in self._content:
            try:
                self._content[path] = _digest(path.read_text())
            except OSError:
                return None
        return self._content[path]

    def forget(self, files: ProxyFiles) -> None:
        """Drop what is remembered for a proxy that is gone."""
        for path in (files.cds, files.rds, files.lds):
            self._content.pop(path, None)

    def known_dirs(self) -> set[Path]:
        return {path.parent for path in self._content}
