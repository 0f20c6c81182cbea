"""Benchmark of host capacity: what N idle student clusters cost.

Starts, side by side in temporary state directories, one *empty* cluster (the baseline: what
`meshlab up` runs before a learner applies anything) and N student clusters with Bookinfo and
curl meshed plus Istio's bookinfo Gateway, and prints per cluster:
- `meshlab up` (the CLI, as a learner runs it) -> the first `kubectl get ns` that succeeds
  (target <= 1 s), and, for the student clusters, up + Bookinfo applied -> the first 200 of
  `/productpage` through the istio-ingressgateway (target <= 3 s) and -> every Deployment
  Available;
- PSS and RSS of everything the cluster runs (the daemon's process tree: daemon, twins, Envoys,
  Prometheus), per kind;
- idle CPU: the utime+stime every process of the cluster accumulates over `--idle` seconds
  without traffic, as % of one core (process CPU time does not depend on how loaded the host is,
  wall-clock latencies do), with the spread over sub-windows and per kind;
- how many student clusters a 2-core / 24 GB host holds, by memory (PSS) and by idle CPU.

First, `meshlab up` -> first `kubectl get ns` of one cluster starting alone (a learner's
`meshlab up`; the runs above start clusters together, so they wait for each other's CPU), over
`--api-runs` fresh clusters one after the other (default 5; 0 skips it).

Run: `.venv/bin/python bench/capacity.py [--clusters N ...] [--idle S] [--api-runs R]`
(default: N=1, then 3).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for `labs`

from common import BOOKINFO_GATEWAY, cluster_memory, process_tree

from labs.cluster import EmbeddedCluster, kubectl_binary
from labs.setup.figures import IDLE_CPU_SHARE, MEMORY_SHARE  # also what preflight plans with

NAMESPACE = "bookinfo"
MANIFESTS = Path(__file__).resolve().parents[1] / "labs" / "manifests"
MESHLAB = Path(sys.executable).with_name("meshlab")
READY_TIMEOUT = 180.0
SETTLE = 5.0  # after everything is ready, before the idle window: start-up work winds down
SUB_WINDOWS = 5
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
HOST_CORES = 2
HOST_MEMORY_MB = 24 * 1024


@dataclass
class Student:
    """One cluster of the run and what was measured on it."""

    cluster: EmbeddedCluster
    bookinfo: bool
    up_s: float = 0.0  # `meshlab up` returned
    api_s: float = 0.0  # first `kubectl get ns` that succeeded
    first_200_s: float | None = None  # first 200 through the ingress gateway
    available_s: float | None = None  # every Deployment Available
    pid: int = 0
    memory: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # kind -> CPU seconds in the window
    windows: list[float] = field(default_factory=list)  # % of one core per sub-window

    def kubectl(self, *args: str, input: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([kubectl_binary(), f"--kubeconfig={self.cluster.kubeconfig}",
                               *args], input=input, capture_output=True, text=True,
                              check=check, timeout=120)


def start(student: Student, began: float) -> None:
    """`meshlab up` as a learner runs it, then `kubectl get ns` until it answers."""
    paths = student.cluster.paths
    subprocess.run([str(MESHLAB), "up", "--name", paths.name, "--state-dir", str(paths.root)],
                   check=True, capture_output=True, timeout=READY_TIMEOUT)
    student.up_s = time.perf_counter() - began
    while student.kubectl("get", "ns", check=False).returncode != 0:
        if time.perf_counter() - began > READY_TIMEOUT:
            raise SystemExit(f"{paths.name}: `kubectl get ns` never answered")
        time.sleep(0.02)
    student.api_s = time.perf_counter() - began


def deploy_bookinfo(student: Student, began: float) -> None:
    """Bookinfo, curl and the bookinfo Gateway in an injected namespace; waits for the first
    200 through the ingress gateway and for every Deployment to be Available."""
    ns = f"--namespace={NAMESPACE}"
    student.kubectl("create", "namespace", NAMESPACE)
    student.kubectl("label", "namespace", NAMESPACE, "istio-injection=enabled")
    student.kubectl(ns, "apply", "-f", str(MANIFESTS / "bookinfo.yaml"),
                    "-f", str(MANIFESTS / "curl.yaml"), "-f", "-",
                    input=yaml.safe_dump_all(BOOKINFO_GATEWAY))
    port = student.kubectl("-n", "istio-system", "get", "service", "istio-ingressgateway", "-o",
                           'jsonpath={.spec.ports[?(@.name=="http2")].nodePort}').stdout.strip()
    url = f"http://127.0.0.1:{port}/productpage"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while student.first_200_s is None:
        try:
            with opener.open(url, timeout=2) as response:
                if response.status == 200:
                    student.first_200_s = time.perf_counter() - began
        except (OSError, urllib.error.URLError):
            time.sleep(0.02)
        if time.perf_counter() - began > READY_TIMEOUT:
            raise SystemExit(f"{student.cluster.name}: no 200 through the ingress gateway")
    student.kubectl(ns, "wait", "--for=condition=Available", "deployment", "--all",
                    f"--timeout={READY_TIMEOUT:.0f}s")
    student.available_s = time.perf_counter() - began


def bring_up(student: Student, began: float, errors: list[BaseException]) -> None:
    try:
        start(student, began)
        if student.bookinfo:
            deploy_bookinfo(student, began)
        status = student.cluster.status()
        assert status.pid is not None, f"{student.cluster.name} is not running"
        student.pid = status.pid
    except BaseException as exc:  # reported by the main thread
        errors.append(exc)


# -- /proc ------------------------------------------------------------------------------------
def kind_of(pid: int, daemon: int) -> str:
    """What a process of the cluster is: the daemon, an Envoy, Prometheus, or a pod's twin."""
    if pid == daemon:
        return "daemon"
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "gone"
    return name if name in ("envoy", "prometheus") else "twins"


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its threads included), in seconds; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def measure_memory(student: Student) -> None:
    """kind -> (processes, RSS kB, PSS kB) over the cluster's process tree."""
    totals: dict[str, tuple[int, int, int]] = {}
    for process in cluster_memory(student.pid):
        kind = kind_of(process.pid, student.pid)
        count, rss_sum, pss_sum = totals.get(kind, (0, 0, 0))
        totals[kind] = (count + 1, rss_sum + process.rss_kb, pss_sum + process.pss_kb)
    student.memory = totals


