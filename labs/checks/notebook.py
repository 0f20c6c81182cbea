"""The notebook reader: `labs.check("day1.mtls")` runs a lab's public checks and shows the
result inline — HTML in Jupyter, the `linkerd check`-style text in a terminal."""

from __future__ import annotations

from dataclasses import dataclass

from labs.checks.context import CheckContext
from labs.checks.registry import find
from labs.checks.render import render_html, render_text
from labs.checks.runner import Report, run_checks
from labs.cluster import ClusterRef, current_cluster


@dataclass(repr=False)
class ShownReport(Report):
    """A Report that displays itself: Jupyter calls `_repr_html_`, a terminal `repr`."""

    def __repr__(self) -> str:
        return render_text(self)

    def _repr_html_(self) -> str:
        return render_html(self)


def check(selector: str, cluster: ClusterRef | None = None) -> ShownReport:
    """Run the public checks of `selector` (a lab such as "day1.mtls", or one check id) against
    `cluster` (default: `labs.cluster.current_cluster()`)."""
    checks = find(selector)
    report = run_checks(selector, checks, CheckContext(cluster or current_cluster()))
    return ShownReport(report.selector, report.results)
