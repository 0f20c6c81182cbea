"""Benchmark of a student cluster's memory, per component.

Starts, one after the other in temporary state directories, an *empty* cluster (the baseline:
what `meshlab up` runs before a learner applies anything) and a student cluster with Bookinfo
and curl meshed (Istio's bookinfo Gateway too), sends a few requests through the ingress
gateway and from the curl pod so every process has served traffic, waits `--settle` seconds and
prints, per cluster, PSS and RSS (from /proc/PID/smaps_rollup) of every process the cluster runs
(the daemon's process tree), then per kind (daemon, app twins, Envoys, Prometheus, and "other":
processes outside any pod other than Envoys, i.e. the twins' fork server) with
the totals, without and with Prometheus (target: PSS <= 300 MB for the student cluster; the
Prometheus addon is the cluster's telemetry, so the total with it is the one the target is held
to), and ratios against the empty cluster.

PSS splits each shared page between the processes that map it (the Envoy binary, pages a forked
twin still shares with its parent), so it adds up; RSS counts shared pages once per process.
PSS also splits pages with processes outside the cluster (other clusters' Envoys share the
binary), so it falls as a host gets busier: the bench prints USS (pages only that process maps)
and an estimate of the cluster's PSS on a host of its own — the USS of its processes plus, per
mapped file (and for anonymous memory shared after fork), the most any of them shares.

Run: `.venv/bin/python bench/memory.py [--settle S] [--processes]`
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for `labs`
sys.path.insert(0, str(Path(__file__).resolve().parent))  # this directory, for `common`

from common import BOOKINFO_GATEWAY, ProcessMemory, cluster_memory

from labs.cluster import EmbeddedCluster, kubectl_binary

NAMESPACE = "bookinfo"
MANIFESTS = Path(__file__).resolve().parents[1] / "labs" / "manifests"
READY_TIMEOUT = 180
REQUESTS = 20
TARGET_PSS_MB = 300
KINDS = ("daemon", "twins", "envoy", "other", "prometheus")


def kubectl(cluster: EmbeddedCluster, *args: str,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([kubectl_binary(), f"--kubeconfig={cluster.kubeconfig}", *args],
                          input=input, capture_output=True, text=True, check=True,
                          timeout=READY_TIMEOUT)


def deploy_bookinfo(cluster: EmbeddedCluster) -> None:
    """Bookinfo, curl and the bookinfo Gateway in an injected namespace, every Deployment
    Available, then traffic: productpage through the ingress gateway and from the curl pod."""
    ns = f"--namespace={NAMESPACE}"
    kubectl(cluster, "create", "namespace", NAMESPACE)
    kubectl(cluster, "label", "namespace", NAMESPACE, "istio-injection=enabled")
    kubectl(cluster, ns, "apply", "-f", str(MANIFESTS / "bookinfo.yaml"),
            "-f", str(MANIFESTS / "curl.yaml"), "-f", "-",
            input=yaml.safe_dump_all(BOOKINFO_GATEWAY))
    kubectl(cluster, ns, "wait", "--for=condition=Available", "deployment", "--all",
            f"--timeout={READY_TIMEOUT}s")
    port = kubectl(cluster, "-n", "istio-system", "get", "service", "istio-ingressgateway",
                   "-o", 'jsonpath={.spec.ports[?(@.name=="http2")].nodePort}').stdout.strip()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline, served = time.monotonic() + READY_TIMEOUT, 0
    while served < REQUESTS:  # every reviews version gets some of them
        try:
            with opener.open(f"http://127.0.0.1:{port}/productpage", timeout=5) as response:
                served += response.status == 200
        except (OSError, urllib.error.URLError):
            if time.monotonic() > deadline:
                raise SystemExit("no 200 through the ingress gateway") from None
            time.sleep(0.1)
    kubectl(cluster, ns, "exec", "deploy/curl", "--", "curl", "-s", "-o", "/dev/null",
            "http://productpage:9080/productpage")


def kind_of(process: ProcessMemory, daemon: int) -> str:
    if process.pid == daemon:
        return "daemon"
    if process.comm in ("envoy", "prometheus"):
        return process.comm
    return "twins" if process.owner else "other"


def shared_kb(pid: int) -> dict[str, int]:
    """Shared (clean + dirty) kB per mapping name of one process ("" = anonymous memory)."""
    out: dict[str, int] = {}
    name = ""
    try:
        lines = Path(f"/proc/{pid}/smaps").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        fields = line.split()
        if "-" in fields[0] and not fields[0].endswith(":"):
            name = fields[5] if len(fields) > 5 else ""
        elif fields[0] in ("Shared_Clean:", "Shared_Dirty:"):
            out[name] = out.get(name, 0) + int(fields[1])
    return out


@dataclass
class Measured:
    daemon: int
    processes: list[ProcessMemory]
    alone_kb: int  # estimated PSS on a host of its own, without Prometheus
    alone_all_kb: int  # the same with Prometheus


def alone_kb(processes: list[ProcessMemory]) -> int:
    """Estimated PSS of `processes` on a host of their own: their USS plus, per mapping, the
    most any of them shares."""
    shared: dict[str, int] = {}
    for p in processes:
        for name, kb in shared_kb(p.pid).items():
            shared[name] = max(shared.get(name, 0), kb)
    return sum(p.uss_kb for p in processes) + sum(shared.values())


def measure(cluster: EmbeddedCluster, settle: float) -> Measured:
    time.sleep(settle)
    pid = cluster.status().pid
    assert pid is not None, f"{cluster.name} is not running"
    processes = cluster_memory(pid)
    counted = [p for p in processes if kind_of(p, pid) != "prometheus"]
    return Measured(pid, processes, alone_kb(counted), alone_kb(processes))


def totals(m: Measured) -> dict[str, tuple[int, int, int, int]]:
    """kind -> (processes, RSS kB, PSS kB, USS kB)."""
    out: dict[str, tuple[int, int, int, int]] = {}
    for p in m.processes:
        kind = kind_of(p, m.daemon)
        count, rss, pss, uss = out.get(kind, (0, 0, 0, 0))
        out[kind] = (count + 1, rss + p.rss_kb, pss + p.pss_kb, uss + p.uss_kb)
    return out


def cluster_total(m: Measured, prometheus: bool = False) -> tuple[float, float, float]:
    """(RSS MB, PSS MB, estimated PSS alone MB) of everything, Prometheus only if asked."""
    kept = [v for k, v in totals(m).items() if prometheus or k != "prometheus"]
    return (sum(v[1] for v in kept) / 1024, sum(v[2] for v in kept) / 1024,
            (m.alone_all_kb if prometheus else m.alone_kb) / 1024)


def report(name: str, m: Measured, each: bool) -> None:
    by_kind = totals(m)
    rss, pss, alone = cluster_total(m)
    all_rss, all_pss, all_alone = cluster_total(m, prometheus=True)
    print(f"\n== {name}, {len(m.processes)} processes: with Prometheus PSS {all_pss:.0f} MB "
          f"(alone on a host: ~{all_alone:.0f} MB), RSS {all_rss:.0f} MB; without it PSS "
          f"{pss:.0f} MB (~{alone:.0f} MB alone), RSS {rss:.0f} MB")
    for kind in KINDS:
        if kind in by_kind:
            count, kind_rss, kind_pss, kind_uss = by_kind[kind]
            print(f"  {kind:10s} {count:3d}  PSS {kind_pss / 1024:6.1f} MB  "
                  f"USS {kind_uss / 1024:6.1f} MB  RSS {kind_rss / 1024:6.1f} MB  "
                  f"PSS each {kind_pss / 1024 / count:5.1f} MB")
    if each:
        for p in sorted(m.processes, key=lambda p: (kind_of(p, m.daemon), p.owner)):
            print(f"    {p.pid:7d} {kind_of(p, m.daemon):10s} {p.comm:15s} "
                  f"{p.owner or '-':45s} PSS {p.pss_kb / 1024:6.1f}  USS "
                  f"{p.uss_kb / 1024:6.1f}  RSS {p.rss_kb / 1024:6.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds between the last request and the measurement")
    parser.add_argument("--processes", action="store_true", help="list every process too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="meshlab-memory-") as root:
        empty = EmbeddedCluster("empty", root)
        try:
            empty.up()
            base = measure(empty, args.settle)
        finally:
            empty.down()
        student = EmbeddedCluster("student", root)
        try:
            student.up()
            deploy_bookinfo(student)
            loaded = measure(student, args.settle)
        finally:
            student.down()
    report("empty cluster (baseline)", base, args.processes)
    report("Bookinfo + curl meshed", loaded, args.processes)
    for prometheus in (True, False):
        base_rss, base_pss, base_alone = cluster_total(base, prometheus)
        rss, pss, alone = cluster_total(loaded, prometheus)
        print(f"\nstudent cluster {'with' if prometheus else 'without'} Prometheus: PSS "
              f"{pss:.0f} MB, alone on a host ~{alone:.0f} MB (target <= {TARGET_PSS_MB} MB: "
              f"{pss / TARGET_PSS_MB:.2f}x / {alone / TARGET_PSS_MB:.2f}x the target), RSS "
              f"{rss:.0f} MB; {pss / max(base_pss, 1):.1f}x the empty cluster's PSS "
              f"({base_pss:.0f} MB; alone ~{base_alone:.0f} MB), {rss / max(base_rss, 1):.1f}x "
              f"its RSS ({base_rss:.0f} MB)")


if __name__ == "__main__":
    main()
