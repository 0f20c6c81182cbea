"""What the board knows: the latest verdicts per student and lab, and since when each failing
check has been failing — a verdict carries no history, so the board keeps that itself.

`Board.snapshot()` is the one description of the board: `/board.json` serves it as is, and the
live page and the notebook render it (labs.board.render).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from labs.checks import Check, Report, Status
from labs.cluster.roster import Student

STUCK_SHOWN = 3  # checks listed per lab in the "stuck" row


@dataclass
class _Row:
    student: Student
    reports: dict[str, Report] = field(default_factory=dict)
    problem: str | None = None  # why no verdicts: "cluster unreachable: ..." or "error: ..."
    state: str = "pending"  # pending | checked | unreachable | error
    checked_at: float | None = None


class Board:
    """Students × labs. Fed by the refresher (or a test) through `record*`; read through
    `snapshot`. Used from one event loop, or one thread at a time."""

    def __init__(self, students: list[Student], plan: dict[str, list[Check]], *,
                 interval: float | None = None, clock: Callable[[], float] = time.time) -> None:
        self.plan = plan
        self.interval = interval
        self.clock = clock
        self.rows = {s.name: _Row(s) for s in students}
        self.first_failed: dict[tuple[str, str], float] = {}
        self.rounds = 0
        self.last_round_seconds: float | None = None

    def record(self, student: str, reports: dict[str, Report]) -> None:
        """The verdicts of one run for `student` (lab id → report)."""
        now = self.clock()
        row = self.rows[student]
        row.reports, row.problem, row.state, row.checked_at = reports, None, "checked", now
        for report in reports.values():
            for result in report.results:
                key = (student, result.check.id)
                if result.outcome.status is Status.FAIL:
                    self.first_failed.setdefault(key, now)
                elif result.outcome.status is not Status.SKIP:  # a skip says nothing new
                    self.first_failed.pop(key, None)

    def record_problem(self, student: str, state: str, reason: str) -> None:
        """No verdicts this time: `state` is "unreachable" (the cluster) or "error" (the check
        run itself). Failing-since times are kept for when the cluster answers again."""
        row = self.rows[student]
        row.reports, row.state, row.checked_at = {}, state, self.clock()
        row.problem = reason

    def record_round(self, seconds: float) -> None:
        self.rounds += 1
        self.last_round_seconds = seconds

    def snapshot(self) -> dict[str, Any]:
        now = self.clock()
        return {
            "generated": _iso(now),
            "interval": self.interval,
            "rounds": self.rounds,
            "last_round_seconds": self.last_round_seconds,
            "labs": [self._lab(lab, checks, now) for lab, checks in self.plan.items()],
            "students": [self._student(row, now) for row in self.rows.values()],
        }

    def _student(self, row: _Row, now: float) -> dict[str, Any]:
        return {
            "name": row.student.name,
            "target": row.student.target,
            "state": row.state,
            "reason": row.problem,
            "checked_at": _iso(row.checked_at),
            "labs": {lab: self._cell(row, lab, now) for lab in self.plan},
        }

    def _cell(self, row: _Row, lab: str, now: float) -> dict[str, Any]:
        report = row.reports.get(lab)
        if report is None:
            return {"state": row.state if row.state != "checked" else "pending",
                    "passed": 0, "total": len(self.plan[lab]), "earned": 0.0,
                    "possible": sum(c.points for c in self.plan[lab]), "failing": [],
                    "other": []}
        counts = report.counts()
        passed, failing = counts[Status.PASS], counts[Status.FAIL]
        state = "complete" if failing == 0 else ("partial" if passed else "failing")
        return {
            "state": state,
            "passed": passed,
            "total": len(report.results),
            "earned": report.earned,
            "possible": report.possible,
            "counts": {status.value: n for status, n in counts.items()},
            "failing": [{"id": r.check.id, "description": r.check.description,
                         "reason": r.outcome.reason,
                         **self._since(row.student.name, r.check.id, now)}
                        for r in report.results if r.outcome.status is Status.FAIL],
            "other": [{"id": r.check.id, "status": r.outcome.status.value,
                       "reason": r.outcome.reason}
                      for r in report.results if r.outcome.status in (Status.WARN, Status.SKIP)],
        }

    def _lab(self, lab: str, checks: list[Check], now: float) -> dict[str, Any]:
        stuck = []
        for item in checks:
            students = [{"name": row.student.name, **self._since(row.student.name, item.id, now)}
                        for row in self.rows.values() if _fails(row, lab, item.id)]
            if students:
                students.sort(key=lambda s: -s["failing_for"])
                stuck.append({"id": item.id, "description": item.description,
                              "failing": len(students), "students": students})
        stuck.sort(key=lambda s: (-s["failing"], -s["students"][0]["failing_for"]))
        return {"id": lab, "checks": [{"id": c.id, "description": c.description,
                                        "points": c.points, "hidden": c.hidden} for c in checks],
                "stuck": stuck[:STUCK_SHOWN]}

    def _since(self, student: str, check_id: str, now: float) -> dict[str, Any]:
        since = self.first_failed.get((student, check_id), now)
        return {"since": _iso(since), "failing_for": round(now - since, 1)}


def _fails(row: _Row, lab: str, check_id: str) -> bool:
    report = row.reports.get(lab)
    return report is not None and any(
        r.check.id == check_id and r.outcome.status is Status.FAIL for r in report.results)


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")
