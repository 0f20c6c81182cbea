"""What does a learner see who runs the *student* notebooks of a day top to bottom on a fresh
cluster without answering anything? Each "your turn" cell fails with NotImplementedError; a
later cell fails only when it cannot work without an answer, and then with one message saying
what is missing and what to do — never a traceback through the helpers in labs/. "Check my
work", run right after each notebook, fails as ordinary results (× with a reason), never
"the check could not run".

All notebooks of a day run in one nbval subprocess on one cluster, in course order (so a later
lab's `labs.deploy_bookinfo()` catches up from nothing). A probe waiting for a change that was
never applied waits 3 s here instead of 30, and each check runs once, without retries.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from notebook_support import CellRun, run_notebooks, run_timeout

import labs
from labs.catalog import load_catalog
from labs.cluster import EmbeddedCluster
from labs.workspace.student import EXERCISE_PREFIX, student_version

# A traceback frame in the helpers' code: a .py file under labs/ (a message may name a course
# manifest under labs/manifests, which is no frame).
LABS_FRAME = re.compile(rf"{re.escape(str(Path(labs.__file__).parent))}/\S*\.py")
LEARNER_FACING = {"ProbeError", "AuthzError", "SetupError", "KubectlRejected",
                  "ClusterUnavailable", "UnknownCheck", "CatalogError"}


def _frames_in_labs(cell: CellRun) -> list[str]:
    return [line for line in (cell.error or {}).get("traceback", []) if LABS_FRAME.search(line)]


@pytest.mark.timeout(run_timeout(len(load_catalog().labs)) + 60)
@pytest.mark.parametrize("day", ["day1", "day2"])
def test_student_notebooks_fail_only_where_the_learner_has_work_to_do(
        day: str, notebook_cluster: EmbeddedCluster, tmp_path: Path) -> None:
    catalog = load_catalog()
    lab_list = [lab for lab in catalog.labs if lab.day == day]
    run = run_notebooks([(lab.notebook, student_version(catalog.source / lab.notebook, lab.id))
                         for lab in lab_list],
                        tmp_path, check_labs=True, settle_deadline=3)

    your_turn = [c for c in run.cells if c.grade_id.startswith(EXERCISE_PREFIX)]
    assert your_turn and all(not c.passed and c.error and c.error["ename"] ==
                             "NotImplementedError" for c in your_turn), run.describe_failures()
    raw, explained = [], []
    for cell in run.failed():
        assert not _frames_in_labs(cell), cell
        if cell.grade_id.startswith(EXERCISE_PREFIX):
            continue
        error = cell.error or {}
        if error.get("ename") in LEARNER_FACING:
            explained.append(cell)  # one line, the message alone: no traceback at all
            assert error["traceback"] == [f"{error['ename']}: {error['evalue']}"], cell
        else:
            raw.append((cell.notebook, cell.number, error.get("ename")))
    assert not raw, run.describe_failures()  # a bare Python error in the notebook's own code
    assert "could not run" not in run.text(), run.describe_failures()
    if day == "day1":  # mTLS needs the legacy client, which is the learner's to deploy
        assert {c.notebook for c in explained} == {"day1/03-mtls.ipynb"}, explained

    assert list(run.checks) == [lab.id for lab in lab_list], run.log
    for lab, results in run.checks.items():
        failures = [r for r in results if r["status"] == "fail"]
        assert failures, (lab, results)
        for result in failures:
            assert result["reason"] and "could not run" not in result["reason"], (lab, result)
