"""The `istioctl` command on the embedded cluster: each subcommand run as a subprocess against
Bookinfo with sidecars, and the layouts pinned against upstream's testdata
(tests/fixtures/istioctl/, copied from istio/istio release-1.30)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import poll
from mesh_support import (
    MeshNamespace,
    destination_rule,
    mesh_namespace_fixture,
    route,
    virtual_service,
    yaml_stream,
)

from labs.duration import human_duration
from labs.istioctl import status
from labs.istioctl.tabwriter import render

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "istioctl"
ISTIOCTL = str(Path(sys.executable).parent / "istioctl")

mesh = mesh_namespace_fixture("bookinfo", prefix="ictl")


def istioctl(mesh: MeshNamespace, *args: str, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith("MESHLAB_") and k != "KUBECONFIG"}
    environment["KUBECONFIG"] = str(mesh.cluster.kubeconfig)
    environment.update(env or {})
    return subprocess.run([ISTIOCTL, *args], capture_output=True, text=True, timeout=60,
                          env=environment)


@pytest.fixture(autouse=True)
def clean_routing(mesh: MeshNamespace) -> Iterator[None]:
    yield
    mesh.reset_routing()


# --- layouts against upstream testdata ------------------------------------------------------

def test_status_table_matches_upstream_testdata() -> None:
    """Do the proxy-status tables line up as release-1.30's testdata?"""
    five = {t: "SYNCED" for t in ("CDS", "LDS", "EDS", "RDS", "ECDS")}
    syncs = [status.ProxySync("proxy2", "1.20", five, "cluster2"),
             status.ProxySync("proxy1", "1.20", five, "cluster1")]
    assert status.status_table("istiod1", syncs) == (
        FIXTURES / "multiXdsStatusSinglePilot.txt").read_text()
    verbose = status.ProxySync("proxy1", "1.20", {"CDS": "STALE", "ECDS": "SYNCED",
                                                  "EDS": "SYNCED", "LDS": "SYNCED",
                                                  "RDS": "NOT SENT"}, "cluster1")
    assert status.status_table("istiod1", [verbose], 1) == (
        FIXTURES / "multiXdsStatusMultiPilot_verbose.txt").read_text()


def test_tabwriter_keeps_upstream_trailing_padding() -> None:
    """Is a row with an empty last cell padded like Go's tabwriter (secret testdata)?"""
    expected = (FIXTURES / "secret_output.txt").read_text()
    lines = [line.split() for line in expected.splitlines()]
    rows = [["RESOURCE NAME", "TYPE", "STATUS", "VALID CERT", "SERIAL NUMBER", "NOT AFTER",
             "NOT BEFORE"],
            ["configmap://some/thing", "", "WARMING", "false", "", "", ""],
            ["default", "Cert Chain", *lines[2][3:]],
            ["ROOTCA", "CA", *lines[3][2:]]]
    assert render(rows) == expected


def test_human_duration_as_apimachinery() -> None:
    assert [human_duration(s) for s in (5, 119, 125, 600, 3 * 3600 + 60, 50 * 3600)] \
        == ["5s", "119s", "2m5s", "10m", "3h1m", "2d2h"]


# --- against the cluster ---------------------------------------------------------------------

def test_version_counts_the_proxies(mesh: MeshNamespace) -> None:
    result = istioctl(mesh, "version")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "client version: 1.30.5" and lines[1] == "control plane version: 1.30.5"
    assert lines[2].startswith("data plane version: 1.30.5 (") and "proxies)" in lines[2]