def snapshot(students: list[Student]) -> list[dict[int, tuple[str, float]]]:
    """Per cluster: pid -> (kind, CPU seconds so far)."""
    return [{pid: (kind_of(pid, s.pid), cpu_seconds(pid)) for pid in process_tree(s.pid)}
            for s in students]


def idle_cpu(students: list[Student], seconds: float) -> None:
    """CPU seconds each cluster's processes use over `seconds` with no traffic, in
    `SUB_WINDOWS` slices (the spread). A process that starts within the window counts from 0;
    one that ends counts until its last reading."""
    slice_s = seconds / SUB_WINDOWS
    before = snapshot(students)
    for _ in range(SUB_WINDOWS):
        began = time.monotonic()
        time.sleep(slice_s)
        after = snapshot(students)
        elapsed = time.monotonic() - began
        for student, old, new in zip(students, before, after, strict=True):
            used = 0.0
            for pid, (kind, total) in new.items():
                delta = max(0.0, total - old.get(pid, (kind, 0.0))[1])
                student.cpu[kind] = student.cpu.get(kind, 0.0) + delta
                used += delta
            student.windows.append(100 * used / elapsed)
        before = after  # the next slice starts where this one ended


# -- report -----------------------------------------------------------------------------------
def pss_mb(student: Student) -> float:
    return sum(pss for _, _, pss in student.memory.values()) / 1024


def rss_mb(student: Student) -> float:
    return sum(rss for _, rss, _ in student.memory.values()) / 1024


def idle_percent(student: Student) -> float:
    return statistics.mean(student.windows) if student.windows else 0.0


