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

import http.client
import json
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labs.cluster import EmbeddedCluster, kubectl_binary

STORED_OBJECTS = 1000
SAMPLES = 200


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class Client:
    """One kept-alive HTTPS connection with the cluster's token."""

    def __init__(self, kubeconfig: Path, ca_file: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        server = config["clusters"][0]["cluster"]["server"]
        host, port = server.removeprefix("https://").split(":")
        self.token = config["users"][0]["user"]["token"]
        context = ssl.create_default_context(cafile=str(ca_file))
        self.conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)

    def request(self, method: str, path: str, body: object | None = None,
                content_type: str = "application/json") -> tuple[int, float]:
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": content_type}
        payload = json.dumps(body).encode() if body is not None else None
        start = time.perf_counter()
        self.conn.request(method, path, body=payload, headers=headers)
        response = self.conn.getresponse()
        response.read()
        return response.status, (time.perf_counter() - start) * 1000


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
            client = Client(kubeconfig, cluster.paths.ca_cert)
            base = "/api/v1/namespaces/default/configmaps"
            for i in range(STORED_OBJECTS):
                client.request("POST", base, {"metadata": {"name": f"fill-{i}"},
                                              "data": {"k": "v" * 64}})
            noop = timed(lambda i: client.request("GET", "/readyz")[1], SAMPLES)
            create = timed(lambda i: client.request(
                "POST", base, {"metadata": {"name": f"bench-{i}"}, "data": {"k": "v"}})[1],
                SAMPLES)
            get = timed(lambda i: client.request("GET", f"{base}/bench-{i}")[1], SAMPLES)
            patch = timed(lambda i: client.request(
                "PATCH", f"{base}/bench-{i}", {"data": {"k": str(i)}},
                "application/merge-patch+json")[1], SAMPLES)
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
