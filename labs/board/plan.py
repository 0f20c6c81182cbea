"""Which checks the board runs: the public checks of the chosen labs, plus the grader's hidden
checks on request. The board process and its check workers both build the plan here, so they
agree on the checks and their order."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from labs.checks import Check, find, lab_ids
from labs.checks.registry import load_public_checks

HIDDEN_PACKAGE = "grader.hidden"
COURSE_ROOT = Path(__file__).resolve().parents[2]


class PlanError(ValueError):
    """The labs or checks asked for are not available; the message says what is."""


def load_hidden_checks() -> None:
    """Import the grader's hidden checks (importing the package registers them all)."""
    load_public_checks()  # first, so each lab's public checks keep their place (fatal ones lead)
    if str(COURSE_ROOT) not in sys.path:
        sys.path.append(str(COURSE_ROOT))  # `grader/` sits beside `labs/` in the course
    try:
        importlib.import_module(HIDDEN_PACKAGE)
    except ImportError as exc:
        raise PlanError(f"--hidden needs the grader's hidden checks ({HIDDEN_PACKAGE}), which "
                        f"cannot be imported here ({exc}); run the board from the course "
                        "checkout, or leave out --hidden to show the public checks") from None


def build_plan(labs: list[str] | None = None, *, hidden: bool = False) -> dict[str, list[Check]]:
    """Lab id → its checks in run order. `labs` None: every lab that has checks."""
    if hidden:
        load_hidden_checks()
    chosen = labs or lab_ids(include_hidden=hidden)
    if not chosen:
        raise PlanError("no lab has checks yet (labs/checks/public/ is empty)")
    plan: dict[str, list[Check]] = {}
    for lab in chosen:
        try:
            plan[lab] = find(lab, include_hidden=hidden)
        except LookupError as exc:
            raise PlanError(str(exc)) from None
    return plan


def checks_by_id(ids: list[str], *, hidden: bool = False) -> list[Check]:
    """The registered checks with exactly these ids, in this order."""
    if hidden:
        load_hidden_checks()
    found = []
    for check_id in ids:
        try:
            matches = [c for c in find(check_id, include_hidden=True) if c.id == check_id]
        except LookupError:
            matches = []
        if not matches:
            raise PlanError(f"no check has the id {check_id!r}")
        found.append(matches[0])
    return found