def report(students: list[Student], idle_s: float) -> None:
    def fmt(value: float | None) -> str:
        return "   -  " if value is None else f"{value:5.2f}s"

    print(f"{'cluster':10s} {'up':>6s} {'get ns':>6s} {'gw 200':>6s} {'avail':>6s} "
          f"{'PSS MB':>7s} {'RSS MB':>7s} {'idle CPU % of a core (min-max over 5 windows)':s}")
    for s in students:
        spread = f"{min(s.windows):5.2f}-{max(s.windows):5.2f}" if s.windows else ""
        print(f"{s.cluster.name:10s} {fmt(s.up_s)} {fmt(s.api_s)} {fmt(s.first_200_s)} "
              f"{fmt(s.available_s)} {pss_mb(s):7.0f} {rss_mb(s):7.0f} "
              f"{idle_percent(s):5.2f} ({spread})")
    print(f"\nper kind, idle CPU % of a core over {idle_s:.0f} s / PSS MB (processes):")
    kinds = sorted({k for s in students for k in (*s.memory, *s.cpu) if k != "gone"})
    for s in students:
        parts = []
        for kind in kinds:
            count, _, pss = s.memory.get(kind, (0, 0, 0))
            cpu = 100 * s.cpu.get(kind, 0.0) / idle_s
            parts.append(f"{kind} {cpu:4.2f}% / {pss / 1024:4.0f} MB ({count})")
        print(f"  {s.cluster.name:10s} " + "; ".join(parts))

    baseline = [s for s in students if not s.bookinfo]
    loaded = [s for s in students if s.bookinfo]
    if not loaded:
        return
    pss = statistics.mean(pss_mb(s) for s in loaded)
    cpu = statistics.mean(idle_percent(s) for s in loaded)
    print(f"\nstudent cluster (Bookinfo + curl, mean of {len(loaded)}): PSS {pss:.0f} MB "
          f"(target <= 300), idle CPU {cpu:.2f} % of one core (target <= 2 %)")
    if baseline:
        base = baseline[0]
        print(f"  baseline empty cluster: PSS {pss_mb(base):.0f} MB "
              f"({pss / max(pss_mb(base), 1):.1f}x), idle CPU {idle_percent(base):.2f} % "
              f"({cpu / max(idle_percent(base), 0.01):.1f}x); `meshlab up` -> API "
              f"{base.api_s:.2f} s (target <= 1 s)")
    first = [s.first_200_s for s in loaded if s.first_200_s is not None]
    if first:
        print(f"  up + Bookinfo -> first 200 through the ingress gateway: "
              f"min {min(first):.2f} s, max {max(first):.2f} s over {len(first)} started "
              "together (target <= 3 s for one)")
    by_memory = int(HOST_MEMORY_MB * MEMORY_SHARE / pss)
    by_cpu = int(HOST_CORES * 100 * IDLE_CPU_SHARE / max(cpu, 0.01))
    print(f"  a {HOST_CORES}-core / {HOST_MEMORY_MB // 1024} GB host holds about "
          f"{min(by_memory, by_cpu)} student clusters: {by_memory} by memory "
          f"({MEMORY_SHARE:.0%} of RAM for clusters), {by_cpu} by idle CPU "
          f"({IDLE_CPU_SHARE:.0%} of the cores for idle clusters)")


def api_ready_alone(runs: int) -> None:
    """`meshlab up` -> first `kubectl get ns` of fresh clusters started one at a time."""
    seconds = []
    for i in range(runs):
        root = Path(tempfile.mkdtemp(prefix="meshlab-api-"))
        student = Student(EmbeddedCluster(f"api{i}", root), bookinfo=False)
        try:
            start(student, time.perf_counter())
            seconds.append(student.api_s)
        finally:
            student.cluster.down()
            shutil.rmtree(root, ignore_errors=True)
    print(f"\n== `meshlab up` -> first `kubectl get ns`, one cluster starting alone, {runs} "
          f"runs: {' '.join(f'{s:.2f}' for s in seconds)} s; median "
          f"{statistics.median(seconds):.2f} s, max {max(seconds):.2f} s (target <= 1 s)")


def run(n: int, idle_s: float, with_baseline: bool) -> None:
    root = Path(tempfile.mkdtemp(prefix="meshlab-capacity-"))
    students = ([Student(EmbeddedCluster("empty", root), bookinfo=False)] if with_baseline
                else []) + [Student(EmbeddedCluster(f"student{i}", root), bookinfo=True)
                            for i in range(n)]
    errors: list[BaseException] = []
    try:
        began = time.perf_counter()
        threads = [threading.Thread(target=bring_up, args=(s, began, errors)) for s in students]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        print(f"\n== {n} student cluster(s) + {'1 empty' if with_baseline else 'no'} baseline: "
              f"all ready after {time.perf_counter() - began:.1f} s; settling {SETTLE:.0f} s, "
              f"then {idle_s:.0f} s idle")
        time.sleep(SETTLE)
        idle_cpu(students, idle_s)
        for student in students:
            measure_memory(student)
    finally:
        stop_all(students)
        shutil.rmtree(root, ignore_errors=True)
    report(students, idle_s)


def stop_all(students: list[Student]) -> None:
    stoppers: list[Callable[[], object]] = [s.cluster.down for s in students]
    threads = [threading.Thread(target=stop) for stop in stoppers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clusters", type=int, nargs="+", default=[1, 3],
                        help="student clusters per run, one run per number (default: 1 3)")
    parser.add_argument("--idle", type=float, default=25.0,
                        help="seconds of the idle CPU window (default: 25)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="leave out the empty cluster")
    parser.add_argument("--api-runs", type=int, default=5,
                        help="clusters started alone for `meshlab up` -> API (default: 5)")
    args = parser.parse_args()
    if args.api_runs > 0:
        api_ready_alone(args.api_runs)
    for n in args.clusters:
        run(n, args.idle, not args.no_baseline)


if __name__ == "__main__":
    main()