def test_proxy_status_lists_synced_sidecars(mesh: MeshNamespace) -> None:
    pod = mesh.pod("productpage")
    result = istioctl(mesh, "ps", "-n", mesh.name)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "CLUSTER", "ISTIOD", "VERSION", "SUBSCRIBED", "TYPES"]
    assert any(line.startswith(f"{pod}.{mesh.name} ") and line.endswith("3 (CDS,LDS,RDS)")
               for line in lines), result.stdout
    assert len(lines) == 1 + 6  # six Bookinfo pods in this namespace only

    def synced() -> str:
        out = istioctl(mesh, "ps", "-v", "1", "-n", mesh.name).stdout
        rows = [line for line in out.splitlines() if line.startswith(f"{pod}.")]
        return out if rows and rows[0].count("SYNCED (") == 3 else ""
    verbose = poll(synced, "productpage's CDS, LDS and RDS to be SYNCED", timeout=20)
    assert verbose.splitlines()[0].split()[2:7] == ["CDS", "ECDS", "EDS", "LDS", "RDS"]
    diff = istioctl(mesh, "proxy-status", f"{pod}.{mesh.name}")
    assert diff.stdout.splitlines()[:2] == ["Clusters Match", "Listeners Match"], diff.stdout
    assert diff.stdout.splitlines()[2].startswith("Routes Match (RDS last loaded at ")


def test_proxy_config_tables_and_json(mesh: MeshNamespace) -> None:
    pod = mesh.pod("productpage")
    fqdn = f"reviews.{mesh.name}.svc.cluster.local"
    clusters = istioctl(mesh, "pc", "cluster", f"{pod}.{mesh.name}", "--fqdn", "reviews")
    assert clusters.returncode == 0, clusters.stderr
    rows = [line.split() for line in clusters.stdout.splitlines()]
    assert rows[0] == ["SERVICE", "FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "DESTINATION",
                       "RULE"]
    assert rows[1:] == [[fqdn, "9080", "-", "outbound", "STATIC"]], clusters.stdout

    listeners = istioctl(mesh, "proxy-config", "listeners", "deploy/productpage-v1",
                         "-n", mesh.name)
    assert listeners.stdout.splitlines()[0].split() == ["ADDRESSES", "PORT", "MATCH",
                                                        "DESTINATION"]
    assert "Route: outbound" in listeners.stdout

    routes = istioctl(mesh, "pc", "routes", f"{pod}.{mesh.name}", "--name", "outbound")
    reviews = [line for line in routes.stdout.splitlines() if f"{fqdn}:9080" in line]
    assert len(reviews) == 1 and f"reviews, reviews.{mesh.name} + 1 more..." in reviews[0]
    # Istio's docs name a sidecar's route configuration by port: the embedded one has a single
    # `outbound`, so `--name 9080` shows its port-9080 virtual hosts and says so
    by_port = istioctl(mesh, "pc", "routes", f"{pod}.{mesh.name}", "--name", "9080")
    assert "one route configuration, 'outbound', where Istio has one per port" in by_port.stderr
    vhosts = {line.split()[1] for line in by_port.stdout.splitlines()[1:]}
    assert f"{fqdn}:9080" in vhosts and all(v.endswith(":9080") for v in vhosts), by_port.stdout
    as_json = json.loads(istioctl(mesh, "pc", "routes", f"{pod}.{mesh.name}", "--name", "9080",
                                  "-o", "json").stdout)
    assert [c["name"] for c in as_json] == ["outbound"]
    assert {v["name"] for v in as_json[0]["virtualHosts"]} == vhosts

    secret = istioctl(mesh, "pc", "secret", f"{pod}.{mesh.name}")
    assert [line.split()[0] for line in secret.stdout.splitlines()[1:]] == ["default", "ROOTCA"]

    endpoints = istioctl(mesh, "pc", "endpoint", f"{pod}.{mesh.name}",
                         "--cluster", f"outbound|9080||{fqdn}")
    lines = endpoints.stdout.splitlines()
    assert lines[0].split() == ["ENDPOINT", "STATUS", "OUTLIER", "CHECK", "CLUSTER"]
    assert len(lines) == 4 and all("HEALTHY" in line for line in lines[1:]), endpoints.stdout

    dumped = json.loads(istioctl(mesh, "pc", "cluster", f"{pod}.{mesh.name}", "--port", "9080",
                                 "--direction", "outbound", "-o", "json").stdout)
    assert {c["name"] for c in dumped} >= {f"outbound|9080||{fqdn}"}
    assert all("connectTimeout" in c for c in dumped)
    whole = json.loads(istioctl(mesh, "pc", "all", f"{pod}.{mesh.name}", "-o", "json").stdout)
    assert [c["@type"].rsplit(".", 1)[1] for c in whole["configs"]][:2] == [
        "BootstrapConfigDump", "ClustersConfigDump"]


