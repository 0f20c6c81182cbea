"""Where a learner stands: per lab, the public checks passed out of all, the points, and the
solutions revealed — the same checks `meshlab check` runs, against the learner's cluster.

Progress is a snapshot: each check runs once, without the retries "Check my work" uses to wait
for the mesh to settle, so a table of six labs comes back in seconds. A check that needs a
moment after a change may show × here and ✔ under Check my work a few seconds later.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from html import escape
from pathlib import Path

from labs.catalog import Catalog, Lab
from labs.checks.context import CheckContext
from labs.checks.model import Status
from labs.checks.registry import UnknownCheck, find
from labs.checks.runner import run_checks
from labs.cluster import ClusterRef
from labs.workspace.solutions import revealed


@dataclass(frozen=True)
class LabProgress:
    lab: Lab
    passed: int
    total: int
    earned: float
    possible: float
    revealed: tuple[str, ...]

    @property
    def done(self) -> bool:
        return self.total > 0 and self.passed == self.total

    def as_dict(self) -> dict[str, object]:
        return {"lab": self.lab.id, "title": self.lab.title, "notebook": self.lab.notebook,
                "passed": self.passed, "total": self.total, "points": self.earned,
                "possible": self.possible, "done": self.done,
                "solutionsRevealed": list(self.revealed)}


def lab_progress(lab: Lab, context: CheckContext, seen: dict[str, str]) -> LabProgress:
    """One lab's row; a lab the catalog lists but no check covers yet shows 0/0."""
    try:
        checks = [dataclasses.replace(item, retry=None) for item in find(lab.id)]
    except UnknownCheck:
        checks = []
    report = run_checks(lab.id, checks, context)
    passed = report.counts()[Status.PASS]
    shown = tuple(sorted(e for e in seen if e.rpartition(".")[0] == lab.id))
    return LabProgress(lab, passed, len(checks), report.earned, report.possible, shown)


def progress(catalog: Catalog, cluster: ClusterRef, workspace: Path) -> list[LabProgress]:
    """Every lab of the catalog, checked once against `cluster`."""
    context, seen = CheckContext(cluster), revealed(workspace)
    return [lab_progress(lab, context, seen) for lab in catalog.labs]


def _mark(row: LabProgress) -> str:
    return "✔" if row.done else ("…" if row.passed else "·")


def render_text(rows: list[LabProgress]) -> str:
    width = max(len(row.lab.title) for row in rows) + 6 if rows else 20
    lines = [f"  {'lab':<{width}} {'checks':>7} {'points':>9}  solutions shown"]
    for row in rows:
        title = f"{row.lab.number} {row.lab.title}"
        lines.append(f"{_mark(row)} {title:<{width}} {row.passed:>3}/{row.total:<3} "
                     f"{row.earned:>4g}/{row.possible:<4g}  {len(row.revealed) or ''}")
    earned, possible = sum(r.earned for r in rows), sum(r.possible for r in rows)
    lines.append(f"  {'total':<{width}} {'':>7} {earned:>4g}/{possible:<4g}")
    return "\n".join(lines)


def render_html(rows: list[LabProgress], link_prefix: str = "") -> str:
    """A table whose lab names open the lab in JupyterLab (relative links from the home)."""
    head = ("<table><tr><th></th><th style='text-align:left'>lab</th><th>checks</th>"
            "<th>points</th><th>solutions shown</th></tr>")
    body = "".join(
        f"<tr><td>{_mark(row)}</td><td style='text-align:left'><a href='"
        f"{escape(link_prefix + row.lab.notebook)}'>{escape(row.lab.number)} "
        f"{escape(row.lab.title)}</a></td><td>{row.passed}/{row.total}</td>"
        f"<td>{row.earned:g}/{row.possible:g}</td>"
        f"<td>{escape(', '.join(e.rpartition('.')[2] for e in row.revealed))}</td></tr>"
        for row in rows)
    earned, possible = sum(r.earned for r in rows), sum(r.possible for r in rows)
    return (f"{head}{body}<tr><td></td><th style='text-align:left'>total</th><td></td>"
            f"<th>{earned:g}/{possible:g}</th><td></td></tr></table>")
