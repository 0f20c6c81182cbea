"""What a check is: one statement about a learner's cluster, and the verdict on it.

Every reader (notebook, `meshlab check`, the instructor board, nbgrader's hidden tests) runs the
same `Check` objects; only the rendering differs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labs.checks.context import CheckContext


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"


@dataclass(frozen=True)
class Outcome:
    """A check function's answer; `reason` says what was seen (shown under a failure)."""

    status: Status
    reason: str = ""


def passed(reason: str = "") -> Outcome:
    return Outcome(Status.PASS, reason)


def failed(reason: str) -> Outcome:
    return Outcome(Status.FAIL, reason)


def warned(reason: str) -> Outcome:
    return Outcome(Status.WARN, reason)


def skipped(reason: str) -> Outcome:
    return Outcome(Status.SKIP, reason)


@dataclass(frozen=True)
class Retry:
    """Behavioural checks: config takes time to reach the proxies, so a check passes only after
    `consecutive` passes in a row within `deadline` seconds, polled every `interval` seconds."""

    consecutive: int = 3
    deadline: float = 30.0
    interval: float = 1.0


CheckFunction = Callable[["CheckContext"], Outcome]


@dataclass(frozen=True)
class Check:
    """One gradable statement. `description` says what is true when it passes; `hint` tells a
    learner what to do when it fails; `anchor` links into the lab's notebook. A `hidden` check is
    run by the grader only, and its hint reaches feedback only when `share_hint` is set. A failing
    `fatal` check skips the rest of its lab (nothing after it can pass)."""

    id: str
    description: str
    func: CheckFunction = field(repr=False, compare=False)
    points: float = 1.0
    hidden: bool = False
    hint: str = ""
    anchor: str = ""
    fatal: bool = False
    share_hint: bool = True
    retry: Retry | None = None

    @property
    def lab(self) -> str:
        """The lab this check belongs to: its id without the last dotted part
        (`day1.mtls.strict-namespace` → `day1.mtls`)."""
        return self.id.rpartition(".")[0]
