"""Do the three renderers (text like `linkerd check`, notebook HTML, JSON) show exactly what they
should — pass, fail with reason and hint, warning, skip after a fatal failure, escaped HTML, a
hidden check's hint only when shareable — pinned by golden files in tests/fixtures/checks/?

The report comes from running fake check functions through the real runner (no cluster); only
the measured seconds are fixed afterwards. Regenerate the golden files after an intended change
with `MESHLAB_UPDATE_GOLDEN=1 pytest tests/test_checks_render.py` and review the diff.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from labs.checks import (
    Check,
    CheckContext,
    Outcome,
    Report,
    Retry,
    failed,
    passed,
    run_checks,
    skipped,
    warned,
)
from labs.checks.render import Audience, render_html, render_json, render_text, report_dict
from labs.cluster import ClusterRef

GOLDEN = Path(__file__).parent / "fixtures" / "checks"
NOWHERE = CheckContext(ClusterRef(Path("/nonexistent/kubeconfig"), "none"))
SCRIPT = "<script>alert('mesh')</script>"
SECRET_HINT = "the grader compares against reviews-v3 & v2"
SHARED_HINT = "look at the DestinationRule's subsets"


def answering(*outcomes: Outcome) -> Callable[[CheckContext], Outcome]:
    """A check function giving `outcomes` in turn (the last one forever)."""
    calls = iter(outcomes)
    last = [outcomes[-1]]

    def func(_: CheckContext) -> Outcome:
        last[0] = next(calls, last[0])
        return last[0]
    return func


def sample_report() -> Report:
    checks = [
        Check("demo.install.namespace", "namespace demo exists", answering(passed()),
              fatal=True, hint="kubectl create namespace demo"),
        Check("demo.install.sidecars", "every pod in demo has a sidecar",
              answering(failed("without a sidecar: web-1\nnot Ready: web-2")), points=2,
              hint="kubectl -n demo rollout restart deployment", anchor="Install-the-app"),
        Check("demo.install.version", "the mesh is a supported version",
              answering(warned("Istio 1.29 is one minor version behind")),
              hint="istioctl upgrade"),
        Check("demo.install.route", "productpage answers 200 in the mesh",
              answering(failed("not yet"), passed(), passed()),
              retry=Retry(consecutive=2, deadline=30, interval=0)),
        Check("demo.escape.reason", "the page title is <b>escaped</b>",
              answering(failed(f"the page said {SCRIPT}")), hint="quote & escape",
              anchor="day1/02-traffic.ipynb#Request-routing"),
        Check("demo.escape.arm", "this capability exists here",
              answering(skipped("not applicable: no ambient mode on this backend"))),
        Check("demo.mtls.policy", "STRICT is required", answering(failed("mode PERMISSIVE")),
              fatal=True, hint="set mtls.mode: STRICT"),
        Check("demo.mtls.plaintext", "plaintext is refused", answering(passed())),
        Check("demo.graded.secret", "the hidden split holds", answering(failed("v3 ×4")),
              hidden=True, share_hint=False, hint=SECRET_HINT),
        Check("demo.graded.shared", "the hidden subsets exist", answering(failed("none")),
              hidden=True, hint=SHARED_HINT),
    ]
    report = run_checks("demo", checks, NOWHERE)
    report.results[:] = [dataclasses.replace(r, seconds=0.25 * (i + 1))
                         for i, r in enumerate(report.results)]
    return report


@pytest.mark.parametrize(("name", "render"), [
    ("report.txt", render_text), ("report.html", render_html), ("report.json", render_json)])
def test_renderer_matches_golden_file(name: str, render: Callable[[Report], str]) -> None:
    rendered = render(sample_report())
    golden = GOLDEN / name
    if os.environ.get("MESHLAB_UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(rendered, encoding="utf-8")
    assert rendered == golden.read_text(encoding="utf-8")


def test_text_reads_like_linkerd_check() -> None:
    text = render_text(sample_report())
    assert text.startswith("demo.install\n------------\n✔ namespace demo exists\n")
    assert ("× every pod in demo has a sidecar\n    without a sidecar: web-1\n"
            "    not Ready: web-2\n    hint: kubectl -n demo rollout restart deployment\n") in text
    assert "‼ the mesh is a supported version\n    Istio 1.29" in text
    assert "- plaintext is refused\n    skipped: demo.mtls.policy failed\n" in text
    assert text.endswith("\nStatus check results are × (2/11 points)\nnot done yet: 7 checks to "
                         "go (each × says what is missing, its hint what to do)\n")


def test_html_escapes_and_links() -> None:
    html = render_html(sample_report())
    assert SCRIPT not in html and "<b>escaped</b>" not in html
    assert "&lt;script&gt;alert(&#x27;mesh&#x27;)&lt;/script&gt;" in html
    assert '<a href="#Install-the-app">' in html
    assert '<a href="day1/02-traffic.ipynb#Request-routing">' in html
    assert "quote &amp; escape" in html


def test_hidden_hint_only_when_shareable() -> None:
    report = sample_report()
    for rendered in (render_text(report), render_html(report), render_json(report)):
        assert "reviews-v3" not in rendered and "v3 &amp; v2" not in rendered
        assert SHARED_HINT in rendered.replace("&#x27;", "'")


def test_one_rule_per_audience() -> None:
    """Does a learner never see what a hidden check saw, nor its unshared hint, while the
    instructor's verdicts (the board's) keep both?"""
    report = sample_report()
    learner = {r["id"]: r for r in report_dict(report)["results"]}
    instructor = {r["id"]: r for r in report_dict(report, Audience.INSTRUCTOR)["results"]}
    assert (learner["demo.graded.secret"]["reason"], learner["demo.graded.secret"]["hint"]) == (
        "", "")
    assert (instructor["demo.graded.secret"]["reason"],
            instructor["demo.graded.secret"]["hint"]) == ("v3 ×4", SECRET_HINT)
    public = "demo.install.sidecars"
    assert learner[public] == instructor[public]


def test_json_schema() -> None:
    data = json.loads(render_json(sample_report()))
    assert set(data) == {"selector", "ok", "earned", "possible", "results"}
    assert (data["selector"], data["ok"], data["earned"], data["possible"]) == (
        "demo", False, 2.0, 11.0)
    fields = {"id", "description", "status", "reason", "hint", "points", "earned", "seconds",
              "attempts"}
    assert all(set(r) == fields for r in data["results"])
    route = next(r for r in data["results"] if r["id"] == "demo.install.route")
    assert (route["status"], route["attempts"], route["earned"]) == ("pass", 3, 1.0)
    assert [r["status"] for r in data["results"]].count("skip") == 2
