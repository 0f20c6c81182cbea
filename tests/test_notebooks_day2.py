"""Do the day-2 notebooks run top to bottom with nbval — solutions, hidden tests
(`grader.verify`, which checks the cluster in a fresh process) and "Check my work" — in course
order on a fresh embedded cluster (the first catches up alone, as nbgrader replays it; the second
works in a namespace of its own); and does every gradable step have a hidden test that names a
real check?"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
from notebook_support import COURSE, course_notebooks, run_notebooks

from labs.catalog import load_catalog
from labs.checks import find
from labs.checks.registry import load_checks
from labs.cluster import EmbeddedCluster

AUTHZ, JWT = "day2/01-authorization.ipynb", "day2/02-jwt.ipynb"
VERIFY = re.compile(r'verify\("(?P<selector>[\w.-]+)"\)')


def test_day2_runs_in_course_order_on_a_fresh_cluster(notebook_cluster: EmbeddedCluster,
                                                      tmp_path: Path) -> None:
    run = run_notebooks(course_notebooks(AUTHZ, JWT), tmp_path)
    assert not run.failed(), run.describe_failures()
    assert "did not settle" not in run.text(), "a probe's until= never held with the solutions"

    text = run.text(AUTHZ)
    assert "RBAC: access denied" in text
    assert "DENIED: no ALLOW policy matched" in text
    assert "Error fetching product details" in text  # productpage allowed, details not yet
    assert "ALLOWED by AuthorizationPolicy bookinfo/details-viewer (ALLOW), rule 0" in text
    assert "productpage-v1   bookinfo-productpage" in text
    assert "DENIED by AuthorizationPolicy bookinfo/deny-api (DENY), rule 0" in text

    text = run.text(JWT)
    statuses = re.findall(r"^(no token|invalid token|token signed by someone else|valid token"
                          r"(?:, no groups|, groups group1, group2)?) +(\d{3})$", text, re.M)
    assert statuses == [("no token", "200"),  # before any policy
                        ("no token", "200"), ("invalid token", "401"),
                        ("token signed by someone else", "401"), ("valid token", "200"),
                        ("no token", "403"), ("invalid token", "401"), ("valid token", "200"),
                        ("valid token, no groups", "403"),
                        ("valid token, groups group1, group2", "200")]
    assert "DENIED by RequestAuthentication (jwt_authn): 401" in text
    assert "ALLOWED by AuthorizationPolicy foo/require-jwt (ALLOW), rule 0" in text
    assert "PRIVATE KEY" not in text


def test_every_gradable_step_has_a_hidden_test_of_a_real_check() -> None:
    """Each hidden test cell verifies an existing check of its lab, and each check that earns
    points is graded by exactly one cell."""
    load_checks(hidden=True)  # as the verifier does
    labs_of_day2 = [(COURSE / lab.notebook, lab.id) for lab in load_catalog().labs
                    if lab.day == "day2"]
    assert len(labs_of_day2) >= 2
    for path, lab in labs_of_day2:
        graded = []
        for cell in nbformat.read(path, as_version=4).cells:
            meta = cell.metadata.get("nbgrader", {})
            if meta.get("grade") and cell.cell_type == "code":
                assert "### BEGIN HIDDEN TESTS" in cell.source, (path, meta["grade_id"])
                found = VERIFY.search(cell.source)
                assert found, (path, meta["grade_id"])
                graded.append(found["selector"])
        worth_points = [c.id for c in find(lab, include_hidden=True) if c.points]
        assert sorted(graded) == sorted(worth_points), path
