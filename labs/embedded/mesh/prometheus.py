"""A real Prometheus for the embedded cluster, as Istio's `prometheus` addon, so the course's
PromQL and Istio's commands (`kubectl -n istio-system port-forward svc/prometheus 9090:9090`,
`istioctl dashboard prometheus`) work unchanged.

The cluster installs the addon (labs/manifests/prometheus.yaml, from istio/istio
samples/addons/prometheus.yaml) into istio-system. Its `prom/prometheus` container runs this
module (`python -m labs.embedded.mesh.prometheus --binary B --port P`), which writes a scrape
configuration into the container's directory and becomes (`execv`) the host's real `prometheus`
binary, listening on 127.0.0.1 at the pod's host port for 9090, so the container's process,
logs and memory are Prometheus' own. The configuration scrapes two file_sd target lists the
control plane keeps in that directory (`PrometheusTargets`, an observer of every pass, rewriting
a file atomically and only on change): the telemetry server (Istio's standard metrics) once a
second, so a lab's PromQL sees its traffic a moment after it was sent, and the Envoy admin
`/stats/prometheus` of every sidecar and gateway every 15 s (upstream's interval), limited to the
Envoy stats a real Istio proxy exposes (its default stats inclusion list, plus a pod's
`sidecar.istio.io/statsInclusion*` annotations), not the ~4000 series per Envoy this Envoy
keeps. Scraping every Envoy's full stats each second cost a student's idle cluster about 6 % of
a core (Prometheus and the Envoys' stats rendering); `pilot-agent request GET stats` and the
admin API still show every stat. Upstream discovers the same targets with kubernetes_sd, which
cannot see pods that are host processes.

linkerd-viz's Prometheus (the same container in namespace `linkerd-viz`, installed by `linkerd
viz install`) gets upstream's `linkerd-proxy` and `prometheus` jobs instead (linkerd/linkerd2
viz/charts/linkerd-viz/templates/prometheus.yaml): every pod with a `linkerd-proxy` container
whose `linkerd.io/control-plane-ns` is `linkerd`, at the host port of its `linkerd-admin` port
(4191) `/metrics`, labelled as upstream's relabelling leaves it (`linkerd_proxy_labels`), every
10 s (upstream's `globalConfig.scrape_interval`; kept, not measured shorter here, since
`linkerd viz stat` reads rates over windows of at least 15 s). Each Prometheus' config has
every job, and the control plane gives each container only its own targets (the others' lists
stay empty), so Istio's addon never scrapes Linkerd's proxies and viz's never Istio's.

Without a `prometheus` binary on the daemon's PATH the container prints
`prometheus_missing_hint()` to its log and exits 1 (CrashLoopBackOff), and the pod's `Simulated`
event is a Warning with the same hint; the rest of the cluster runs as usual. The daemon
publishes the addon pod's host port as `prometheus` in its endpoint.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ..apps.catalog import repository
from ..apps.http import add_port_option
from ..apps.prometheus import IMAGE_REPOSITORY, prometheus_missing_hint
from ..workload import (
    LINKERD_PROXY_CONTAINER,
    host_ports,
    pod_dir_name,
    proxy_ports,
    running_containers,
    workload_name,
)
from .kube_state import KubeState
from .writer import write_atomic

log = logging.getLogger(__name__)
Obj = dict[str, Any]
# the addon's pod: namespace, the label `istioctl dashboard prometheus` selects it by, its port
ADDON_NAMESPACE = "istio-system"
ADDON_LABEL = ("app.kubernetes.io/name", "prometheus")
VIZ_NAMESPACE = "linkerd-viz"  # linkerd-viz's Prometheus: the linkerd-proxy job
LINKERD_CONTROL_PLANE_NS = "linkerd"
LINKERD_ADMIN_PORT_NAME = "linkerd-admin"
LINKERD_SCRAPE_INTERVAL = "10s"  # viz values.yaml prometheus.globalConfig.scrape_interval
SERVER_PORT = 9090
SCRAPE_INTERVAL = "1s"  # the telemetry server: Istio's standard metrics, what labs query
PROXY_SCRAPE_INTERVAL = "15s"  # the Envoys' own stats, as often as upstream's addon scrapes
# Istio's default Envoy stats inclusion list (istio/istio pkg/bootstrap/config.go: v2Prefixes,
# requiredEnvoyStatsMatcherInclusionPrefixes, v2Suffix; the RBAC and drain suffixes; the
# VirtualService stat_prefix regex), extended per pod by these annotations (comma-separated).
STATS_INCLUSION = {
    "sidecar.istio.io/statsInclusionPrefixes": (
        "reporter=", "cluster_manager", "listener_manager", "server", "cluster.xds-grpc",
        "wasm", "component"),
    "sidecar.istio.io/statsInclusionSuffixes": (
        "rbac.allowed", "rbac.denied", "shadow_allowed", "shadow_denied",
        "downstream_cx_active"),
    "sidecar.istio.io/statsInclusionRegexps": (r"vhost\..*\.route\..*",),
}
CONTROL_PLANE_NS_LABEL = "linkerd.io/control-plane-ns"
RETENTION = "1d"
TARGETS_DIR = "targets"
TELEMETRY_TARGETS = "telemetry.json"
ENVOY_TARGETS = "envoy.json"
LINKERD_TARGETS = "linkerd-proxy.json"
SELF_TARGETS = "prometheus.json"
CONFIG_FILE = "prometheus.yml"
DATA_DIR = "data"


class PrometheusError(RuntimeError):
    """Prometheus is not there, or rejected a query."""


def scrape_config(targets_dir: Path) -> Obj:
    """What the addon's Prometheus scrapes: both target lists are file_sd files in
    `targets_dir`, which the control plane rewrites."""
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": [
            {"job_name": "istio-mesh", "metrics_path": "/metrics",
             "file_sd_configs": [{"files": [str(targets_dir / TELEMETRY_TARGETS)]}]},
            {"job_name": "envoy-stats", "metrics_path": "/stats/prometheus",
             "scrape_interval": PROXY_SCRAPE_INTERVAL,
             "file_sd_configs": [{"files": [str(targets_dir / ENVOY_TARGETS)]}]},
            {"job_name": "prometheus", "scrape_interval": LINKERD_SCRAPE_INTERVAL,
             "file_sd_configs": [{"files": [str(targets_dir / SELF_TARGETS)]}]},
            {"job_name": "linkerd-proxy", "metrics_path": "/metrics",
             "scrape_interval": LINKERD_SCRAPE_INTERVAL,
             "file_sd_configs": [{"files": [str(targets_dir / LINKERD_TARGETS)]}]},
        ],
    }


def _listed(value: object) -> list[str]:
    return [part.strip() for part in str(value or "").split(",") if part.strip()]


def stats_filter(pod: Obj) -> str:
    """The regex (Envoy's `/stats/prometheus?filter=`) of the stats a real Istio proxy of `pod`
    would expose: Istio's inclusion list plus the pod's annotations; prefixes and suffixes are
    literal, regexps match a whole stat name, as in Envoy's StatsMatcher."""
    annotations = pod["metadata"].get("annotations") or {}
    prefixes, suffixes, regexps = (
        [*defaults, *_listed(annotations.get(key))] for key, defaults in STATS_INCLUSION.items())
    return "|".join([*(f"^{re.escape(p)}" for p in prefixes),
                     *(f"{re.escape(s)}$" for s in suffixes),
                     *(f"^(?:{r})$" for r in regexps)])


def telemetry_targets(telemetry_port: int) -> list[Obj]:
    return [{"targets": [f"127.0.0.1:{telemetry_port}"]}]


def proxy_targets(state: KubeState) -> list[Obj]:
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
        group_labels["__param_filter"] = stats_filter(pod)
        groups.append({"targets": [f"127.0.0.1:{admin}"], "labels": group_labels})
    return sorted(groups, key=lambda g: (g["labels"]["namespace"], g["labels"]["pod"]))


def _label_name(name: str) -> str:
    """A Kubernetes label's name as kubernetes_sd's `__meta_kubernetes_pod_label_*` has it."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def linkerd_proxy_labels(pod: Obj) -> dict[str, str]:
    """The target labels upstream's `linkerd-proxy` relabel_configs leave: `namespace`, `pod`,
    `k8s_job` from `linkerd.io/proxy-job`, `linkerd.io/proxy-*` -> `*` (so `deployment`; those
    sources are then dropped), `linkerd.io/*` -> `*`, then every other pod label with
    `linkerd_io_` stripped (the last labelmap wins, as in Prometheus)."""
    meta = pod["metadata"]
    raw = {_label_name(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    out = {"namespace": meta.get("namespace", ""), "pod": meta["name"]}
    if "linkerd_io_proxy_job" in raw:
        out["k8s_job"] = raw.pop("linkerd_io_proxy_job")
    for name, value in raw.items():
        if name.startswith("linkerd_io_proxy_"):
            out[name.removeprefix("linkerd_io_proxy_")] = value
    for name, value in raw.items():
        if name.startswith("linkerd_io_") and not name.startswith("linkerd_io_proxy_"):
            out[name.removeprefix("linkerd_io_")] = value
    for name, value in raw.items():
        if not name.startswith("linkerd_io_proxy_"):
            out[name.removeprefix("linkerd_io_")] = value
    return out


def linkerd_proxy_targets(state: KubeState) -> list[Obj]:
    """One file_sd group per pod upstream's `linkerd-proxy` job keeps: Pending or Running, a
    `linkerd-proxy` container with a `linkerd-admin` port, control plane `linkerd`."""
    groups = []
    for pod in state.pods:
        meta = pod["metadata"]
        if meta.get("deletionTimestamp") or (pod.get("status") or {}).get("phase") not in (
                "Pending", "Running"):
            continue
        if (meta.get("labels") or {}).get(CONTROL_PLANE_NS_LABEL) != LINKERD_CONTROL_PLANE_NS:
            continue
        admin = [str(port["containerPort"]) for container in running_containers(pod)
                 if container.get("name") == LINKERD_PROXY_CONTAINER
                 for port in container.get("ports") or []
                 if port.get("name") == LINKERD_ADMIN_PORT_NAME]
        public = host_ports(pod)
        if not admin or admin[0] not in public:
            continue
        groups.append({"targets": [f"127.0.0.1:{public[admin[0]]}"],
                       "labels": linkerd_proxy_labels(pod)})
    return sorted(groups, key=lambda g: (g["labels"]["namespace"], g["labels"]["pod"]))


def server_containers(state: KubeState) -> list[tuple[Obj, str]]:
    """(pod, container name) of every running `prom/prometheus` container whose pod the
    runtime has admitted (its host ports are allocated, so its directory is about to exist)."""
    found = []
    for pod in state.pods:
        if pod["metadata"].get("deletionTimestamp") or not host_ports(pod):
            continue
        for container in (pod.get("spec") or {}).get("containers") or []:
            if repository(container.get("image", "")) == IMAGE_REPOSITORY:
                found.append((pod, container["name"]))
    return found


def addon_port(state: KubeState) -> int | None:
    """The host port of the addon pod's 9090 (the newest pod, during a re-creation)."""
    key, value = ADDON_LABEL
    pods = [pod for pod, _ in server_containers(state)
            if pod["metadata"].get("namespace") == ADDON_NAMESPACE
            and (pod["metadata"].get("labels") or {}).get(key) == value
            and str(SERVER_PORT) in host_ports(pod)]
    if not pods:
        return None
    newest = max(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""))
    return host_ports(newest)[str(SERVER_PORT)]


