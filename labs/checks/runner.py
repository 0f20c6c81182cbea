"""Run checks against a cluster: retries for behavioural checks, `fatal` stopping a lab, and
an exception in a check function turned into a failure that names it (never a traceback)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from labs.checks.context import CheckContext, ClusterReadError
from labs.checks.model import Check, Outcome, Status, failed, skipped
from labs.traffic import ProbeError

# Errors whose message already tells a learner what is wrong and what to do.
_EXPLAINED = (ClusterReadError, ProbeError)


@dataclass(frozen=True)
class Result:
    check: Check
    outcome: Outcome
    seconds: float
    attempts: int = 1

    @property
    def earned(self) -> float:
        return self.check.points if self.outcome.status is Status.PASS else 0.0


@dataclass
class Report:
    """The results of one run, in check order."""

    selector: str
    results: list[Result] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no check failed (warnings and skips do not fail a run)."""
        return all(r.outcome.status is not Status.FAIL for r in self.results)

    @property
    def earned(self) -> float:
        return sum(r.earned for r in self.results)

    @property
    def possible(self) -> float:
        return sum(r.check.points for r in self.results)

    def counts(self) -> dict[Status, int]:
        counts = dict.fromkeys(Status, 0)
        for result in self.results:
            counts[result.outcome.status] += 1
        return counts


def _call(item: Check, context: CheckContext) -> Outcome:
    try:
        outcome = item.func(context)
    except _EXPLAINED as exc:
        return failed(str(exc))
    except Exception as exc:  # a check must never crash the run; its failure says why
        return failed(f"the check could not run: {type(exc).__name__}: {exc}")
    if not isinstance(outcome, Outcome):
        return failed(f"the check returned {outcome!r} instead of an Outcome")
    return outcome


def run_one(item: Check, context: CheckContext,
            sleep: Callable[[float], None] = time.sleep) -> Result:
    """Run one check; with `retry`, until `consecutive` passes in a row or the deadline."""
    start = time.monotonic()
    if item.retry is None:
        return Result(item, _call(item, context), time.monotonic() - start)
    retry = item.retry
    streak = attempts = 0
    outcome = _call(item, context)
    while True:
        attempts += 1
        streak = streak + 1 if outcome.status is Status.PASS else 0
        if streak >= retry.consecutive or outcome.status in (Status.SKIP, Status.WARN):
            break
        if time.monotonic() - start + retry.interval > retry.deadline:
            if outcome.status is Status.PASS:  # passing, but not yet for long enough
                outcome = failed(f"passed only {streak} time(s) in a row within "
                                 f"{retry.deadline:g}s (needs {retry.consecutive})")
            break
        sleep(retry.interval)
        outcome = _call(item, context)
    return Result(item, outcome, time.monotonic() - start, attempts)


def run_checks(selector: str, checks: Iterable[Check], context: CheckContext,
               on_result: Callable[[Result], None] | None = None) -> Report:
    """Run `checks` in order. After a failing `fatal` check, the rest of its lab is skipped."""
    report = Report(selector)
    stopped: dict[str, str] = {}
    for item in checks:
        if item.lab in stopped:
            result = Result(item, skipped(f"skipped: {stopped[item.lab]} failed"), 0.0, 0)
        else:
            result = run_one(item, context)
            if item.fatal and result.outcome.status is Status.FAIL:
                stopped[item.lab] = item.id
        report.results.append(result)
        if on_result is not None:
            on_result(result)
    return report
