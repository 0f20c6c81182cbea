"""`meshlab workshop up|down|status`: one environment per roster participant, started with
bounded parallelism (a thread pool: each start is mostly waiting on a daemon or a tool), with
live progress lines and a summary table. The roster is labs/cluster/roster.py's, the one
`meshlab board` and `meshlab grade --mode live` read, so what is started here is what they
find: an embedded cluster per `cluster` row (under its `state_dir`), a kind cluster per
`context` row named kind-meshlab-<student>."""

from __future__ import annotations

import json
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from labs.cluster import ClusterError, ClusterRef, EmbeddedCluster
from labs.cluster.roster import Student
from labs.provision import kind
from labs.provision.kind_plan import KindTarget, PlanError, create_plan, delete_plan
from labs.provision.run import ToolNotFound

INGRESS_WAIT_S = 20.0
KUBECTL_TIMEOUT_S = 15.0
GATEWAY = ("istio-system", "istio-ingressgateway")


class WorkshopError(ValueError):
    """The roster does not fit the request; the message names the row and the fix."""


@dataclass(frozen=True)
class Participant:
    """A roster row with what provisions it: an embedded cluster, or a kind target."""

    student: Student
    embedded: EmbeddedCluster | None
    kind: KindTarget | None

    @property
    def name(self) -> str:
        return self.student.name

    @property
    def backend(self) -> str:
        return "kind" if self.kind else "embedded"

    @property
    def where(self) -> str:
        if self.kind:
            return self.kind.context
        assert self.embedded is not None
        return self.embedded.name

    def ref(self) -> ClusterRef:
        return self.student.address.ref()


def participants(students: Sequence[Student], backend: str | None = None, mesh: str = "istio",
                 image_cache: Path | None = None) -> list[Participant]:
    """The roster's rows for `backend` (None: whatever each row says), each checked: embedded
    needs `cluster` rows; kind needs `context` rows naming kind-meshlab-<student>, the context
    `kind create cluster --name meshlab-<student>` writes. A kind row's slot (its host ports)
    is its place in the roster."""
    found = []
    for slot, student in enumerate(students):
        address = student.address
        if address.context is None:
            if backend == "kind":
                raise WorkshopError(
                    f"student {student.name!r} has an embedded cluster row; for --backend kind "
                    f"the roster needs `student,context` rows (context kind-meshlab-"
                    f"{student.name}), so the board and the grader find the kind cluster")
            found.append(Participant(student, address.embedded(), None))
            continue
        if backend == "embedded":
            raise WorkshopError(f"student {student.name!r} has a context row "
                                f"({address.context}); --backend embedded needs "
                                "`student,cluster[,state_dir]` rows")
        try:
            target = KindTarget(student.name, slot, mesh, image_cache,
                                Path(address.kubeconfig) if address.kubeconfig else None)
        except PlanError as exc:
            raise WorkshopError(f"student {student.name!r}: {exc}") from None
        if address.context != target.context:
            raise WorkshopError(f"student {student.name!r}: the roster's context is "
                                f"{address.context}, but meshlab names this student's kind "
                                f"cluster's context {target.context}: write that in the roster")
        found.append(Participant(student, None, target))
    return found


@dataclass(frozen=True)
class Result:
    participant: Participant
    status: str
    seconds: float
    access: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("ready", "stopped", "not running", "deleted")