def _dump(groups: list[Obj]) -> str:
    return json.dumps(groups, indent=1) + "\n"


class PrometheusTargets:
    """A control-plane observer: keeps the target files of every Prometheus container current,
    and knows the addon's port (`port`), calling `on_change` when it changes."""

    def __init__(self, pods_dir: Path, telemetry_port: int) -> None:
        self.pods_dir = Path(pods_dir)
        self.telemetry_port = telemetry_port
        self.port: int | None = None
        self.on_change: Callable[[], None] | None = None
        self._written: dict[Path, str] = {}

    def targets_dir(self, pod: Obj, container: str) -> Path:
        """Inside the container's directory (the runtime's pod directory / container name)."""
        return self.pods_dir / pod_dir_name(pod) / container / TARGETS_DIR

    def update(self, state: KubeState) -> None:
        istio = {TELEMETRY_TARGETS: _dump(telemetry_targets(self.telemetry_port)),
                 ENVOY_TARGETS: _dump(proxy_targets(state)),
                 LINKERD_TARGETS: _dump([]), SELF_TARGETS: _dump([])}
        linkerd = {TELEMETRY_TARGETS: _dump([]), ENVOY_TARGETS: _dump([]),
                   LINKERD_TARGETS: _dump(linkerd_proxy_targets(state))}
        written: dict[Path, str] = {}
        for pod, container in server_containers(state):
            files = istio
            if pod["metadata"].get("namespace") == VIZ_NAMESPACE:
                own = host_ports(pod).get(str(SERVER_PORT))
                files = {**linkerd, SELF_TARGETS: _dump(
                    [{"targets": [f"127.0.0.1:{own}"]}] if own else [])}
            for name, text in files.items():
                path = self.targets_dir(pod, container) / name
                if self._written.get(path) != text:
                    write_atomic(path, text)
                written[path] = text
        self._written = written
        port = addon_port(state)
        if port != self.port:
            self.port = port
            if self.on_change is not None:
                self.on_change()


