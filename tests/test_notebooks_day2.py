"""Do the day-2 notebooks run top to bottom — solutions, hidden tests (`grader.verify`, which
checks the cluster in a fresh process) and "Check my work" — each alone on a fresh embedded
cluster, as nbgrader replays them; and does every gradable step have a hidden test that names a
real check?"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
from notebook_support import COURSE, outputs_text, run_notebook

import grader.hidden  # noqa: F401  (registers the hidden checks, as the verifier does)
from labs.checks import find
from labs.cluster import EmbeddedCluster

DAY2 = COURSE / "day2"
VERIFY = re.compile(r'verify\("(?P<selector>[\w.-]+)"\)')


def test_authorization_runs_alone_on_a_fresh_cluster(notebook_cluster: EmbeddedCluster,
                                                     tmp_path: Path) -> None:
    text = outputs_text(run_notebook(DAY2 / "01-authorization.ipynb", tmp_path))
    assert "RBAC: access denied" in text
    assert "DENIED: no ALLOW policy matched" in text
    assert "Error fetching product details" in text  # productpage allowed, details not yet
    assert "ALLOWED by AuthorizationPolicy bookinfo/details-viewer (ALLOW), rule 0" in text
    assert "productpage-v1   bookinfo-productpage" in text
    assert "DENIED by AuthorizationPolicy bookinfo/deny-api (DENY), rule 0" in text


def test_jwt_runs_alone_on_a_fresh_cluster(notebook_cluster: EmbeddedCluster,
                                           tmp_path: Path) -> None:
    text = outputs_text(run_notebook(DAY2 / "02-jwt.ipynb", tmp_path))
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
    for path, lab in ((DAY2 / "01-authorization.ipynb", "day2.authz"),
                      (DAY2 / "02-jwt.ipynb", "day2.jwt")):
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
