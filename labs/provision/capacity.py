"""The capacity plan `meshlab workshop up` makes before it starts anything: the per-student
figures of labs/setup/figures.py against this host, with preflight's checks (memory, CPU,
inotify, ports, disk, Docker for kind). What a workshop does not start (JupyterLab) is left
out; the tools are checked when the plan runs (labs/provision/run.py resolve)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from labs.setup import figures
from labs.setup.preflight import (
    Check,
    check_cpu,
    check_disk,
    check_docker,
    check_inotify_embedded,
    check_inotify_kind,
    check_memory,
    check_ports,
    render,
)


def embedded_plan(state_roots: list[Path]) -> list[Check]:
    """One embedded cluster per entry of `state_roots` (each participant's state root)."""
    students = len(state_roots)
    disks = [check_disk(count, root, figures.EMBEDDED_DISK, "the clusters' state directory")
             for root, count in Counter(state_roots).items()]
    return [check_memory(students, figures.EMBEDDED_MEMORY), check_cpu(students, "embedded"),
            check_inotify_embedded(students), *disks]


def kind_plan(students: int) -> list[Check]:
    """`students` kind clusters in slots 0..students-1 (their ports: figures.kind_ports)."""
    docker, docker_root = check_docker()
    first_api, first_ingress = figures.kind_ports(0)
    ports = [(range(first_api, first_api + students), "kind API servers"),
             (range(first_ingress, first_ingress + students), "kind ingress")]
    return [docker, check_memory(students, figures.KIND_MEMORY), check_cpu(students, "kind"),
            *check_inotify_kind(), check_ports(ports),
            check_disk(students, docker_root, figures.KIND_DISK, "Docker's data directory")]


def fits(checks: list[Check]) -> bool:
    return not any(check.status == "fail" for check in checks)


def describe(checks: list[Check], backend: str, students: int) -> str:
    """The plan as preflight shows it, under a title saying it is the workshop's."""
    table = render(checks, backend, students).splitlines()[1:]  # preflight's own title off
    return "\n".join([f"capacity plan: {backend} backend, {students} participant"
                      f"{'' if students == 1 else 's'}", *table])
