"""Hidden test cells: `from grader.verify import verify` and one call, `verify("day1.install")`.

`verify` runs the lab's checks (public + hidden) in a fresh `python -I -m grader.verify`
process, so nothing defined or patched in the notebook's kernel takes part in the verdict; that
process prints the learner's view of the report (`labs.checks.render.report_dict`). It prints
nothing when every check passes (nbgrader scores a test cell with stderr output 0) and raises an
AssertionError listing only the failed checks' descriptions, public reasons and shareable hints
— never a check's source. During autograding the authoritative verdict is recomputed outside
the kernel by `grader.preprocessors.VerifyHiddenTests`, with the same `run_verification`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

# Extra check modules for the verifying process (module names or .py files, os.pathsep
# separated), e.g. a course's own labs kept outside this package.
EXTRA_CHECKS_ENV = "MESHLAB_GRADER_CHECKS"
VERIFY_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Finding:
    """One failed check as a student may see it."""

    description: str
    hint: str = ""
    reason: str = ""


@dataclass(frozen=True)
class Verdict:
    lab: str
    earned: float = 0.0
    possible: float = 0.0
    failures: list[Finding] = field(default_factory=list)
    error: str = ""

    @property
    def passed(self) -> bool:
        return not self.failures and not self.error

    def message(self) -> str:
        """What the failed hidden test says: descriptions, reasons of public checks, and hints
        the instructor marked shareable."""
        if self.error:
            return f"the checks for {self.lab} could not run: {self.error}"
        lines = [f"{len(self.failures)} check(s) of {self.lab} failed:"]
        for finding in self.failures:
            lines.append(f"  × {finding.description}")
            if finding.reason:
                lines.append(f"    {finding.reason}")
            if finding.hint:
                lines.append(f"    hint: {finding.hint}")
        return "\n".join(lines)


def run_verification(lab: str, env: dict[str, str], timeout: float = VERIFY_TIMEOUT_S,
                     cwd: str | Path | None = None) -> Verdict:
    """Run the checks of `lab` in a fresh, isolated interpreter (`-I`: no cwd, no PYTHONPATH,
    so a module a submission wrote next to the notebook cannot shadow `labs` or `grader`)."""
    try:
        done = subprocess.run([sys.executable, "-I", "-m", "grader.verify", lab],
                              env=env, cwd=cwd or Path(__file__).resolve().parent,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Verdict(lab, error=f"they did not finish within {timeout:g}s")
    try:
        data = json.loads(done.stdout)
    except ValueError:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return Verdict(lab, error=f"the verifier exited {done.returncode}: {tail}")
    if "error" in data:
        return Verdict(lab, error=str(data["error"]))
    failures = [Finding(r["description"], r.get("hint", ""), r.get("reason", ""))
                for r in data["results"] if r["status"] == "fail"]
    return Verdict(lab, data["earned"], data["possible"], failures)


def verify(lab: str) -> None:
    """The body of a hidden test cell: silent on success, AssertionError on failure. While
    nbgrader autogrades, the verdict is VerifyHiddenTests's (computed outside this kernel after
    it ran), so checking here too would only double the time."""
    if os.environ.get("NBGRADER_EXECUTION") == "autograde":
        return
    verdict = run_verification(lab, dict(os.environ))
    if not verdict.passed:
        raise AssertionError(verdict.message())


def _results(lab: str) -> dict[str, object]:
    from labs.checks import CheckContext, find, run_checks
    from labs.checks.registry import load_checks
    from labs.checks.render import report_dict
    from labs.cluster import current_cluster

    load_checks(hidden=True, extra=filter(None, os.environ.get(EXTRA_CHECKS_ENV, "").split(
        os.pathsep)))
    checks = find(lab, include_hidden=True)
    return report_dict(run_checks(lab, checks, CheckContext(current_cluster(start=True))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader.verify", description=__doc__)
    parser.add_argument("lab", help="lab id or check id, e.g. day1.install")
    args = parser.parse_args(argv)
    try:
        data = _results(args.lab)
    except Exception as exc:  # the verdict must say why, never show a traceback
        print(json.dumps({"selector": args.lab, "error": f"{type(exc).__name__}: {exc}"}))
        return 2
    print(json.dumps(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
