"""Three views of one Report: text like `linkerd check`, HTML for notebooks, JSON for programs.

The renderers only read a Report; they never run anything, so golden files pin them exactly.
One rule says what each audience sees (`shown`): a learner gets a hidden check's hint only when
the instructor marked it shareable (`share_hint`), and never what a hidden check saw (its
reason could give the test away); the instructor sees everything. Text and HTML are the
learner's views; JSON (`report_dict`, `result_dict`) is the one verdict format every program
reads — `meshlab check -o json`, the grader's verifier and the board's workers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from enum import StrEnum
from html import escape
from typing import Any

from labs.checks.model import Status
from labs.checks.runner import Report, Result

MARKS = {Status.PASS: "✔", Status.WARN: "‼", Status.FAIL: "×", Status.SKIP: "-"}
COLOURS = {Status.PASS: "#1a7f37", Status.WARN: "#9a6700", Status.FAIL: "#cf222e",
           Status.SKIP: "#6e7781"}
INDENT = "    "


class Audience(StrEnum):
    LEARNER = "learner"
    INSTRUCTOR = "instructor"


def shown(result: Result, audience: Audience = Audience.LEARNER) -> tuple[str, str]:
    """(reason, hint) of `result` as `audience` may see them."""
    item = result.check
    if audience is Audience.INSTRUCTOR or not item.hidden:
        return result.outcome.reason, item.hint
    return "", item.hint if item.share_hint else ""


def _explained(result: Result) -> bool:
    """Failures and warnings carry their reason and hint under the line; passes do not."""
    return result.outcome.status in (Status.FAIL, Status.WARN)


def _summary_mark(report: Report) -> str:
    return MARKS[Status.PASS] if report.ok else MARKS[Status.FAIL]


def _to_go(report: Report) -> str:
    """For a learner, a failure mostly means "not done yet": how many checks remain (failed,
    or skipped after a failed one). Nothing when none failed."""
    counts = report.counts()
    left = counts[Status.FAIL] + counts[Status.SKIP]
    return (f"not done yet: {left} check{'s' if left != 1 else ''} to go (each × says what "
            "is missing, its hint what to do)") if counts[Status.FAIL] else ""


# --- text ----------------------------------------------------------------------------------------

class TextLines:
    """Text lines one result at a time, so `meshlab check` can print each as it completes:
    a header whenever the lab changes, the result line, then reason and hint indented."""

    def __init__(self) -> None:
        self._lab: str | None = None

    def result(self, result: Result) -> list[str]:
        lines: list[str] = []
        lab = result.check.lab
        if lab != self._lab:
            lines += [*([""] if self._lab is not None else []), lab, "-" * len(lab)]
            self._lab = lab
        status = result.outcome.status
        reason, hint = shown(result)
        lines.append(f"{MARKS[status]} {result.check.description}")
        if _explained(result) or status is Status.SKIP:
            lines += [INDENT + line for line in reason.splitlines()]
        if _explained(result) and hint:
            lines += [INDENT + ("hint: " if i == 0 else "      ") + line
                      for i, line in enumerate(hint.splitlines())]
        return lines

    @staticmethod
    def summary(report: Report) -> list[str]:
        return ["", f"Status check results are {_summary_mark(report)} "
                f"({report.earned:g}/{report.possible:g} points)",
                *filter(None, [_to_go(report)])]


def render_text(report: Report) -> str:
    lines = TextLines()
    out = [line for result in report.results for line in lines.result(result)]
    return "\n".join(out + lines.summary(report)) + "\n"


# --- HTML ----------------------------------------------------------------------------------------

def _anchor_href(anchor: str) -> str:
    """`Request-routing` → `#Request-routing`; a path with a fragment is kept as written."""
    return anchor if "#" in anchor else f"#{anchor}"


def _html_rows(report: Report) -> Iterator[str]:
    lab = None
    for result in report.results:
        if result.check.lab != lab:
            lab = result.check.lab
            yield (f'<tr><th colspan="2" style="text-align:left;padding-top:0.6em">'
                   f"{escape(lab)}</th></tr>")
        status = result.outcome.status
        reason, hint = shown(result)
        notes = []
        if reason and (_explained(result) or status is Status.SKIP):
            notes.append(f'<div style="white-space:pre-wrap">{escape(reason)}</div>')
        if _explained(result) and hint:
            notes.append(f'<div style="white-space:pre-wrap"><b>Hint:</b> {escape(hint)}</div>')
        if _explained(result) and result.check.anchor:
            notes.append(f'<div><a href="{escape(_anchor_href(result.check.anchor))}">'
                         "back to the lab</a></div>")
        details = (f'<div style="margin-left:1em;color:#57606a">{"".join(notes)}</div>'
                   if notes else "")
        yield (f'<tr data-check="{escape(result.check.id)}" data-status="{status}">'
               f'<td style="color:{COLOURS[status]};font-weight:bold;vertical-align:top" '
               f'title="{status}">{MARKS[status]}</td>'
               f"<td style=\"text-align:left\">{escape(result.check.description)}{details}</td>"
               "</tr>")


def render_html(report: Report) -> str:
    """A self-contained block (inline styles only) for a notebook output cell."""
    mark = _summary_mark(report)
    colour = COLOURS[Status.PASS] if report.ok else COLOURS[Status.FAIL]
    to_go = _to_go(report)
    return (f'<div class="meshlab-check" data-selector="{escape(report.selector)}">\n'
            '<table style="border-collapse:collapse">\n' + "\n".join(_html_rows(report)) +
            "\n</table>\n"
            f'<p style="color:{colour};font-weight:bold">Status check results are {mark} '
            f"({report.earned:g}/{report.possible:g} points)</p>\n"
            + (f"<p>{escape(to_go)}</p>\n" if to_go else "") + "</div>\n")


# --- JSON ----------------------------------------------------------------------------------------

def result_dict(result: Result, audience: Audience = Audience.LEARNER) -> dict[str, Any]:
    """One verdict: id, description, status, reason, hint, points, earned, seconds, attempts."""
    reason, hint = shown(result, audience)
    return {
        "id": result.check.id,
        "description": result.check.description,
        "status": str(result.outcome.status),
        "reason": reason,
        "hint": hint,
        "points": float(result.check.points),
        "earned": float(result.earned),
        "seconds": round(result.seconds, 3),
        "attempts": result.attempts,
    }


def report_dict(report: Report, audience: Audience = Audience.LEARNER) -> dict[str, Any]:
    """The stable JSON schema: selector, ok, earned, possible, results[...] (`result_dict`)."""
    return {
        "selector": report.selector,
        "ok": report.ok,
        "earned": float(report.earned),
        "possible": float(report.possible),
        "results": [result_dict(r, audience) for r in report.results],
    }


def render_json(report: Report) -> str:
    return json.dumps(report_dict(report), indent=2, ensure_ascii=False) + "\n"
