"""What a notebook needs before its first `!kubectl`: the selected cluster running, and the
shell pointed at it; and the course's manifests by name, wherever the notebook runs (JupyterLab,
nbgrader's autograde directory, a test's temporary copy)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from labs.cluster import ClusterError, ClusterRef, current_cluster, kubectl_binary, select

MANIFESTS = Path(__file__).resolve().parent / "manifests"


class LabError(RuntimeError):
    """A helper could not do what a notebook cell asked, and the message says what is missing
    and what to do. A learner sees that message alone: a traceback through the helpers' code
    tells them nothing they can act on."""

    def _render_traceback_(self) -> list[str]:
        """What IPython shows instead of the traceback."""
        return [f"{type(self).__name__}: {self}"]


class ClusterUnavailable(LabError, ClusterError):
    """The notebook's cluster could not be selected or started (still a ClusterError)."""


def manifest(name: str) -> str:
    """The absolute path of a course manifest: `manifest("bookinfo")` → …/bookinfo.yaml."""
    path = MANIFESTS / (name if name.endswith(".yaml") else f"{name}.yaml")
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in MANIFESTS.glob("*.yaml")))
        raise FileNotFoundError(f"no course manifest called {name!r}; there are: {known}")
    return str(path)


def connect(selection: Mapping[str, str] | None = None) -> ClusterRef:
    """Start the cluster this notebook uses (see `labs.cluster.current_cluster`) and set
    `KUBECONFIG` and `PATH` so that `!kubectl ...` in a cell talks to it with the pinned kubectl.
    A non-empty `selection` (the notebook's papermill parameter, e.g.
    {"MESHLAB_CLUSTER": "student-07"}) replaces the cluster variables first.

    With `MESHLAB_CONTEXT`, kubectl would still use the kubeconfig's current context, so a small
    kubeconfig naming that context is put first in `KUBECONFIG` (kubectl takes
    `current-context` from the first file that sets it) — the learner's own file is not edited.
    """
    try:
        if selection:
            select(selection)
        ref = current_cluster()
    except ClusterError as exc:
        raise ClusterUnavailable(str(exc)) from None
    kubeconfig = str(ref.kubeconfig)
    if ref.embedded is None:
        selector = Path.home() / ".meshlab" / "contexts" / f"{ref.context}.yaml"
        selector.parent.mkdir(parents=True, exist_ok=True)
        selector.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\n"
                            f"users: []\ncurrent-context: {ref.context}\n")
        kubeconfig = os.pathsep.join([str(selector), kubeconfig])
    os.environ["KUBECONFIG"] = kubeconfig
    tools = str(Path(kubectl_binary()).parent)
    if tools not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([tools, os.environ.get("PATH", "")])
    return ref


class SetupError(LabError):
    """A prerequisite of a lab could not be put in place; the message has kubectl's."""


def deploy_bookinfo(namespace: str = "bookinfo", timeout: int = 240) -> None:
    """Bring a cluster to where lab day1.install leaves it — namespace labelled for injection,
    Bookinfo applied and available — so a later lab also runs on a fresh cluster (nbgrader
    replays each notebook on its own). Idempotent: on a finished day1.install it changes
    nothing."""
    ref = connect()
    steps = [
        ("create", ["create", "namespace", namespace]),
        ("label", ["label", "namespace", namespace, "istio-injection=enabled", "--overwrite"]),
        ("apply", ["apply", "-n", namespace, "-f", manifest("bookinfo")]),
        ("wait", ["wait", "-n", namespace, "--for=condition=Available", "deployment", "--all",
                  f"--timeout={timeout}s"]),
    ]
    for step, args in steps:
        result = ref.kubectl(*args, timeout=timeout + 30)
        if result.returncode != 0 and not (step == "create" and "AlreadyExists" in result.stderr):
            raise SetupError(f"Bookinfo could not be put in place in namespace {namespace}: "
                             f"`kubectl {' '.join(args)}` failed: {result.stderr.strip()}\n"
                             f"`kubectl get pods -n {namespace}` and `kubectl get events -n "
                             f"{namespace}` show what is wrong; run this cell again after a fix.")


class KubectlRejected(LabError):
    """kubectl refused a manifest; shown in a notebook as kubectl's message, no traceback."""

    def _render_traceback_(self) -> list[str]:
        return [f"kubectl apply failed: {self}"]


def apply(manifest_yaml: str, namespace: str | None = None) -> None:
    """`kubectl apply -f -` for YAML written in a notebook cell: prints kubectl's answer
    (`virtualservice.networking.istio.io/reviews created`); a rejected manifest raises
    KubectlRejected with the server's message (the field that is wrong, and why)."""
    ref = connect()
    result = ref.kubectl("apply", *([f"--namespace={namespace}"] if namespace else []),
                         "-f", "-", input=manifest_yaml)
    if result.returncode != 0:
        raise KubectlRejected(result.stderr.strip() or result.stdout.strip())
    print(result.stdout.strip())