def test_the_certificate_decodes_as_istios_docs_do(mesh: MeshNamespace) -> None:
    """Istio's mTLS tasks read the workload certificate with `istioctl proxy-config secret POD
    -o json | jq -r '…certificateChain.inlineBytes' | base64 --decode | openssl x509`: the
    chain is base64 `inlineBytes`, as istio-agent's SDS sends it, and it names the SPIFFE id."""
    pod = mesh.pod("productpage")
    chain = istioctl(mesh, "proxy-config", "secret", f"{pod}.{mesh.name}", "-o", "json")
    assert chain.returncode == 0, chain.stderr
    decoded = subprocess.run(
        ["sh", "-c", "jq -r '.dynamicActiveSecrets[0].secret.tlsCertificate.certificateChain"
                     ".inlineBytes' | base64 --decode | openssl x509 -noout -text"],
        input=chain.stdout, capture_output=True, text=True, timeout=30)
    assert decoded.returncode == 0, decoded.stderr
    assert (f"URI:spiffe://cluster.local/ns/{mesh.name}/sa/bookinfo-productpage"
            in decoded.stdout), decoded.stdout


def test_proxy_config_errors(mesh: MeshNamespace) -> None:
    missing = istioctl(mesh, "pc", "cluster", f"nope.{mesh.name}")
    assert missing.returncode == 1 and missing.stderr.startswith("Error: no pod 'nope'")
    usage = istioctl(mesh, "pc", "nonsense", "x")
    assert usage.returncode == 64 and "Error:" in usage.stderr


def test_analyze_finds_seeded_mistakes(mesh: MeshNamespace, tmp_path: Path) -> None:
    clean = istioctl(mesh, "analyze", "-n", mesh.name)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert f"✔ No validation issues found when analyzing namespace: {mesh.name}." in clean.stderr

    mesh.apply(yaml_stream(
        destination_rule("reviews", "v1", "v2", "v9"),
        virtual_service("reviews", route("reviewz"), name="typo"),
        virtual_service("reviews", route("reviews", "v4"), route("reviews", "v1"),
                        name="subsets"),
        virtual_service("ratings", route("ratings"), gateways=["no-such-gateway"],
                        name="gw")))
    result = istioctl(mesh, "analyze", "-n", mesh.name)
    ns = mesh.name
    expected = [
        f'Error [IST0101] (VirtualService {ns}/gw) Referenced gateway not found: '
        '"no-such-gateway"',
        f'Error [IST0101] (VirtualService {ns}/subsets) Referenced host+subset in '
        'destinationrule not found: "reviews+v4"',
        f'Error [IST0101] (VirtualService {ns}/typo) Referenced host not found: "reviewz"',
        f"Error [IST0109] (VirtualService {ns}/subsets) The VirtualServices {ns}/subsets,"
        f"{ns}/typo associated with mesh gateway define the same host */reviews.{ns}.svc."
        "cluster.local which can lead to undefined behavior. This can be fixed by merging the "
        "conflicting VirtualServices into a single resource.",
        f"Error [IST0173] (DestinationRule {ns}/reviews) The Subset v9 defined in the "
        "DestinationRule does not select any pods. Which may lead to 503 UH "
        "(NoHealthyUpstream).",
        f"Warning [IST0130] (VirtualService {ns}/subsets) VirtualService rule #1 not used "
        "(only the last rule can have no matches).",
    ]
    for line in expected:
        assert line in result.stdout.splitlines(), result.stdout
    assert result.returncode == 79
    assert result.stderr.startswith(f"Error: Analyzers found issues when analyzing namespace: "
                                    f"{ns}.\nSee https://istio.io/v1.30/docs/reference/config/")


