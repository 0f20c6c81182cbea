"""Does the check runner give honest verdicts — a behavioural check passes only after N passes in
a row, an expired deadline says why, a crashing check fails with the exception's name instead of
a traceback, `fatal` stops only its own lab — and does the registry find checks by id and prefix
and refuse a second definition of an id?

No cluster: the checks here are plain functions that never touch the context.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from labs.checks import (
    Check,
    CheckContext,
    Outcome,
    Retry,
    Status,
    UnknownCheck,
    check,
    failed,
    find,
    lab_ids,
    passed,
    registry,
    run_checks,
    run_one,
    warned,
)
from labs.cluster import ClusterRef
from labs.traffic import ProbeError

NOWHERE = CheckContext(ClusterRef(Path("/nonexistent/kubeconfig"), "none"))


def no_sleep(_: float) -> None:
    """Retries without waiting: the sequence of outcomes, not the clock, drives these tests."""


def sequence(*outcomes: Outcome) -> tuple[Check, list[int]]:
    """A check answering `outcomes` in turn (the last one forever); also its call counter."""
    calls = [0]

    def func(_: CheckContext) -> Outcome:
        calls[0] += 1
        return outcomes[min(calls[0], len(outcomes)) - 1]

    return Check("demo.retry.sequence", "the sequence check passes", func), calls


def with_retry(item: Check, retry: Retry) -> Check:
    return Check(item.id, item.description, item.func, retry=retry)


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Register test checks in a copy of the registry (with the public checks loaded), so they
    never leak into other tests."""
    registry.load_checks()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    yield


# --- retries -------------------------------------------------------------------------------------

def test_retry_needs_consecutive_passes() -> None:
    """Does a pass interrupted by a failure restart the count (3 in a row needed)?"""
    item, calls = sequence(passed(), failed("flap"), passed(), passed(), passed(), failed("late"))
    result = run_one(with_retry(item, Retry(consecutive=3, deadline=30, interval=0)), NOWHERE,
                     sleep=no_sleep)
    assert result.outcome.status is Status.PASS
    assert result.attempts == calls[0] == 5


def test_deadline_on_a_failing_check_reports_its_last_reason() -> None:
    """When the deadline expires while failing, is the check's own last reason reported?"""
    item, calls = sequence(failed("reviews v2 answered 4 of 10"))
    result = run_one(with_retry(item, Retry(consecutive=2, deadline=0.3, interval=0.05)),
                     NOWHERE)
    assert result.outcome == failed("reviews v2 answered 4 of 10")
    assert result.attempts == calls[0] > 1
    assert 0.2 <= result.seconds <= 1.0


def test_deadline_on_a_recent_pass_says_it_did_not_hold_long_enough() -> None:
    """A check that only starts passing just before the deadline: does the failure say it
    passed too few times in a row, and how many were needed?"""
    item, _ = sequence(*[failed("not yet")] * 4, passed())
    result = run_one(with_retry(item, Retry(consecutive=3, deadline=0.3, interval=0.06)),
                     NOWHERE)
    assert result.outcome.status is Status.FAIL
    assert "passed only 1 time(s) in a row within 0.3s (needs 3)" in result.outcome.reason


def test_a_warning_ends_the_retries() -> None:
    item, calls = sequence(warned("not emulated here"))
    result = run_one(with_retry(item, Retry(consecutive=3, deadline=30, interval=0)), NOWHERE,
                     sleep=no_sleep)
    assert result.outcome == warned("not emulated here") and calls[0] == 1


# --- failures of the check itself -----------------------------------------------------------------

def test_a_raising_check_fails_naming_the_exception() -> None:
    def broken(_: CheckContext) -> Outcome:
        return passed() if 1 / 0 else failed("unreachable")

    result = run_one(Check("demo.crash.divide", "never true", broken), NOWHERE)
    assert result.outcome.status is Status.FAIL
    assert result.outcome.reason == ("the check could not run: ZeroDivisionError: "
                                     "division by zero")


