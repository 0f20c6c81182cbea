"""A real Prometheus for the embedded cluster, so the course's PromQL works unchanged.

When a `prometheus` binary is on PATH (Debian/Ubuntu: `apt-get install prometheus`), the daemon
starts it with the cluster: it scrapes the telemetry server (Istio's standard metrics) and the
Envoy admin `/stats/prometheus` of every sidecar and gateway (istio-ingressgateway), once a
second, listening on 127.0.0.1 only. The proxy targets are a file_sd file rewritten
(atomically, only on change) after each control plane pass; Prometheus watches it. Without a
binary nothing starts and `prometheus_missing_hint()` says how to get one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from ..runtime.process import start_helper, stop_helper
from .state import MeshState, proxy_ports, workload_name
from .writer import write_atomic

log = logging.getLogger(__name__)
Obj = dict[str, Any]
BINARY = "prometheus"
SCRAPE_INTERVAL = "1s"
RETENTION = "1d"
READY_TIMEOUT = 20.0
STOP_GRACE = 5.0


class PrometheusError(RuntimeError):
    """Prometheus is not there, did not start, or rejected a query."""


def prometheus_binary() -> str | None:
    return shutil.which(BINARY)


def prometheus_missing_hint() -> str:
    return ("no `prometheus` binary on PATH, so the embedded cluster runs without a Prometheus "
            "server (the metrics are still at the telemetry server's /metrics). To get PromQL: "
            "on Debian/Ubuntu run `sudo apt-get install prometheus` (then `sudo systemctl "
            "disable --now prometheus` if you do not want the system service); elsewhere "
            "download a release from https://prometheus.io/download/ and put the `prometheus` "
            "binary on PATH. Then restart the cluster: `meshlab down && meshlab up`.")


def scrape_config(telemetry_port: int, targets_file: Path) -> Obj:
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": [
            {"job_name": "istio-mesh", "metrics_path": "/metrics",
             "static_configs": [{"targets": [f"127.0.0.1:{telemetry_port}"]}]},
            {"job_name": "envoy-stats", "metrics_path": "/stats/prometheus",
             "file_sd_configs": [{"files": [str(targets_file)]}]},
        ],
    }


def proxy_targets(state: MeshState) -> list[Obj]:
    """One file_sd group per sidecar and gateway proxy: its Envoy admin, labelled like
    kubernetes_sd would."""
    groups = []
    for pod in [*state.sidecar_pods(), *state.gateway_pods()]:
        admin = proxy_ports(pod).get("admin")
        if not admin:
            continue
        meta = pod["metadata"]
        labels = meta.get("labels") or {}
        group_labels = {"namespace": meta.get("namespace", ""), "pod": meta["name"],
                        "workload": workload_name(pod)}
        for key in ("app", "version"):
            if labels.get(key):
                group_labels[key] = labels[key]
        groups.append({"targets": [f"127.0.0.1:{admin}"], "labels": group_labels})
    return sorted(groups, key=lambda g: (g["labels"]["namespace"], g["labels"]["pod"]))


class PrometheusServer:
    """Runs Prometheus on 127.0.0.1:`port` with its data in `<state_dir>/prometheus`."""

    def __init__(self, state_dir: Path, port: int, telemetry_port: int,
                 binary: str | None = None) -> None:
        self.dir = Path(state_dir) / "prometheus"
        self.port = port
        self.telemetry_port = telemetry_port
        self.binary = binary or prometheus_binary()
        self._proc: asyncio.subprocess.Process | None = None
        self._targets_text: str | None = None

    @property
    def targets_file(self) -> Path:
        return self.dir / "targets" / "envoy.json"

    @property
    def config_file(self) -> Path:
        return self.dir / "prometheus.yml"

    @property
    def log_path(self) -> Path:
        return self.dir / "prometheus.log"

    def update_targets(self, state: MeshState) -> None:
        """Rewrite the sidecar targets when they changed (a control-plane observer)."""
        text = json.dumps(proxy_targets(state), indent=1) + "\n"
        if text != self._targets_text:
            write_atomic(self.targets_file, text)
            self._targets_text = text

    async def start(self) -> None:
        """Start Prometheus and wait until it is ready to answer queries."""
        if self.binary is None:
            raise PrometheusError(prometheus_missing_hint())
        config = scrape_config(self.telemetry_port, self.targets_file)

        def prepare() -> None:
            (self.dir / "data").mkdir(parents=True, exist_ok=True)
            if self._targets_text is None:
                self._targets_text = "[]\n"
                write_atomic(self.targets_file, self._targets_text)
            write_atomic(self.config_file, yaml.safe_dump(config, sort_keys=False))
        await asyncio.to_thread(prepare)
        self._proc = await start_helper(
            [self.binary, f"--config.file={self.config_file}",
             f"--storage.tsdb.path={self.dir / 'data'}",
             f"--storage.tsdb.retention.time={RETENTION}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            self.log_path)
        await self._until_ready()
        log.info("Prometheus serving on 127.0.0.1:%d", self.port)

    async def _until_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        url = f"http://127.0.0.1:{self.port}/-/ready"
        while True:
            assert self._proc is not None
            if self._proc.returncode is not None or time.monotonic() > deadline:
                await self.stop()
                raise PrometheusError(
                    f"Prometheus did not become ready on 127.0.0.1:{self.port}; see "
                    f"{self.log_path}")
            if await asyncio.to_thread(_answers, url):
                return
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            await stop_helper(proc, STOP_GRACE)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def query(promql: str, port: int, timeout: float = 10) -> list[Obj]:
    """Run an instant PromQL query against the cluster's Prometheus; returns the `result`
    list of its HTTP API (each item: `metric` labels and `value` [time, "number"])."""
    url = (f"http://127.0.0.1:{port}/api/v1/query?"
           + urllib.parse.urlencode({"query": promql}))
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as err:  # 400/422: a bad query; the body says why
        try:
            body = json.loads(err.read())
        except ValueError:
            raise PrometheusError(f"Prometheus answered {err.code} to {promql!r}") from None
    except (OSError, ValueError) as err:
        raise PrometheusError(
            f"Prometheus on 127.0.0.1:{port} did not answer ({err}); is the cluster up "
            "(`meshlab status`)?") from None
    if body.get("status") != "success":
        raise PrometheusError(f"PromQL {promql!r} failed: {body.get('error', body)}")
    return list(body["data"]["result"])
