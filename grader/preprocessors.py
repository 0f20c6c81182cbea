"""nbgrader preprocessors that make a verdict depend on the student's cluster only.

Order in `Autograde.autograde_preprocessors` (see grader/config.py):
ExportStudentEnv → GuardedExecute → VerifyHiddenTests → CapOutput → nbgrader's own
(LimitOutput, SaveAutoGrades, ...). Student code runs in the kernel during GuardedExecute and can
patch anything in it; VerifyHiddenTests then throws away whatever the hidden test cells printed
and writes the verdict of a fresh process it started itself, with an environment built from
the driver's targets file, so nbgrader's own scoring of those cells is right.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import Execute, NbGraderPreprocessor
from nbgrader.utils import is_grade, is_locked
from traitlets import Float, Integer, Unicode

from grader.sandbox.cluster import verifier_target
from grader.sandbox.kernel import SandboxedKernelManager
from grader.sandbox.student import StudentSandbox
from grader.targets import TARGETS_ENV, cluster_env, target_for
from grader.verify import Verdict, run_verification
from labs.cluster import CLUSTER_VARIABLES

# The call in a hidden test cell (alone on its line, or after the import and a semicolon);
# the lab id is the only thing taken from it.
VERIFY_CALL = re.compile(r"""^\s*(?:from grader\.verify import verify\s*;\s*)?"""
                         r"""verify\(\s*["']([a-z0-9][a-z0-9_.-]*)["']\s*\)\s*$""", re.M)
# Variables only the grading process needs; a submission has no business reading them (a
# sandboxed kernel gets an allowlist anyway: grader/sandbox/environment.py).
GRADER_VARIABLES = (TARGETS_ENV, "MESHLAB_COURSE_DIR")
SANDBOX_HELP = ("the student's sandbox (JSON, written by `meshlab grade`); empty: the kernel "
                "runs unsandboxed, as the grader's user")
# Where ExportStudentEnv leaves the verifier's environment for VerifyHiddenTests.
VERIFY_ENV_KEY = "meshlab_verify_env"


def hidden_test_lab(cell: NotebookNode) -> str | None:
    """The lab a locked grade cell verifies, or None when the cell is not a hidden test."""
    if cell.cell_type != "code" or not is_grade(cell) or not is_locked(cell):
        return None
    match = VERIFY_CALL.search(cell.source)
    return match.group(1) if match else None


class ExportStudentEnv(NbGraderPreprocessor):
    """Before Execute: the kernel inherits os.environ, and nbgrader tells it neither who is
    graded nor which cluster to use — so put the student id and cluster there. The target is
    read here, before any student code runs, and handed to VerifyHiddenTests in `resources`
    (this process's memory), so rewriting the targets file from the kernel changes nothing."""

    targets_file = Unicode("", help="JSON file mapping student ids to clusters, written by "
                           "`meshlab grade`; empty: use the cluster the environment selects"
                           ).tag(config=True)

    def preprocess(self, nb: NotebookNode, resources: dict[str, Any]
                   ) -> tuple[NotebookNode, dict[str, Any]]:
        student = resources["nbgrader"]["student"]
        target = target_for(student, self.targets_file)
        base = dict(os.environ)
        env = cluster_env(base, target, student) if target else {**base,
                                                                 "MESHLAB_STUDENT": student}
        resources[VERIFY_ENV_KEY] = env
        for key in (*GRADER_VARIABLES, *CLUSTER_VARIABLES):
            os.environ.pop(key, None)
        os.environ.update({k: v for k, v in env.items() if k not in GRADER_VARIABLES})
        return nb, resources


class GuardedExecute(Execute):
    """nbgrader's Execute, except that a kernel that dies (`os._exit`, a crash) or cannot be
    interrupted after a cell timeout (a loop swallowing KeyboardInterrupt) ends the execution
    instead of failing the whole notebook's grading: the cells that ran keep their outputs, the
    rest stay unexecuted (the kernel is shut down), and the hidden tests are still verified
    against the cluster. With a sandbox, the kernel starts in it."""

    sandbox_file = Unicode("", help=SANDBOX_HELP).tag(config=True)

    def create_kernel_manager(self) -> KernelManager:
        if not self.sandbox_file:
            return super().create_kernel_manager()
        workdir = Path(self.resources.get("metadata", {}).get("path") or ".").resolve()
        self.km = SandboxedKernelManager(StudentSandbox.load(self.sandbox_file), workdir,
                                         config=self.config)
        return self.km

    def preprocess(self, nb: NotebookNode, resources: dict[str, Any]
                   ) -> tuple[NotebookNode, dict[str, Any]]:
        try:
            return super().preprocess(nb, resources)
        except (DeadKernelError, CellTimeoutError) as exc:
            self.log.warning("execution of the submission stopped early: %s",
                             str(exc).splitlines()[0])
            return nb, resources


class VerifyHiddenTests(NbGraderPreprocessor):
    """After Execute: replace each hidden test cell's outputs with a verdict computed outside
    the kernel — nothing when it passed, one error output listing the failed checks. With a
    sandboxed replay cluster, the checks reach it with the credentials the grader copied when
    it started (restarting it, in the sandbox, if the submission stopped it), never through
    files the sandbox could write."""

    timeout = Float(300.0, help="seconds one lab's checks may take").tag(config=True)
    sandbox_file = Unicode("", help=SANDBOX_HELP).tag(config=True)

    def preprocess(self, nb: NotebookNode, resources: dict[str, Any]
                   ) -> tuple[NotebookNode, dict[str, Any]]:
        env = resources.get(VERIFY_ENV_KEY)
        if env is None:
            raise RuntimeError("VerifyHiddenTests needs ExportStudentEnv before Execute")
        sandbox = StudentSandbox.load(self.sandbox_file) if self.sandbox_file else None
        if sandbox and sandbox.cluster:
            env = cluster_env(env, verifier_target(sandbox), env["MESHLAB_STUDENT"])
        for cell in nb.cells:
            lab = hidden_test_lab(cell)
            if lab is None:
                continue
            verdict = run_verification(lab, env, self.timeout)
            self.log.info("%s: %s for %s (%g/%g)", cell.metadata.nbgrader["grade_id"],
                          "passed" if verdict.passed else "failed", lab, verdict.earned,
                          verdict.possible)
            cell.outputs = [] if verdict.passed else [verdict_output(verdict)]
        return nb, resources


def verdict_output(verdict: Verdict) -> NotebookNode:
    """An error output whose traceback is the message alone: no source line to leak."""
    message = verdict.message()
    return NotebookNode(output_type="error", ename="AssertionError", evalue=message,
                        traceback=[f"AssertionError: {message}"])


class CapOutput(NbGraderPreprocessor):
    """Cap every output's text, so one flooding cell (a single huge line slips past nbgrader's
    line-based LimitOutput) cannot bloat the graded notebook and the feedback page."""

    max_chars = Integer(20_000, help="characters kept per output").tag(config=True)

    def preprocess_cell(self, cell: NotebookNode, resources: dict[str, Any], index: int
                        ) -> tuple[NotebookNode, dict[str, Any]]:
        if cell.cell_type != "code":
            return cell, resources
        for output in cell.outputs:
            if output.output_type == "stream" and len(output.text) > self.max_chars:
                output.text = output.text[:self.max_chars] + "\n... output truncated ...\n"
            for mime, value in output.get("data", {}).items():
                if isinstance(value, str) and len(value) > self.max_chars:
                    output.data[mime] = value[:self.max_chars] + "\n... output truncated ..."
        return cell, resources
