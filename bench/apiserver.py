"""Benchmark of the embedded API server.

Prints, for a fresh cluster in a temporary state directory:
- `meshlab up` until the first successful `kubectl get ns` (target <= 1 s), against the baseline
  of `kubectl version --client` (what kubectl itself costs);
- create/get/patch latency p50/p95 of one ConfigMap with 1,000 objects stored (target p95 <=
  10 ms), against the baseline of `GET /readyz` on the same kept-alive connection;
- the daemon's RSS (target <= 100 MB).

Run: `.venv/bin/python bench/apiserver.py`
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for `labs`
sys.path.insert(0, str(Path(__file__).resolve().parent))  # this directory, for `common`

from common import Api, percentile

from labs.cluster import EmbeddedCluster, kubectl_binary

STORED_OBJECTS = 1000
SAMPLES = 200


def timed(fn, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    return [fn(i) for i in range(n)]


def main() -> None:
    kubectl = kubectl_binary()
    with tempfile.TemporaryDirectory() as root:
        cluster = EmbeddedCluster("bench", root)
        baseline_start = time.perf_counter()
        subprocess.run([kubectl, "version", "--client"], capture_output=True, check=True)
        kubectl_cost = time.perf_counter() - baseline_start

        start = time.perf_counter()
        kubeconfig = cluster.up()
        subprocess.run([kubectl, f"--kubeconfig={kubeconfig}", "get", "ns"],
                       capture_output=True, check=True)
        up_seconds = time.perf_counter() - start
        try:
            client = Api(kubeconfig, cluster.paths.ca_cert)
            base = "/api/v1/namespaces/default/configmaps"
            for i in range(STORED_OBJECTS):
                client.request("POST", base, {"metadata": {"name": f"fill-{i}"},
                                              "data": {"k": "v" * 64}})
            noop = timed(lambda i: client.timed_request("GET", "/readyz")[2], SAMPLES)
            create = timed(lambda i: client.timed_request(
                "POST", base, {"metadata": {"name": f"bench-{i}"}, "data": {"k": "v"}})[2],
                SAMPLES)
            get = timed(lambda i: client.timed_request("GET", f"{base}/bench-{i}")[2], SAMPLES)
            patch = timed(lambda i: client.timed_request(
                "PATCH", f"{base}/bench-{i}", {"data": {"k": str(i)}},
                "application/merge-patch+json")[2], SAMPLES)
            status = cluster.status()
            rss_kb = 0
            if status.pid:
                for line in Path(f"/proc/{status.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        rss_kb = int(line.split()[1])
        finally:
            cluster.down()

    noop_p50 = statistics.median(noop)
    print(f"meshlab up -> first kubectl get ns: {up_seconds:.2f} s "
          f"(target <= 1 s; baseline kubectl version --client {kubectl_cost:.2f} s, "
          f"ratio {up_seconds / kubectl_cost:.1f}x)")
    print(f"baseline GET /readyz: p50 {noop_p50:.2f} ms, p95 {percentile(noop, 95):.2f} ms")
    for name, values in (("create", create), ("get", get), ("patch", patch)):
        p50, p95 = statistics.median(values), percentile(values, 95)
        print(f"{name:6s} with {STORED_OBJECTS} stored: p50 {p50:.2f} ms, p95 {p95:.2f} ms "
              f"(target p95 <= 10 ms; p50 ratio to baseline {p50 / noop_p50:.1f}x)")
    print(f"daemon RSS: {rss_kb / 1024:.0f} MB (target <= 100 MB)")


if __name__ == "__main__":
    main()
