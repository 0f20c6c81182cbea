"""The instructor board: students × labs from the same checks learners run (`meshlab board`,
or `labs.board.show(roster)` in a notebook). Names are imported on first use, so the `meshlab`
command does not pay for the board's imports on every `meshlab up`."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"Board": "labs.board.model", "show": "labs.board.notebook",
            "snapshot": "labs.board.notebook"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'labs.board' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
