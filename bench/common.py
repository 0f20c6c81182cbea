"""What the benchmarks share: percentiles and a kept-alive HTTPS client for the API server.

The bench scripts run as `python bench/<name>.py`, so this directory is on `sys.path` and they
import it as `common`.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from pathlib import Path

import yaml


def percentile(values: list[float], q: float) -> float:
    """The `q`-th percentile (0-100) of `values`, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class Api:
    """One kept-alive HTTPS connection to the API server with the cluster's token."""

    def __init__(self, kubeconfig: Path, ca_file: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        server = config["clusters"][0]["cluster"]["server"]
        host, port = server.removeprefix("https://").split(":")
        self.token = config["users"][0]["user"]["token"]
        context = ssl.create_default_context(cafile=str(ca_file))
        self.conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)

    def request(self, method: str, path: str, body: object | None = None,
                content_type: str = "application/json") -> tuple[int, bytes]:
        """(status, body) of one request."""
        status, data, _ = self.timed_request(method, path, body, content_type)
        return status, data

    def timed_request(self, method: str, path: str, body: object | None = None,
                      content_type: str = "application/json") -> tuple[int, bytes, float]:
        """(status, body, ms): the time covers sending and reading the whole response, not
        encoding the body."""
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": content_type}
        payload = json.dumps(body).encode() if body is not None else None
        start = time.perf_counter()
        self.conn.request(method, path, body=payload, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        return response.status, data, (time.perf_counter() - start) * 1000
