"""The board in a notebook: one round of the same checks, rendered by the same code as the live
page (`meshlab board` is the live version)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from labs.board.model import Board
from labs.board.plan import build_plan
from labs.board.refresh import DEFAULT_CHECK_TIMEOUT_S, DEFAULT_CONCURRENCY, Refresher
from labs.board.render import STYLE, fragment
from labs.cluster.roster import current_student, load_roster


def snapshot(roster: Path | str | None = None, labs: list[str] | None = None, *,
             hidden: bool = False, concurrency: int = DEFAULT_CONCURRENCY,
             check_timeout: float = DEFAULT_CHECK_TIMEOUT_S) -> dict[str, Any]:
    """Check every student of `roster` (default: the current cluster) once; the board's JSON."""
    students = load_roster(roster) if roster else [current_student()]
    board = Board(students, build_plan(labs, hidden=hidden))
    refresher = Refresher(board, students, hidden=hidden, concurrency=concurrency,
                          check_timeout=check_timeout)
    # Jupyter runs an event loop in this thread already: run the round on a thread of its own.
    errors: list[BaseException] = []

    def round_() -> None:
        try:
            asyncio.run(refresher.refresh_once())
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    worker = threading.Thread(target=round_, name="meshlab-board")
    worker.start()
    worker.join()
    if errors:
        raise errors[0]
    return board.snapshot()


def show(roster: Path | str | None = None, labs: list[str] | None = None, **options: Any) -> Any:
    """The board as notebook output (students × labs, failing checks, who is stuck)."""
    from IPython.display import HTML

    return HTML(STYLE + fragment(snapshot(roster, labs, **options)))
