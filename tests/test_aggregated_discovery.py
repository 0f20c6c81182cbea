"""Does the API server answer aggregated discovery (apidiscovery.k8s.io/v2) when asked, with the
same resources as the per-group-version lists, so that kubectl learns the cluster in two
requests instead of one per group version?"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from labs.cluster import ClusterRef, kubectl_binary
from labs.embedded.apiserver.discovery import (
    aggregated_discovery,
    api_resource_list,
    wants_aggregated,
)
from labs.embedded.apiserver.resources import ResourceRegistry

# what client-go's discovery client sends to /api and /apis (k8s.io/client-go discovery)
CLIENT_GO_ACCEPT = ("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
                    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,"
                    "application/json")


def test_only_clients_that_ask_get_the_aggregated_list() -> None:
    assert wants_aggregated(CLIENT_GO_ACCEPT)
    assert not wants_aggregated("application/json")
    assert not wants_aggregated("")
    assert not wants_aggregated(
        "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList")


def test_aggregated_lists_match_the_group_version_lists() -> None:
    registry = ResourceRegistry()
    core = aggregated_discovery(registry, legacy=True)
    named = aggregated_discovery(registry, legacy=False)
    assert core["kind"] == named["kind"] == "APIGroupDiscoveryList"
    assert core["apiVersion"] == "apidiscovery.k8s.io/v2"
    assert [g["metadata"]["name"] for g in core["items"]] == [""]
    assert "" not in [g["metadata"]["name"] for g in named["items"]]
    for group in core["items"] + named["items"]:
        name = group["metadata"]["name"]
        for version in group["versions"]:
            legacy = api_resource_list(registry, name, version["version"])
            assert legacy is not None and version["freshness"] == "Current"
            listed = {r["resource"] for r in version["resources"]} | {
                f"{r['resource']}/{s['subresource']}" for r in version["resources"]
                for s in r.get("subresources", [])}
            assert listed == {e["name"] for e in legacy["resources"]}, (name, version)

    [v1] = core["items"][0]["versions"]
    pods = next(r for r in v1["resources"] if r["resource"] == "pods")
    assert pods["responseKind"] == {"group": "", "version": "v1", "kind": "Pod"}
    assert pods["scope"] == "Namespaced" and pods["singularResource"] == "pod"
    assert "po" in pods["shortNames"]
    apps = next(g for g in named["items"] if g["metadata"]["name"] == "apps")
    deployments = next(r for r in apps["versions"][0]["resources"]
                       if r["resource"] == "deployments")
    scale = next(s for s in deployments["subresources"] if s["subresource"] == "scale")
    assert scale["responseKind"] == {"group": "autoscaling", "version": "v1", "kind": "Scale"}


def test_kubectl_discovers_the_cluster_in_two_requests(cluster: ClusterRef,
                                                       tmp_path: Path) -> None:
    result = subprocess.run([kubectl_binary(), f"--kubeconfig={cluster.kubeconfig}",
                             f"--cache-dir={tmp_path}", "get", "ns", "-v=6"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^default\s+Active", result.stdout, re.MULTILINE)
    gets = re.findall(r'verb="GET" url="https://[^/]+(/[^"?]*)', result.stderr)
    assert gets == ["/api", "/apis", "/api/v1/namespaces"], gets