# -- the prometheus-server container -------------------------------------------------------

def _create_empty(path: Path) -> None:
    """`[]` in `path` unless the control plane has written it already: written aside and
    linked in, so Prometheus never reads a half-written file and nothing is overwritten."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("[]\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def prepare(home: Path, binary: str, port: int) -> list[str]:
    """Write the configuration (and empty target lists, until the control plane writes them)
    into the container's directory; returns the Prometheus command line."""
    targets = home / TARGETS_DIR
    targets.mkdir(parents=True, exist_ok=True)
    (home / DATA_DIR).mkdir(exist_ok=True)
    for name in (TELEMETRY_TARGETS, ENVOY_TARGETS, LINKERD_TARGETS, SELF_TARGETS):
        _create_empty(targets / name)
    write_atomic(home / CONFIG_FILE, yaml.safe_dump(scrape_config(targets), sort_keys=False))
    return [binary, f"--config.file={home / CONFIG_FILE}",
            f"--storage.tsdb.path={home / DATA_DIR}",
            f"--storage.tsdb.retention.time={RETENTION}",
            f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle"]


def main(argv: list[str] | None = None) -> None:
    """The `prom/prometheus` container: configure, then become Prometheus."""
    parser = argparse.ArgumentParser(prog="prometheus-server", description=main.__doc__)
    parser.add_argument("--binary", help="the prometheus binary; absent when the daemon "
                        "found none on its PATH")
    add_port_option(parser)
    args = parser.parse_args(argv)
    if not args.binary:
        sys.exit(f"prometheus-server: cannot start: {prometheus_missing_hint()}")
    if not args.port:
        sys.exit("prometheus-server: the container declares no TCP containerPort to listen on; "
                 f"declare `ports: [{{containerPort: {SERVER_PORT}}}]` as the addon does")
    home = Path(os.environ.get("HOME") or os.getcwd()).resolve()
    command = prepare(home, args.binary, args.port[0])
    sys.stdout.flush()
    os.execv(args.binary, command)


# -- queries -------------------------------------------------------------------------------

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
            "(`meshlab status`) and the addon's pod Ready (`kubectl get pods -n "
            "istio-system`)?") from None
    if body.get("status") != "success":
        raise PrometheusError(f"PromQL {promql!r} failed: {body.get('error', body)}")
    return list(body["data"]["result"])


if __name__ == "__main__":
    main()
