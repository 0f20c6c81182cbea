"""Catching up and starting over.

`solve`: bring a cluster to where a lab (or a run of labs) leaves it by executing the instructor
notebooks with papermill, the cluster passed as the notebooks' `cluster_selection` parameter.
Each executed notebook is kept for inspection; a failing cell is named with its error.

`reset`: delete what a lab created — the namespaces it owns and its objects in shared namespaces,
as listed in course.yaml — so the learner can start it over.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from labs.catalog import Lab
from labs.cluster import ClusterRef

CELL_TIMEOUT_S = 600
DELETE_TIMEOUT_S = 180


class CatchUpError(RuntimeError):
    """A lab could not be solved or reset; the message names the lab, the cell and the cause."""


def solve(labs: list[Lab], source: Path, selection: Mapping[str, str], output_dir: Path,
          progress_bar: bool = True) -> list[Path]:
    """Execute each lab's instructor notebook in order against the selected cluster; return the
    executed notebooks' paths."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    executed = []
    for lab in labs:
        output = output_dir / lab.notebook
        output.parent.mkdir(parents=True, exist_ok=True)
        try:
            papermill.execute_notebook(
                str(source / lab.notebook), str(output),
                parameters={"cluster_selection": dict(selection)}, kernel_name="python3",
                progress_bar=progress_bar, cwd=str(output.parent),
                execution_timeout=CELL_TIMEOUT_S, log_output=False)
        except PapermillExecutionError as exc:
            first_line = next((line for line in exc.source.splitlines()
                               if line.strip() and not line.startswith("###")), "")
            raise CatchUpError(
                f"lab {lab.id}: cell {exc.exec_count} (`{first_line.strip()[:70]}`) failed: "
                f"{exc.ename}: {exc.evalue}\nthe executed notebook is kept at {output}; the "
                f"cluster has every step before that cell") from None
        executed.append(output)
    return executed


def reset(labs: list[Lab], cluster: ClusterRef,
          say: Callable[[str], None] = print) -> None:
    """Delete what each lab owns, later labs first (their objects may live in an earlier
    lab's namespace)."""
    for lab in reversed(labs):
        for owned in lab.objects:
            _delete(cluster, lab, "--namespace", owned.namespace, owned.resource, owned.name,
                    say=say)
        for namespace in lab.namespaces:
            _delete(cluster, lab, "namespace", namespace, say=say)


def _delete(cluster: ClusterRef, lab: Lab, *target: str, say: Callable[[str], None]) -> None:
    result = cluster.kubectl("delete", *target, "--ignore-not-found", "--wait=true",
                             f"--timeout={DELETE_TIMEOUT_S}s", timeout=DELETE_TIMEOUT_S + 30)
    if result.returncode != 0:
        raise CatchUpError(f"lab {lab.id}: `kubectl delete {' '.join(target)}` failed: "
                           f"{result.stderr.strip()}")
    if result.stdout.strip():
        say(result.stdout.strip())
