"""The pinned tool and image versions, read from `cluster-setup/versions.env`.

Shell scripts source that file and Python reads it here, so a version is changed in one place.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

VERSIONS_FILE = Path(__file__).resolve().parents[1] / "cluster-setup" / "versions.env"
_LINE = re.compile(r"^(?P<key>[A-Z][A-Z0-9_]*)=(?P<value>[^\s'\"#]+)$")


class VersionsError(RuntimeError):
    """versions.env is missing, malformed, or lacks a version someone asked for."""


def parse(text: str, source: str = "versions.env") -> dict[str, str]:
    """`KEY=value` lines; blank lines and `#` comments are skipped, anything else is an error."""
    found: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise VersionsError(
                f"{source}:{number}: cannot read {raw!r}: write KEY=value with an upper-case key "
                "and a value without spaces or quotes, e.g. ISTIO_VERSION=1.30.5")
        if match["key"] in found:
            raise VersionsError(f"{source}:{number}: {match['key']} is set twice; keep one line")
        found[match["key"]] = match["value"]
    return found


def versions() -> dict[str, str]:
    """Every pinned version by key (the file is read once per process)."""
    return dict(_load())


@functools.cache
def _load() -> dict[str, str]:
    try:
        text = VERSIONS_FILE.read_text()
    except OSError as exc:
        raise VersionsError(
            f"cannot read the pinned versions at {VERSIONS_FILE} ({exc.strerror}): run meshlab "
            "from a checkout of the repository (pip install -e .), which contains "
            "cluster-setup/versions.env") from None
    return parse(text, str(VERSIONS_FILE))


def version(key: str) -> str:
    """One pinned version, e.g. `version("ISTIO_VERSION")` -> "1.30.5"."""
    pinned = _load()
    if key not in pinned:
        raise VersionsError(f"{VERSIONS_FILE} does not set {key}; add a line {key}=<version> "
                            f"(it sets {', '.join(sorted(pinned))})")
    return pinned[key]
