"""Does the embedded Prometheus (Istio's addon, a pod in istio-system) scrape every proxy: the
sidecars and the gateways (istio-ingressgateway), each at its Envoy admin `/stats/prometheus`
with kubernetes_sd-like labels, through target files the control plane keeps in the container's
directory?"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from labs.embedded.apps.prometheus import twin_argv
from labs.embedded.mesh.istio.state import MeshState
from labs.embedded.mesh.kube_state import Obj
from labs.embedded.mesh.prometheus import (
    ADDON_NAMESPACE,
    PrometheusTargets,
    prepare,
    proxy_targets,
    stats_filter,
)
from labs.embedded.workload import HOST_PORTS, PROXY_PORTS, pod_dir_name


def proxy_pod(name: str, namespace: str, admin: int, labels: dict[str, str],
              args: list[str]) -> Obj:
    return {"metadata": {"name": name, "namespace": namespace, "uid": name, "labels": labels,
                         "annotations": {PROXY_PORTS: json.dumps({"admin": admin})}},
            "spec": {"containers": [{"name": "istio-proxy", "args": args}]}}


def test_sidecars_and_gateways_are_targets() -> None:
    sidecar = proxy_pod("httpbin-1", "default", 15001, {"app": "httpbin", "version": "v1"},
                        ["proxy", "sidecar"])
    gateway = proxy_pod("istio-ingressgateway-1", "istio-system", 15002,
                        {"app": "istio-ingressgateway", "istio": "ingressgateway"},
                        ["proxy", "router"])
    unstarted = proxy_pod("pending", "default", 0, {}, ["proxy", "router"])
    groups = proxy_targets(MeshState(pods=[gateway, sidecar, unstarted]))
    default_filter = stats_filter(sidecar)
    assert groups == [
        {"targets": ["127.0.0.1:15001"],
         "labels": {"namespace": "default", "pod": "httpbin-1", "workload": "httpbin-1",
                    "app": "httpbin", "version": "v1", "__param_filter": default_filter}},
        {"targets": ["127.0.0.1:15002"],
         "labels": {"namespace": "istio-system", "pod": "istio-ingressgateway-1",
                    "workload": "istio-ingressgateway-1", "app": "istio-ingressgateway",
                    "__param_filter": default_filter}}]


ENVOY_STATS = ("server.uptime", "cluster_manager.cds.update_success",
               "listener_manager.total_listeners_active", "http.inbound_9080.rbac.allowed",
               "listener.127.0.0.1_15006.downstream_cx_active",
               "vhost.reviews.route.canary.upstream_rq_total",
               "cluster.outbound|9080||reviews.default.svc.cluster.local.upstream_rq_total",
               "cluster.outbound|9080||reviews.default.svc.cluster.local.upstream_rq_time",
               "http.inbound_9080.downstream_rq_time")


def test_envoy_stats_are_istios_default_inclusion_list_plus_annotations() -> None:
    """Does Prometheus ask each proxy only for the stats a real Istio proxy exposes (its
    default inclusion list), widened by the pod's `sidecar.istio.io/statsInclusion*`
    annotations as in Istio?"""
    pod = proxy_pod("httpbin-1", "default", 15001, {}, ["proxy", "sidecar"])
    kept = {name for name in ENVOY_STATS if re.search(stats_filter(pod), name)}
    assert kept == {"server.uptime", "cluster_manager.cds.update_success",
                    "listener_manager.total_listeners_active",
                    "http.inbound_9080.rbac.allowed",
                    "listener.127.0.0.1_15006.downstream_cx_active",
                    "vhost.reviews.route.canary.upstream_rq_total"}
    pod["metadata"]["annotations"].update({
        "sidecar.istio.io/statsInclusionPrefixes": "cluster.outbound",
        "sidecar.istio.io/statsInclusionSuffixes": "downstream_rq_time",
        "sidecar.istio.io/statsInclusionRegexps": "server.*"})
    widened = {name for name in ENVOY_STATS if re.search(stats_filter(pod), name)}
    assert widened == set(ENVOY_STATS)


def prometheus_pod(name: str, namespace: str, port: int, labels: dict[str, str]) -> Obj:
    return {"metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}",
                         "labels": labels, "creationTimestamp": "2026-01-01T00:00:00Z",
                         "annotations": {HOST_PORTS: json.dumps({"9090": port})}},
            "spec": {"containers": [{"name": "prometheus-server",
                                     "image": "docker.io/prom/prometheus:v3.7.3"}]}}


def test_target_files_follow_the_mesh_and_the_addon_port_is_published(tmp_path: Path) -> None:
    """Does every Prometheus container get the telemetry server and the proxies as file_sd
    targets in its own directory, rewritten only on change, and is the istio-system addon's
    host port announced when it appears, changes or goes?"""
    sidecar = proxy_pod("httpbin-1", "default", 15001, {"app": "httpbin"}, ["proxy", "sidecar"])
    addon = prometheus_pod("prometheus-1", ADDON_NAMESPACE, 41000,
                           {"app.kubernetes.io/name": "prometheus"})
    own = prometheus_pod("mine", "default", 42000, {})  # a learner's own Prometheus
    targets = PrometheusTargets(tmp_path, telemetry_port=15999)
    announced: list[int | None] = []
    targets.on_change = lambda: announced.append(targets.port)

    targets.update(MeshState(pods=[sidecar, addon, own]))
    assert announced == [41000]
    for pod in (addon, own):
        directory = targets.targets_dir(pod, "prometheus-server")
        assert directory.parent == tmp_path / pod_dir_name(pod) / "prometheus-server"
        assert json.loads((directory / "telemetry.json").read_text()) == [
            {"targets": ["127.0.0.1:15999"]}]
        assert [g["targets"] for g in json.loads((directory / "envoy.json").read_text())] == [
            ["127.0.0.1:15001"]]

    envoy = targets.targets_dir(addon, "prometheus-server") / "envoy.json"
    envoy.unlink()  # unchanged content is not written again
    targets.update(MeshState(pods=[sidecar, addon, own]))
    assert not envoy.exists() and announced == [41000]
    targets.update(MeshState(pods=[addon, own]))  # the sidecar went: its target goes
    assert json.loads(envoy.read_text()) == []

    replacement = prometheus_pod("prometheus-2", ADDON_NAMESPACE, 43000,
                                 {"app.kubernetes.io/name": "prometheus"})
    targets.update(MeshState(pods=[replacement]))
    targets.update(MeshState(pods=[]))
    assert announced == [41000, 43000, None]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="no promtool (Debian: prometheus)")
def test_container_configuration_is_valid_and_keeps_written_targets(tmp_path: Path) -> None:
    """Does the container write a configuration `promtool check config` accepts, scraping the
    two target files, without overwriting targets the control plane wrote first?"""
    (tmp_path / "targets").mkdir()
    written = '[{"targets": ["127.0.0.1:15999"]}]\n'
    (tmp_path / "targets" / "telemetry.json").write_text(written)
    command = prepare(tmp_path, "/usr/bin/prometheus", 41000)
    assert command[0] == "/usr/bin/prometheus"
    assert "--web.listen-address=127.0.0.1:41000" in command
    config = next(a.split("=", 1)[1] for a in command if a.startswith("--config.file="))
    checked = subprocess.run(["promtool", "check", "config", config], capture_output=True,
                             text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert (tmp_path / "targets" / "telemetry.json").read_text() == written
    assert (tmp_path / "targets" / "envoy.json").read_text() == "[]\n"
    jobs = yaml.safe_load(Path(config).read_text())["scrape_configs"]
    assert [(j["job_name"], j["file_sd_configs"][0]["files"]) for j in jobs] == [
        ("istio-mesh", [str(tmp_path / "targets" / "telemetry.json")]),
        ("envoy-stats", [str(tmp_path / "targets" / "envoy.json")]),
        # linkerd-viz's jobs: the control plane fills them in for that Prometheus only
        ("prometheus", [str(tmp_path / "targets" / "prometheus.json")]),
        ("linkerd-proxy", [str(tmp_path / "targets" / "linkerd-proxy.json")])]


def test_without_a_binary_the_container_exits_with_the_hint() -> None:
    """Does the container's command, given no binary, exit 1 saying how to install one?"""
    result = subprocess.run(twin_argv(None)([41000]), capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 1
    assert "apt-get install prometheus" in result.stderr
