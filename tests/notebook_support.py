"""Running course notebooks in tests with nbval.

`run_notebooks` runs `pytest --nbval-lax` in a subprocess on copies of the notebooks, in the
order given, one kernel per notebook. The cluster is the one the environment selects: the
`notebook_cluster` fixture (conftest.py) sets MESHLAB_CLUSTER and MESHLAB_STATE_DIR to a fresh
cluster of the test's own and stops it afterwards; kernels inherit that environment.

nbval says whether each cell ran, but keeps no outputs, so this module is also the pytest plugin
of that subprocess (`-p notebook_support`): it records each cell's outcome and outputs, and with
`--check-labs` the checks of a notebook's lab right after the notebook ran, as JSON lines.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import nbformat
import pytest

COURSE = Path(__file__).resolve().parents[1]
CELL_TIMEOUT_S = 300
# nbval's whole run: a budget per notebook (the target is 60 s each on a fresh cluster; CI's
# machine is shared); tests running more than two notebooks raise pytest's timeout to match
NOTEBOOK_BUDGET_S = 120
RECORD_OPTION = "--cell-record"
CHECK_OPTION = "--check-labs"
Output = dict[str, Any]


@dataclass(frozen=True)
class CellRun:
    """One executed code cell: nbval's verdict and what the kernel sent back."""

    notebook: str  # relative to the run's directory, e.g. day1/01-install.ipynb
    number: int  # nbval's code-cell number ("Cell 5")
    grade_id: str  # nbgrader's, "" for an ungraded cell
    source: str
    passed: bool
    outputs: list[Output]
    seconds: float

    @property
    def error(self) -> Output | None:
        return next((o for o in self.outputs if o.get("output_type") == "error"), None)

    @property
    def text(self) -> str:
        """Printed text, plain-text displays and the error, as a learner would read them."""
        parts = []
        for output in self.outputs:
            parts.append(output.get("text", ""))
            parts.append(str(output.get("data", {}).get("text/plain", "")))
            if output.get("output_type") == "error":
                parts += [output["ename"], output["evalue"], *output["traceback"]]
        return "\n".join(parts)

    def __str__(self) -> str:
        return f"{self.notebook} cell {self.number} ({self.grade_id or 'ungraded'}):\n" \
               f"{self.source}\n--- output:\n{self.text}"


@dataclass
class NotebookRun:
    """What one nbval run recorded: every cell in order, and the lab checks (with
    `check_labs`) as {lab id: [{"id", "status", "reason"}]}."""

    cells: list[CellRun] = field(default_factory=list)
    checks: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    log: str = ""

    def failed(self) -> list[CellRun]:
        return [cell for cell in self.cells if not cell.passed]

    def text(self, notebook: str | None = None) -> str:
        """The outputs of every cell (of one notebook) as text."""
        return "\n".join(c.text for c in self.cells if notebook in (None, c.notebook))

    def describe_failures(self) -> str:
        return "\n\n".join(map(str, self.failed())) or "(no failed cell)"

    def wall_times(self) -> dict[str, float]:
        """Seconds each notebook's cells took, in run order."""
        times: dict[str, float] = {}
        for cell in self.cells:
            times[cell.notebook] = times.get(cell.notebook, 0.0) + cell.seconds
        return times


# notebook -> seconds its cells took, in the running test: conftest.py moves them into the
# test's report, so the suite's summary lists them (with pytest-xdist too, from every worker)
WALL_TIMES: dict[str, float] = {}


