"""`python -m labs.board.worker`: run one student's checks in a process of its own, so the board
can stop a hanging check (by killing the process group) and no check can disturb the board.

Writes one JSON line per verdict to stdout, in check order, in the instructor's view of
`labs.checks.render.result_dict` ({"id": ..., "status": "pass|fail|warn|skip", "reason": ...,
"hint": ..., "seconds": ..., "attempts": ..., ...}), or a single {"unreachable": reason} when
the cluster's API does not answer, or {"error": reason} when the checks cannot be loaded.
Anything a check prints goes to stderr, so it cannot corrupt the protocol.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import IO, Any

from labs.board.plan import PlanError, checks_by_id, load
from labs.checks import CheckContext, run_checks
from labs.checks.render import Audience, result_dict
from labs.cluster import ClusterAddress, ClusterError, ClusterRef

PROBE_TIMEOUT_S = 5


def _emit(out: IO[str], message: dict[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


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
    parser.add_argument("--name", required=True,
                        help="the student, so `ps` tells whose checks a worker runs")
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
        load(hidden=args.hidden, extra=args.module)
        checks = checks_by_id(args.check_ids)
        ref = ClusterAddress(args.cluster, args.state_dir, args.context, args.kubeconfig).ref()
        unreachable = _probe(ref)
    except (ImportError, PlanError, ClusterError) as exc:
        _emit(out, {"error": str(exc)})
        return 1
    if unreachable:
        _emit(out, {"unreachable": unreachable})
        return 0
    run_checks("board", checks, CheckContext(ref),
               on_result=lambda r: _emit(out, result_dict(r, Audience.INSTRUCTOR)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
