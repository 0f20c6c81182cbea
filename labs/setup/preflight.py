"""`meshlab preflight`: can this host run N student clusters of a backend? One verdict per item
(pass, warn, fail) with the command that fixes it; the figures and their sources are in
labs/setup/figures.py, the host's facts come from labs/setup/host.py."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from labs.setup import figures, host
from labs.setup.figures import Figure
from labs.setup.releases import TOOLS
from labs.setup.tools import status

DOCKER_TIMEOUT_S = 20.0
DOCKER_DEFAULT_ROOT = Path("/var/lib/docker")
MAX_PORT = 65535


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # pass | warn | fail
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _size(value: float) -> str:
    return f"{value / figures.GB:.1f} GB" if value >= figures.GB else \
        f"{value / figures.MB:.0f} MB"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _clusters(count: int) -> str:
    return _plural(count, "cluster")


def _at_most(fits: float, resource: str) -> str:
    clusters = int(fits + 1e-9)  # 0.5 / 0.02 is 24.999...
    if clusters == 0:
        return f"this host has too little {resource} for one cluster: add {resource}"
    return f"run at most {_clusters(clusters)} on this host, or add {resource}"


def check_memory(students: int, per: Figure) -> Check:
    memory = host.memory()
    need = students * per.value
    if memory is None:
        return Check("memory", "warn", f"cannot read /proc/meminfo; {_clusters(students)} "
                     f"need {_size(need)} ({per.source})", "check the host's memory yourself")
    budget = memory.total * figures.MEMORY_SHARE
    of = "the memory limit of this container" if memory.limited_by_cgroup else "memory"
    said = (f"{_clusters(students)}: {_size(need)} ({_size(per.value)} each, {per.source}); "
            f"budget {_size(budget)} ({figures.MEMORY_SHARE:.0%} of {of}, {_size(memory.total)})")
    if need > budget:
        return Check("memory", "fail" if per.measured else "warn", said,
                     _at_most(budget / per.value, "memory"))
    if need > memory.available:
        return Check("memory", "warn", f"{said}; only {_size(memory.available)} is free now",
                     "close other programs, or stop clusters you do not use (`meshlab down`)")
    return Check("memory", "pass", said)


def check_cpu(students: int, backend: str) -> Check:
    cores = host.cpu_cores()
    if backend == "embedded":
        per = figures.EMBEDDED_IDLE_CPU
        need = students * per.value
        budget = cores * figures.IDLE_CPU_SHARE
        said = (f"{_clusters(students)} idle: {need:.2f} cores ({per.value:g} each, "
                f"{per.source}); budget {budget:.2f} ({figures.IDLE_CPU_SHARE:.0%} of "
                f"{cores:g} cores; active learners get the rest)")
        if need > budget:
            return Check("cpu", "fail", said, _at_most(budget / per.value, "cores"))
        return Check("cpu", "pass", said)
    per = figures.KIND_CPUS
    need = students * per.value
    said = f"{_clusters(students)}: {need:g} cores ({per.value:g} each, {per.source}); this " \
           f"host has {cores:g}"
    if need > cores:
        return Check("cpu", "warn", said, "expect slow cluster start-ups; use fewer kind "
                     "clusters per host, or the embedded backend")
    return Check("cpu", "pass", said)


def check_inotify_embedded(students: int) -> Check:
    limit = host.sysctl("fs.inotify.max_user_instances")
    per = figures.EMBEDDED_INOTIFY
    if limit is None:
        return Check("inotify instances", "warn",
                     "cannot read fs.inotify.max_user_instances (not Linux?)")
    used = host.inotify_instances_in_use()
    need = students * int(per.value)
    said = (f"{_clusters(students)}: {need} instances ({per.value:g} each, {per.source}); "
            f"this user holds {used}, fs.inotify.max_user_instances is {limit}")
    if used + need > limit:
        value = max(figures.EMBEDDED_INOTIFY_LIMIT, used + need)
        return Check("inotify instances", "fail", said,
                     f"sudo sysctl -w fs.inotify.max_user_instances={value}")
    return Check("inotify instances", "pass", said)


def check_inotify_kind() -> list[Check]:
    found = []
    for key, want in (("fs.inotify.max_user_instances", figures.KIND_INOTIFY_INSTANCES),
                      ("fs.inotify.max_user_watches", figures.KIND_INOTIFY_WATCHES)):
        name = "inotify " + key.rsplit("_", 1)[-1]
        value = host.sysctl(key)
        if value is None:
            found.append(Check(name, "warn", f"cannot read {key} (not Linux?)"))
        elif value < want:
            found.append(Check(name, "fail", f"{key} is {value}; {figures.KIND_INOTIFY_SOURCE}"
                               f" asks for {want}", f"sudo sysctl -w {key}={want}"))
        else:
            found.append(Check(name, "pass", f"{key} is {value} (kind asks for {want})"))
    return found


def _span(ports: range) -> str:
    return str(ports.start) if len(ports) == 1 else f"{ports.start}-{ports[-1]}"


def check_ports(wanted: list[tuple[range, str]]) -> Check:
    """Each (ports, purpose) free to listen on at 127.0.0.1."""
    listed = ", ".join(f"{_span(ports)} ({what})" for ports, what in wanted)
    if any(ports.start < 1 or ports[-1] > MAX_PORT for ports, _ in wanted):
        return Check("ports", "fail", f"needs {listed}: ports run from 1 to {MAX_PORT}",
                     "give fewer students, or another JupyterLab port")
    every = [port for ports, _ in wanted for port in ports]
    if len(set(every)) < len(every):
        return Check("ports", "fail", f"needs {listed}, which overlap",
                     "give JupyterLab a port outside the others, or fewer students")
    busy = [(port, what) for ports, what in wanted for port in ports
            if not host.port_free(port)]
    if not busy:
        return Check("ports", "pass", f"free on 127.0.0.1: {listed}")
    taken = ", ".join(f"{port} ({what})" for port, what in busy)
    fix = f"see what listens: ss -ltnp 'sport = :{busy[0][0]}', and stop it"
    if any(what == "JupyterLab" for _, what in busy):
        fix += "; or give JupyterLab another port: meshlab lab --port N"
    return Check("ports", "fail", f"in use on 127.0.0.1: {taken}", fix)


def check_disk(students: int, path: Path, per: Figure, what: str) -> Check:
    where, free = host.disk_free(path)
    need = students * per.value
    said = (f"{_clusters(students)}: {_size(need)} in {what} ({_size(per.value)} each, "
            f"{per.source}); {_size(free)} free at {where}")
    if free < need:
        return Check("disk", "fail" if per.measured else "warn", said,
                     f"free space on the file system of {where}")
    return Check("disk", "pass", said)


def check_docker() -> tuple[Check, Path]:
    """Docker installed and its daemon answering; also where it keeps images (for disk)."""
    docker = shutil.which("docker")
    if docker is None:
        return Check("docker", "fail", "docker is not on PATH (kind runs each cluster as a "
                     "Docker container)", "install Docker Engine: "
                     "https://docs.docker.com/engine/install/"), DOCKER_DEFAULT_ROOT
    try:
        done = subprocess.run([docker, "info", "--format", "{{.ServerVersion}} "
                               "{{.DockerRootDir}}"], capture_output=True, text=True,
                              timeout=DOCKER_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return Check("docker", "fail", f"`docker info` did not answer within "
                     f"{DOCKER_TIMEOUT_S:g} s", "restart the daemon: sudo systemctl restart "
                     "docker"), DOCKER_DEFAULT_ROOT
    except OSError as exc:
        return Check("docker", "fail", f"cannot run {docker}: {exc.strerror}",
                     "reinstall Docker"), DOCKER_DEFAULT_ROOT
    fields = done.stdout.split()
    if done.returncode != 0 or not fields:
        said = (done.stderr.strip().splitlines() or ["no answer"])[-1]
        fix = ("let this user use Docker: sudo usermod -aG docker $USER, then log in again"
               if "permission denied" in said.lower() else
               "start the daemon: sudo systemctl start docker")
        return Check("docker", "fail", f"the Docker daemon is not reachable: {said}", fix), \
            DOCKER_DEFAULT_ROOT
    root = Path(fields[1]) if len(fields) > 1 else DOCKER_DEFAULT_ROOT
    return Check("docker", "pass", f"Docker {fields[0]} daemon reachable ({docker})"), root


def check_tools(tools_root: Path | None) -> list[Check]:
    found = []
    for name in TOOLS:
        tool = status(name, tools_root)
        found.append(Check(name, "pass", tool.describe()) if tool.ok else
                     Check(name, "fail", tool.describe(), tool.fix))
    return found


def preflight(backend: str, students: int, *, jupyter_port: int, state_root: Path,
              tools_root: Path | None = None) -> list[Check]:
    """Every check of `backend` for `students` clusters, in the order they are shown."""
    ports = [(range(jupyter_port, jupyter_port + 1), "JupyterLab")]
    if backend == "embedded":
        return [check_memory(students, figures.EMBEDDED_MEMORY), check_cpu(students, backend),
                check_inotify_embedded(students), check_ports(ports),
                check_disk(students, state_root, figures.EMBEDDED_DISK,
                           "the clusters' state directory")]
    docker, docker_root = check_docker()
    first_api, first_ingress = figures.kind_ports(0)
    ports += [(range(first_api, first_api + students), "kind API servers"),
              (range(first_ingress, first_ingress + students), "kind ingress")]
    return [docker, *check_tools(tools_root), check_memory(students, figures.KIND_MEMORY),
            check_cpu(students, backend), *check_inotify_kind(), check_ports(ports),
            check_disk(students, docker_root, figures.KIND_DISK, "Docker's data directory")]


def render(checks: list[Check], backend: str, students: int) -> str:
    """A table a person reads: status, item, detail, and the fix under each item not passed."""
    width = max(len(check.name) for check in checks)
    lines = [f"meshlab preflight: {backend} backend, {_plural(students, 'student cluster')}",
             f"{'STATUS':<6}  {'CHECK':<{width}}  DETAIL"]
    for check in checks:
        lines.append(f"{check.status.upper():<6}  {check.name:<{width}}  {check.detail}")
        if check.fix:
            lines.append(f"{'':<6}  {'':<{width}}  fix: {check.fix}")
    failed = sum(check.status == "fail" for check in checks)
    warned = sum(check.status == "warn" for check in checks)
    lines.append(f"{_plural(failed, 'failure')}, {_plural(warned, 'warning')}" + (
        ": fix the failures above and run meshlab preflight again" if failed else ""))
    return "\n".join(lines)


def summary(checks: list[Check], backend: str, students: int) -> dict[str, object]:
    return {"backend": backend, "students": students,
            "ok": not any(check.status == "fail" for check in checks),
            "checks": [check.as_dict() for check in checks]}