def run_notebooks(notebooks: Sequence[tuple[str, nbformat.NotebookNode]], workdir: Path, *,
                  check_labs: bool = False, settle_deadline: float | None = None
                  ) -> NotebookRun:
    """Write `notebooks` ((relative path, notebook)) under `workdir` and run them top to bottom
    with nbval, in order, against the cluster the environment selects. A failing cell does not
    stop its notebook (nbval runs every cell). `settle_deadline` shortens how long a probe's
    `until=` waits in the kernels (`labs.traffic.SETTLE_DEADLINE_S`), for runs where a step left
    undone can never settle."""
    for relative, notebook in notebooks:
        path = workdir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(nbformat.writes(notebook))
    (workdir / "pytest.ini").write_text("[pytest]\n")  # this run's rootdir, no repo settings
    record = workdir / "cells.jsonl"
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                       os.environ.get("PYTHONPATH")]))}
    if settle_deadline is not None:
        startup = workdir / "ipython" / "profile_default" / "startup"
        startup.mkdir(parents=True)
        (startup / "settle.py").write_text(
            f"import labs.traffic\nlabs.traffic.SETTLE_DEADLINE_S = {settle_deadline!r}\n")
        env["IPYTHONDIR"] = str(workdir / "ipython")
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "notebook_support",
               "--nbval-lax", "--nbval-current-env", f"--nbval-cell-timeout={CELL_TIMEOUT_S}",
               f"{RECORD_OPTION}={record}", *([CHECK_OPTION] if check_labs else []), "-q",
               *(relative for relative, _ in notebooks)]
    # A session of its own, so that a run past its time is stopped with its kernels.
    nbval = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = nbval.communicate(timeout=run_timeout(len(notebooks)))
    except subprocess.TimeoutExpired:
        os.killpg(nbval.pid, signal.SIGKILL)
        out, _ = nbval.communicate()
        pytest.fail(f"nbval ran longer than {run_timeout(len(notebooks))} s:\n"
                    f"{out[-20000:]}")
    log = out[-20000:]
    if nbval.returncode not in (0, 1):  # 1: some cell failed; anything else: nbval did not run
        pytest.fail(f"nbval exited {nbval.returncode}:\n{log}")
    run = NotebookRun(log=log)
    for line in record.read_text().splitlines() if record.exists() else []:
        entry = json.loads(line)
        if entry.pop("kind") == "checks":
            run.checks[entry["lab"]] = entry["results"]
        else:
            run.cells.append(CellRun(**entry))
    if len(run.cells) != sum(1 for _, nb in notebooks for c in nb.cells
                             if c.cell_type == "code"):
        pytest.fail(f"nbval did not run every code cell:\n{log}")
    WALL_TIMES.update(run.wall_times())
    return run


def run_timeout(notebooks: int) -> int:
    """Seconds an nbval run of `notebooks` notebooks may take."""
    return NOTEBOOK_BUDGET_S * notebooks


def course_notebooks(*relative: str) -> list[tuple[str, nbformat.NotebookNode]]:
    """The instructor notebooks (solutions and hidden tests), as `run_notebooks` takes them."""
    return [(path, nbformat.read(COURSE / path, as_version=4)) for path in relative]


# --- the plugin, inside the nbval subprocess --------------------------------------------------

def pytest_configure(config: pytest.Config) -> None:
    """nbval folds carriage returns in printed text as a terminal would, but also erases a
    line ending in "\r\r\n" — what `!curl -si ...` prints through IPython's pty (HTTP's CRLF,
    then the pty's) — which JupyterLab shows. Line ends are made plain before that fold."""
    import nbval.plugin

    fold = nbval.plugin.coalesce_streams

    def coalesce_streams(outputs: list[Output]) -> list[Output]:
        for output in outputs or []:
            if output.get("output_type") == "stream":
                output["text"] = re.sub(r"\r+\n", "\n", output["text"])
        return fold(outputs)

    nbval.plugin.coalesce_streams = coalesce_streams


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(RECORD_OPTION, help="append one JSON line per notebook cell run (outcome, "
                                         "outputs) to this file")
    parser.addoption(CHECK_OPTION, action="store_true",
                     help="after each notebook, run its lab's public checks (course.yaml maps "
                          "notebooks to labs) and record the results")


def _append(config: pytest.Config, entry: dict[str, Any]) -> None:
    with open(config.getoption(RECORD_OPTION), "a") as record:
        record.write(json.dumps(entry) + "\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    cell = getattr(item, "cell", None)
    if report.when != "call" or cell is None:
        return
    _append(item.config, {
        "kind": "cell", "notebook": item.path.relative_to(item.config.rootpath).as_posix(),
        "number": item.cell_num, "source": cell.source,
        "grade_id": cell.metadata.get("nbgrader", {}).get("grade_id", ""),
        "passed": report.passed, "outputs": item.test_outputs or [],
        "seconds": report.duration})


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After a notebook's last cell: its lab's checks, each run once (a lab not done fails on
    the first try; retrying would only wait out every behavioural check's deadline)."""
    if not item.config.getoption(CHECK_OPTION) or (
            nextitem is not None and nextitem.parent is item.parent):
        return
    from labs.catalog import load_catalog
    from labs.checks import CheckContext, find, run_checks
    from labs.cluster import current_cluster

    notebook = item.path.relative_to(item.config.rootpath).as_posix()
    lab = next(lab.id for lab in load_catalog(COURSE).labs if lab.notebook == notebook)
    checks = [replace(check, retry=None) for check in find(lab)]
    report = run_checks(lab, checks, CheckContext(current_cluster(start=False)))
    _append(item.config, {"kind": "checks", "lab": lab, "results": [
        {"id": r.check.id, "status": str(r.outcome.status), "reason": r.outcome.reason}
        for r in report.results]})