def test_analyze_files_and_other_namespaces(mesh: MeshNamespace, tmp_path: Path) -> None:
    manifest = tmp_path / "svc.yaml"
    manifest.write_text("apiVersion: v1\nkind: Service\nmetadata:\n  name: odd\nspec:\n"
                        "  selector: {app: odd}\n  ports:\n  - name: web\n    port: 8080\n")
    result = istioctl(mesh, "analyze", "-n", mesh.name, str(manifest))
    assert (f"Info [IST0118] (Service {mesh.name}/odd {manifest}:1) Port name web (port: "
            "8080, targetPort: 8080) doesn't follow the naming convention of Istio port."
            ) in result.stdout, result.stdout
    assert result.returncode == 0  # Info is below the default failure threshold
    plain = mesh.cluster.kubectl("create", "namespace", f"{mesh.name}-plain")
    assert plain.returncode == 0, plain.stderr
    try:
        mesh.cluster.kubectl(f"--namespace={mesh.name}-plain", "run", "bare",
                             "--image=curlimages/curl", "--", "sleep", "3600")
        mesh.cluster.kubectl("label", "namespace", f"{mesh.name}-plain",
                             "istio-injection=enabled")
        result = istioctl(mesh, "analyze", "-n", f"{mesh.name}-plain")
        assert (f"Warning [IST0103] (Pod {mesh.name}-plain/bare) The pod bare is missing the "
                "Istio proxy.") in result.stdout, result.stdout
        # both sidecar injection and ambient (istio.io docs, ambient/usage/add-workloads)
        mesh.cluster.kubectl("label", "namespace", f"{mesh.name}-plain",
                             "istio.io/dataplane-mode=ambient")
        result = istioctl(mesh, "analyze", "-n", f"{mesh.name}-plain")
        assert (f"Warning [IST0123] (Namespace {mesh.name}-plain) The namespace has more than "
                "one type of injection labels [istio-injection=enabled "
                "istio.io/dataplane-mode=ambient], which may lead to undefined behavior. Make "
                "sure only one injection label exists.") in result.stdout, result.stdout
    finally:
        mesh.cluster.kubectl("delete", "namespace", f"{mesh.name}-plain", "--wait=false")


def test_describe_pod(mesh: MeshNamespace) -> None:
    mesh.apply(yaml_stream(destination_rule("reviews", "v1", "v2")))
    pod = mesh.pod("reviews", "v2")
    result = istioctl(mesh, "x", "describe", "pod", f"{pod}.{mesh.name}")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    # names in the pod's own namespace print without it (`kname` in describe.go)
    assert text.startswith(f"Pod: {pod}\n   Pod Revision: default\n")
    assert "Service: reviews\n   Port: http 9080/HTTP targets pod port 9080" in text
    assert ('DestinationRule: reviews for "reviews"\n   Matching subsets: v2\n'
            "      (Non-matching subsets v1)\n") in text
    assert "Effective PeerAuthentication:\n   Workload mTLS mode: PERMISSIVE\n" in text


def test_dashboard_prints_url_or_istioctls_error(mesh: MeshNamespace) -> None:
    envoy = istioctl(mesh, "dashboard", "envoy", "deploy/productpage-v1", "-n", mesh.name,
                     "--browser=false")
    assert envoy.returncode == 0, envoy.stderr
    url, _, rest = envoy.stdout.partition("\n")
    assert url.startswith("http://localhost:") and rest == "skipping opening a browser"
    port = int(url.rsplit(":", 1)[1])
    assert port > 0
    grafana = istioctl(mesh, "dashboard", "grafana")
    assert grafana.returncode == 1
    assert grafana.stderr == ("Error: no pods found with selector "
                              "app.kubernetes.io/name=grafana\n")


def test_other_clusters_go_to_the_real_istioctl(mesh: MeshNamespace, tmp_path: Path) -> None:
    """A kubeconfig that is not an embedded cluster's: the real binary gets the same argv."""
    fake = tmp_path / "bin" / "istioctl"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho \"real istioctl $*\"\n")
    fake.chmod(0o755)
    other = tmp_path / "config"
    other.write_text("apiVersion: v1\nkind: Config\n")
    env = {"KUBECONFIG": str(other), "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    handed = istioctl(mesh, "ps", "-n", "x", env=env)
    assert handed.returncode == 0 and handed.stdout == "real istioctl ps -n x\n"
    alone = istioctl(mesh, "version", env={"KUBECONFIG": str(other), "PATH": "/usr/bin:/bin"})
    assert alone.returncode == 1
    assert "curl -L https://istio.io/downloadIstio | ISTIO_VERSION=1.30.5 sh -" in alone.stderr
