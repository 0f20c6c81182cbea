"""Three views of one Report: text like `linkerd check`, HTML for notebooks, JSON for programs.

The renderers only read a Report; they never run anything, so golden files pin them exactly.
A hidden check's hint is shown only when the instructor marked it shareable (`share_hint`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from html import escape

from labs.checks.model import Check, Status
from labs.checks.runner import Report, Result

MARKS = {Status.PASS: "✔", Status.WARN: "‼", Status.FAIL: "×", Status.SKIP: "-"}
COLOURS = {Status.PASS: "#1a7f37", Status.WARN: "#9a6700", Status.FAIL: "#cf222e",
           Status.SKIP: "#6e7781"}
INDENT = "    "


def shown_hint(item: Check) -> str:
    """The hint a learner may see: a hidden check's only when `share_hint` is set."""
    return item.hint if (not item.hidden or item.share_hint) else ""


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
        lines.append(f"{MARKS[status]} {result.check.description}")
        if _explained(result) or status is Status.SKIP:
            lines += [INDENT + line for line in result.outcome.reason.splitlines()]
        hint = shown_hint(result.check)
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
        notes = []
        if result.outcome.reason and (_explained(result) or status is Status.SKIP):
            notes.append(f'<div style="white-space:pre-wrap">{escape(result.outcome.reason)}'
                         "</div>")
        hint = shown_hint(result.check)
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

def report_dict(report: Report) -> dict[str, object]:
    """The stable JSON schema: selector, ok, earned, possible, results[...]."""
    return {
        "selector": report.selector,
        "ok": report.ok,
        "earned": float(report.earned),
        "possible": float(report.possible),
        "results": [{
            "id": r.check.id,
            "description": r.check.description,
            "status": str(r.outcome.status),
            "reason": r.outcome.reason,
            "hint": shown_hint(r.check),
            "points": float(r.check.points),
            "earned": float(r.earned),
            "seconds": round(r.seconds, 3),
            "attempts": r.attempts,
        } for r in report.results],
    }


def render_json(report: Report) -> str:
    return json.dumps(report_dict(report), indent=2, ensure_ascii=False) + "\n"
