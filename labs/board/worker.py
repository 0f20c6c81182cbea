"""`python -m labs.board.worker`: run one student's checks in a process of its own, so the board
can stop a hanging check (by killing the process group) and no check can disturb the board.

Writes one JSON line per verdict to stdout, in check order:
  {"id": ..., "status": "pass|fail|warn|skip", "reason": ..., "seconds": ..., "attempts": ...}
or a single {"unreachable": reason} when the cluster's API does not answer, or {"error": reason}
when the checks cannot be loaded. Anything a check prints goes to stderr, so it cannot corrupt
the protocol.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

from labs.board.plan import PlanError, checks_by_id
from labs.board.roster import Student
from labs.checks import CheckContext, Result, run_checks
from labs.cluster import ClusterError, ClusterRef

PROBE_TIMEOUT_S = 5


def _emit(out: IO[str], message: dict[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def _verdict(result: Result) -> dict[str, Any]:
    return {"id": result.check.id, "status": result.outcome.status.value,
            "reason": result.outcome.reason, "seconds": round(result.seconds, 3),
            "attempts": result.attempts}


def _probe(ref: ClusterRef) -> str | None:
    """Why the cluster's API does not answer, or None when it does."""
    try:
        probe = ref.kubectl("get", "--raw", "/readyz", f"--request-timeout={PROBE_TIMEOUT_S}s",
                            timeout=PROBE_TIMEOUT_S + 10)
    except subprocess.TimeoutExpired:
        return f"the API server did not answer within {PROBE_TIMEOUT_S}s"
    if probe.returncode != 0:
        return probe.stderr.strip() or f"kubectl exited {probe.returncode}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labs.board.worker", description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--cluster")
    parser.add_argument("--state-dir")
    parser.add_argument("--context")
    parser.add_argument("--kubeconfig")
    parser.add_argument("--module", action="append", default=[],
                        help="import this module first (where some of the checks are defined)")
    parser.add_argument("--hidden", action="store_true", help="load the grader's hidden checks")
    parser.add_argument("check_ids", nargs="+")
    args = parser.parse_args(argv)
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr  # checks that print must not break the protocol

    try:
        for module in args.module:
            importlib.import_module(module)
        checks = checks_by_id(args.check_ids, hidden=args.hidden)
        student = Student(args.name, args.cluster,
                          Path(args.state_dir) if args.state_dir else None, args.context,
                          Path(args.kubeconfig) if args.kubeconfig else None)
        ref = student.ref()
        unreachable = _probe(ref)
    except (ImportError, PlanError, ClusterError) as exc:
        _emit(out, {"error": str(exc)})
        return 1
    if unreachable:
        _emit(out, {"unreachable": unreachable})
        return 0
    run_checks("board", checks, CheckContext(ref), on_result=lambda r: _emit(out, _verdict(r)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
