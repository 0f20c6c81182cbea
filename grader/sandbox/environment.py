"""The environment a sandboxed program starts with: an allowlist, not the grader's environment
(which may hold an instructor's tokens or the grader's own settings), plus its own HOME."""

from __future__ import annotations

from collections.abc import Mapping

# Passed through: locale, terminal, Jupyter's and nbgrader's markers, the cluster selection
# (cluster_env put it there) and the labs' own settings.
KEPT = ("PATH", "LANG", "LANGUAGE", "TZ", "TERM", "KUBECONFIG")
KEPT_PREFIXES = ("LC_", "JPY_", "NBGRADER_", "MESHLAB_")
# The grader's own settings: where the course, its sources and the hidden checks are.
GRADER_ONLY = ("MESHLAB_GRADE_TARGETS", "MESHLAB_COURSE_DIR", "MESHLAB_COURSE_SOURCE",
               "MESHLAB_GRADER_CHECKS", "MESHLAB_SANDBOX", "MESHLAB_CELL_TIMEOUT")


def sandbox_env(env: Mapping[str, str], home: str) -> dict[str, str]:
    kept = {key: value for key, value in env.items()
            if (key in KEPT or key.startswith(KEPT_PREFIXES)) and key not in GRADER_ONLY}
    # MESHLAB_SOLUTIONS=off: `labs.solution()` refuses while a submission is graded
    return {**kept, "HOME": home, "TMPDIR": "/tmp", "USER": "student", "LOGNAME": "student",
            "MESHLAB_SOLUTIONS": "off"}