class Progress:
    """Live progress lines, one writer at a time: `[HH:MM:SS] student: message`."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.lock = threading.Lock()

    def say(self, participant: Participant, message: str) -> None:
        with self.lock:
            print(f"[{time.strftime('%H:%M:%S')}] {participant.name}: {message}", file=self.out,
                  flush=True)

    def of(self, participant: Participant) -> Callable[[str], None]:
        return lambda message: self.say(participant, message)


def run_all(found: list[Participant], job: Callable[[Participant], Result],
            parallel: int) -> list[Result]:
    """`job` for every participant, at most `parallel` at once; results in roster order."""
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        return list(pool.map(job, found))


def timed(participant: Participant, action: Callable[[], tuple[str, str]],
          errors: tuple[type[Exception], ...]) -> Result:
    """Run `action` (returning status and access details), timed; `errors` make it failed."""
    started = time.monotonic()
    try:
        status, access = action()
    except errors as exc:
        return Result(participant, "failed", time.monotonic() - started, error=str(exc))
    return Result(participant, status, time.monotonic() - started, access)


def up(participant: Participant, progress: Progress, options: kind.Options) -> Result:
    say = progress.of(participant)
    if participant.kind is not None:
        target = participant.kind

        def create() -> tuple[str, str]:
            say(f"creating kind cluster {target.cluster} (API 127.0.0.1:{target.api_port}, "
                f"ingress localhost:{target.ingress_port})")
            line = kind.create(target, say, options)
            return "ready", f"{line}  ingress http://localhost:{target.ingress_port}/"
        result = timed(participant, create, (kind.ProvisionError, ToolNotFound))
    else:
        cluster = participant.embedded
        assert cluster is not None

        def start() -> tuple[str, str]:
            say(f"starting embedded cluster {cluster.name} (state in {cluster.paths.root})")
            try:
                kubeconfig = cluster.up()
            except OSError as exc:
                raise ClusterError(f"cannot use {cluster.paths.dir} ({exc.strerror}): give "
                                   f"{participant.name} a state_dir in the roster that is a "
                                   "folder you can write") from None
            port = ingress_port(participant.ref())
            return "ready", (f"MESHLAB_CLUSTER={cluster.name} MESHLAB_STATE_DIR="
                             f"{cluster.paths.root}  kubeconfig {kubeconfig}  ingress "
                             + (f"http://localhost:{port}/" if port else "(none yet)"))
        result = timed(participant, start, (ClusterError,))
    say(f"{result.status} in {result.seconds:.1f} s" + (
        f": {result.error.splitlines()[0]}" if result.error else ""))
    return result


def ingress_port(ref: ClusterRef) -> int | None:
    """The http2 node port of the cluster's ingress gateway Service, once it is there (the
    embedded cluster installs the gateway as it starts)."""
    deadline = time.monotonic() + INGRESS_WAIT_S
    while time.monotonic() < deadline:
        try:
            done = ref.kubectl("get", "service", GATEWAY[1], f"--namespace={GATEWAY[0]}",
                               "--output=jsonpath={.spec.ports[?(@.name==\"http2\")].nodePort}",
                               timeout=KUBECTL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            continue
        if done.returncode == 0 and done.stdout.strip().isdigit():
            return int(done.stdout.strip())
        time.sleep(0.5)
    return None


def down(participant: Participant, progress: Progress) -> Result:
    say = progress.of(participant)
    if participant.kind is not None:
        target = participant.kind

        def delete() -> tuple[str, str]:
            kind.delete(target, say)
            return "deleted", ""
        result = timed(participant, delete, (kind.ProvisionError, ToolNotFound))
    else:
        cluster = participant.embedded
        assert cluster is not None

        def stop() -> tuple[str, str]:
            return ("stopped" if cluster.down() else "not running"), ""
        result = timed(participant, stop, (ClusterError,))
    say(result.status + (f": {result.error.splitlines()[0]}" if result.error else ""))
    return result


@dataclass(frozen=True)
class Health:
    participant: Participant
    api: str  # answering | not running | not answering: <why>
    pods: str  # "<ready>/<total>", or "-" when the API does not answer

    @property
    def ok(self) -> bool:
        return self.api == "answering"


def health(participant: Participant) -> Health:
    """Does the participant's API server answer (/readyz), and how many pods are Ready?"""
    if participant.embedded is not None and not participant.embedded.status().running:
        return Health(participant, "not running", "-")
    ref = participant.ref()
    try:
        ready = ref.kubectl("get", "--raw=/readyz", timeout=KUBECTL_TIMEOUT_S)
        if ready.returncode != 0:
            why = (ready.stderr.strip().splitlines() or ["no answer"])[-1]
            return Health(participant, f"not answering: {why}", "-")
        pods = ref.kubectl("get", "pods", "--all-namespaces", "--output=json",
                           timeout=KUBECTL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return Health(participant, f"not answering within {KUBECTL_TIMEOUT_S:g} s", "-")
    if pods.returncode != 0:
        return Health(participant, "answering", "? (" + pods.stderr.strip()[-80:] + ")")
    return Health(participant, "answering", _ready_pods(json.loads(pods.stdout)))


def _ready_pods(listing: dict[str, Any]) -> str:
    items = [pod for pod in listing.get("items") or []
             if (pod.get("status") or {}).get("phase") != "Succeeded"]
    ready = sum(any(condition.get("type") == "Ready" and condition.get("status") == "True"
                    for condition in (pod.get("status") or {}).get("conditions") or [])
                for pod in items)
    return f"{ready}/{len(items)}"


def table(header: Sequence[str], rows: list[Sequence[str]]) -> str:
    """Columns as wide as their widest cell, two spaces apart, the last one free."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header) - 1)]
    return "\n".join("  ".join([*(f"{cell:<{width}}" for cell, width in zip(row, widths,
                                                                          strict=False)),
                               str(row[-1])]).rstrip() for row in [header, *rows])


def summary(results: list[Result]) -> str:
    rows = [(r.participant.name, r.participant.backend, r.participant.where, r.status,
             f"{r.seconds:.1f}s", r.access) for r in results]
    lines = [table(("STUDENT", "BACKEND", "CLUSTER/CONTEXT", "STATUS", "TIME", "ACCESS"), rows)]
    for result in results:
        if result.error:
            lines += ["", f"{result.participant.name}: {result.error}"]
    failed = sum(not result.ok for result in results)
    lines += ["", f"{len(results) - failed} of {len(results)} ok" + (
        f", {failed} failed: see above" if failed else "")]
    return "\n".join(lines)


def status_table(found: list[Health]) -> str:
    return table(("STUDENT", "BACKEND", "CLUSTER/CONTEXT", "API", "PODS READY"), [
        (h.participant.name, h.participant.backend, h.participant.where, h.api, h.pods)
        for h in found])


def _embedded_command(verb: str, cluster: EmbeddedCluster) -> str:
    return shlex.join(["meshlab", verb, "--name", cluster.name, "--state-dir",
                       str(cluster.paths.root)])


def dry_run(found: list[Participant]) -> str:
    """What `up` would run for each participant, in order, as shell lines."""
    blocks = []
    for participant in found:
        if participant.kind is not None:
            target = participant.kind
            blocks.append(
                f"# {participant.name}: kind cluster {target.cluster}, API 127.0.0.1:"
                f"{target.api_port}, ingress http://localhost:{target.ingress_port}/, then "
                f"{target.access()}\n" + kind.script(create_plan(target)))
        else:
            cluster = participant.embedded
            assert cluster is not None
            blocks.append(f"# {participant.name}: embedded cluster {cluster.name}, then "
                          f"MESHLAB_CLUSTER={cluster.name} MESHLAB_STATE_DIR="
                          f"{cluster.paths.root}\n" + _embedded_command("up", cluster))
    return "\n".join(blocks)


def down_script(found: list[Participant]) -> str:
    """What `down` would run for each participant, one line each."""
    lines = []
    for participant in found:
        if participant.kind is not None:
            lines.append(kind.script(delete_plan(participant.kind)))
        else:
            assert participant.embedded is not None
            lines.append(_embedded_command("down", participant.embedded))
    return "\n".join(lines)
