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
from dataclasses import asdict, fields
from pathlib import Path

# Every variable that selects a cluster; cleared before a target's own values are applied, so
# nothing inherited can redirect a verdict.
from labs.cluster import CLUSTER_VARIABLES, ClusterAddress, ClusterError

TARGETS_ENV = "MESHLAB_GRADE_TARGETS"


class TargetError(ValueError):
    """A roster or targets file that cannot be used; the message says what to fix."""


def address_from_dict(student: str, data: object) -> ClusterAddress:
    """One student's entry of a targets file, validated."""
    names = {f.name for f in fields(ClusterAddress)}
    if not isinstance(data, dict) or not set(data) <= names:
        raise TargetError(f"the entry for student {student!r} must be an object with "
                          f"`cluster` (+ `state_dir`) or `context` (+ `kubeconfig`), "
                          f"got {data!r}")
    address = ClusterAddress(**{key: str(value) for key, value in data.items()})
    try:
        address.env()
    except ClusterError as exc:
        raise TargetError(f"the entry for student {student!r}: {exc}") from None
    return address


def cluster_env(base: dict[str, str], target: ClusterAddress, student: str) -> dict[str, str]:
    """`base` with every cluster-selecting variable replaced by the target's, plus the id."""
    env = {key: value for key, value in base.items() if key not in CLUSTER_VARIABLES}
    env.update(target.env())
    env["MESHLAB_STUDENT"] = student
    return env


def write_targets(path: Path, targets: dict[str, ClusterAddress]) -> None:
    """Write a targets file readable by its owner only."""
    data = {student: {k: v for k, v in asdict(t).items() if v is not None}
            for student, t in targets.items()}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=1)


def read_targets(path: str | Path) -> dict[str, ClusterAddress]:
    """The driver's targets file: JSON mapping each student id to its target."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise TargetError(f"cannot read the targets file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise TargetError(f"the targets file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise TargetError(f"the targets file {path} must map student ids to targets")
    return {str(student): address_from_dict(str(student), entry)
            for student, entry in data.items()}


@functools.cache
def target_for(student: str, targets_file: str) -> ClusterAddress | None:
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
