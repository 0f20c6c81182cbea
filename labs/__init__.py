"""Helpers for the meshlab course notebooks. Submodules are imported on first use, so
`import labs` stays cheap."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from labs.checks.notebook import ShownReport
    from labs.cluster import ClusterRef
    from labs.workspace.solutions import Solution


def check(selector: str, cluster: ClusterRef | None = None) -> ShownReport:
    """Check my work: run the public checks of a lab (e.g. "day1.mtls") against your cluster
    and show ✔ / ‼ / × with hints. See `labs.checks.notebook.check`."""
    from labs.checks.notebook import check as run

    return run(selector, cluster)


def connect(selection: Mapping[str, str] | None = None) -> ClusterRef:
    """Start your cluster and point `!kubectl` in this notebook at it. See `labs.course`."""
    from labs.course import connect as run

    return run(selection)


def manifest(name: str) -> str:
    """The path of a course manifest, e.g. `labs.manifest("bookinfo")`."""
    from labs.course import manifest as find

    return find(name)


def deploy_bookinfo(namespace: str = "bookinfo") -> None:
    """Catch up: Bookinfo running with sidecars, as lab day1.install leaves it."""
    from labs.course import deploy_bookinfo as deploy

    deploy(namespace)


def apply(manifest_yaml: str, namespace: str | None = None) -> None:
    """`kubectl apply` YAML written in a cell, e.g. `labs.apply(VIRTUAL_SERVICE, "bookinfo")`."""
    from labs.course import apply as run

    run(manifest_yaml, namespace)


def solution(exercise: str) -> Solution:
    """The course's answer to one exercise, e.g. `labs.solution("day1.traffic.routes")`, when
    your course allows it. See `labs.workspace.solutions`."""
    from labs.workspace.solutions import solution as reveal

    return reveal(exercise)
