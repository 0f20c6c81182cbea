"""Which checks the board runs: the public checks of the chosen labs, plus the grader's hidden
checks on request. The board process and its check workers both build the plan here, so they
agree on the checks and their order."""

from __future__ import annotations

from collections.abc import Iterable

from labs.checks import Check, find, lab_ids
from labs.checks.registry import load_checks


class PlanError(ValueError):
    """The labs or checks asked for are not available; the message says what is."""


def load(*, hidden: bool = False, extra: Iterable[str] = ()) -> None:
    """Register the checks the board may run (see `labs.checks.registry.load_checks`)."""
    try:
        load_checks(hidden=hidden, extra=extra)
    except ImportError as exc:
        what = "--hidden needs the grader's hidden checks, which" if hidden else "the checks"
        raise PlanError(f"{what} cannot be imported here ({exc}); run the board from the "
                        "course checkout, or leave out --hidden to show the public "
                        "checks") from None


def build_plan(labs: list[str] | None = None, *, hidden: bool = False) -> dict[str, list[Check]]:
    """Lab id → its checks in run order. `labs` None: every lab that has checks."""
    load(hidden=hidden)
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


def checks_by_id(ids: list[str]) -> list[Check]:
    """The registered checks (see `load`) with exactly these ids, in this order."""
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
