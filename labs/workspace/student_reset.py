"""`meshlab reset --student NAME --roster FILE [--lab LAB]`: the instructor starts one
participant's lab over from their own side, through the roster that `meshlab board`,
`meshlab grade --mode live` and `meshlab workshop` read — an embedded cluster row by its
name and state directory, a kind (or any) cluster row through its kube context. The reset
itself is the learner's (labs/workspace/catchup.py `reset`)."""

from __future__ import annotations

from labs.cluster import ClusterError, ClusterRef
from labs.cluster.roster import RosterError, load_roster


def student_cluster(roster: str | None, name: str) -> ClusterRef:
    """The cluster of the roster's student `name`; an embedded one must be running."""
    if not roster:
        raise ClusterError("--student needs --roster FILE: the roster that `meshlab board` "
                           "and `meshlab workshop` read names each student's cluster")
    try:
        students = {student.name: student for student in load_roster(roster)}
    except RosterError as exc:
        raise ClusterError(str(exc)) from None
    student = students.get(name)
    if student is None:
        raise ClusterError(f"the roster {roster} has no student {name!r} (it lists: "
                           f"{', '.join(sorted(students))})")
    why = student.not_running()
    if why is not None:
        raise ClusterError(f"student {name}: {why}")
    return student.address.ref()
