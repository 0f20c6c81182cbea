"""Which cluster each student is graded against, chosen by the grading driver.

The driver writes a small JSON file (`{"student": {"cluster": ..., "state_dir": ...}}` or
`{"student": {"context": ..., "kubeconfig": ...}}`) and names it in `$MESHLAB_GRADE_TARGETS`
for the nbgrader process; the preprocessors read it. Nothing the student's kernel sets can change
it: the kernel is started after the file was read, and the verdict's environment is rebuilt
from the file, not from the kernel.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

# Every variable that selects a cluster; cleared before a target's own values are applied, so
# nothing inherited can redirect a verdict.
from labs.cluster import CLUSTER_VARIABLES

if TYPE_CHECKING:
    from labs.board.roster import Student

TARGETS_ENV = "MESHLAB_GRADE_TARGETS"


class TargetError(ValueError):
    """A roster or targets file that cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class Target:
    """One student's cluster: an embedded cluster (name + state root) or a kube context."""

    cluster: str | None = None
    state_dir: str | None = None
    context: str | None = None
    kubeconfig: str | None = None

    def env(self) -> dict[str, str]:
        """The variables `labs.cluster.current_cluster` reads to select this cluster."""
        if self.context:
            return {"MESHLAB_CONTEXT": self.context,
                    **({"KUBECONFIG": self.kubeconfig} if self.kubeconfig else {})}
        if not self.cluster:
            raise TargetError("a target needs either `cluster` or `context`")
        return {"MESHLAB_CLUSTER": self.cluster,
                **({"MESHLAB_STATE_DIR": self.state_dir} if self.state_dir else {})}

    @classmethod
    def of_student(cls, student: Student) -> Target:
        """A roster row of `meshlab board` (one roster serves the board and grading)."""
        return cls(student.cluster, str(student.state_dir) if student.state_dir else None,
                   student.context, str(student.kubeconfig) if student.kubeconfig else None)

    @classmethod
    def from_dict(cls, student: str, data: object) -> Target:
        if not isinstance(data, dict) or not set(data) <= {"cluster", "state_dir", "context",
                                                           "kubeconfig"}:
            raise TargetError(f"the entry for student {student!r} must be an object with "
                              f"`cluster` (+ `state_dir`) or `context` (+ `kubeconfig`), "
                              f"got {data!r}")
        target = cls(**{key: str(value) for key, value in data.items()})
        target.env()  # validates
        return target


def cluster_env(base: dict[str, str], target: Target, student: str) -> dict[str, str]:
    """`base` with every cluster-selecting variable replaced by the target's, plus the id."""
    env = {key: value for key, value in base.items() if key not in CLUSTER_VARIABLES}
    env.update(target.env())
    env["MESHLAB_STUDENT"] = student
    return env


def write_targets(path: Path, targets: dict[str, Target]) -> None:
    """Write a targets file readable by its owner only."""
    data = {student: {k: v for k, v in asdict(t).items() if v is not None}
            for student, t in targets.items()}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=1)


def read_targets(path: str | Path) -> dict[str, Target]:
    """The driver's targets file: JSON mapping each student id to its target."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise TargetError(f"cannot read the targets file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise TargetError(f"the targets file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise TargetError(f"the targets file {path} must map student ids to targets")
    return {str(student): Target.from_dict(str(student), entry)
            for student, entry in data.items()}


@functools.cache
def target_for(student: str, targets_file: str) -> Target | None:
    """The student's target from the driver's file; None when grading without a driver (then
    the environment nbgrader was started with selects the cluster). Read once per process,
    before the first notebook runs: a later notebook of the same assignment must not see a
    file the first one's code rewrote."""
    if not targets_file:
        return None
    targets = read_targets(targets_file)
    if student not in targets:
        raise TargetError(f"no cluster is assigned to student {student!r} in {targets_file}")
    return targets[student]