def test_a_probe_error_is_the_reason_itself() -> None:
    """A probe that cannot run already says what to fix: no "could not run" wrapper."""
    def probe_fails(_: CheckContext) -> Outcome:
        raise ProbeError("cannot probe from deploy/curl in namespace legacy: not found")

    result = run_one(Check("demo.crash.probe", "curl reaches details", probe_fails), NOWHERE)
    assert result.outcome == failed("cannot probe from deploy/curl in namespace legacy: "
                                    "not found")


def test_a_check_returning_something_else_fails() -> None:
    result = run_one(Check("demo.crash.bool", "returns an Outcome", lambda _: True), NOWHERE)
    assert result.outcome == failed("the check returned True instead of an Outcome")


# --- fatal ---------------------------------------------------------------------------------------

def test_fatal_failure_skips_the_rest_of_its_lab_only() -> None:
    ran: list[str] = []

    def answer(check_id: str, outcome: Outcome) -> Check:
        def func(_: CheckContext) -> Outcome:
            ran.append(check_id)
            return outcome
        return Check(check_id, f"{check_id} holds", func,
                     fatal=check_id.endswith("namespace"))

    checks = [answer("lab-a.namespace", failed("missing")), answer("lab-a.pods", passed()),
              answer("lab-a.route", passed()), answer("lab-b.policy", passed())]
    seen: list[str] = []
    report = run_checks("demo", checks, NOWHERE, on_result=lambda r: seen.append(r.check.id))

    assert ran == ["lab-a.namespace", "lab-b.policy"]
    assert seen == [c.id for c in checks]
    assert [r.outcome.status for r in report.results] == [
        Status.FAIL, Status.SKIP, Status.SKIP, Status.PASS]
    assert report.results[1].outcome.reason == "skipped: lab-a.namespace failed"
    assert (report.ok, report.earned, report.possible) == (False, 1.0, 4.0)


# --- registry ------------------------------------------------------------------------------------

def test_find_by_id_by_prefix_and_in_order(scratch_registry: None) -> None:
    install = [c.id for c in find("day1.install")]
    assert install == ["day1.install.namespace", "day1.install.workloads",
                       "day1.install.sidecars", "day1.install.productpage"]
    assert [c.id for c in find("day1.install.sidecars")] == ["day1.install.sidecars"]
    assert {"day1.install", "day1.traffic", "day1.mtls"} <= {c.lab for c in find("day1")}
    assert not {c.lab for c in find("day1")} & {c.lab for c in find("day2")}
    assert find("day1.install")[0].fatal


def test_prefix_matches_whole_dotted_parts_only(scratch_registry: None) -> None:
    with pytest.raises(UnknownCheck):
        find("day1.inst")


def test_unknown_selector_lists_the_known_labs(scratch_registry: None) -> None:
    with pytest.raises(UnknownCheck) as raised:
        find("day9.nothing")
    message = str(raised.value)
    assert message.startswith("no check or lab is called 'day9.nothing'; known labs: ")
    assert "day1.install" in message and "day1.mtls" in message
    # what IPython shows instead of a traceback
    assert raised.value._render_traceback_() == [f"UnknownCheck: {message}"]


def test_hidden_checks_are_found_only_when_asked(scratch_registry: None) -> None:
    @check("graded.secret.one", "the secret holds", hidden=True)
    def secret(_: CheckContext) -> Outcome:
        return passed()

    with pytest.raises(UnknownCheck) as raised:
        find("graded.secret")
    assert "graded.secret" not in str(raised.value).partition("known labs: ")[2]
    assert "graded.secret" not in lab_ids()
    assert [c.id for c in find("graded.secret", include_hidden=True)] == ["graded.secret.one"]


def test_duplicate_id_is_rejected(scratch_registry: None) -> None:
    @check("demo.dup.one", "first definition")
    def first(_: CheckContext) -> Outcome:
        return passed()

    with pytest.raises(ValueError, match=r"check id 'demo\.dup\.one' is defined twice"):
        @check("demo.dup.one", "second definition")
        def second(_: CheckContext) -> Outcome:
            return passed()
    assert find("demo.dup.one")[0].description == "first definition"
