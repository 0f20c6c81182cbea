"""`linkerd` against a running embedded cluster: the installed control plane (and the docs'
`linkerd install --crds | kubectl apply -f -`, `linkerd install | kubectl apply -f -` over it),
injection through `kubectl apply`, the docs' pipe `kubectl get deploy -o yaml | linkerd inject - |
kubectl apply -f -`, `linkerd check` against upstream's golden, `version`, `identity`, and bad
input; linkerd-viz installed on demand (`linkerd viz install | kubectl apply -f -`), then seen by
`linkerd check`.

Every command is the real console script and the real kubectl, on loopback only.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import poll
from linkerd_support import LINKERD, TIMEOUT_S, install_linkerd, kubectl, run

from labs.cluster import ClusterRef, EmbeddedCluster
from labs.linkerd import install
from labs.linkerd.cli import namespace_after_command
from labs.versions import version

pytestmark = pytest.mark.usefixtures("linkerd_installed")  # the cluster starts without it

GOLDEN = Path(__file__).resolve().parent / "golden" / "linkerd"
# What `linkerd check --proxy` shows as ‼ on the embedded cluster by design (each with its
# reason), where upstream's golden, run on a real cluster with a version service, shows √.
EMULATION_WARNINGS = {
    "cluster networks contains all pods", "cluster networks contains all services",
    "control plane MutatingWebhookConfigurations exist",
    "control plane ValidatingWebhookConfigurations exist",
    *(f"{w} {what}" for w in ("proxy-injector", "sp-validator", "policy-validator")
      for what in ("webhook has valid cert", "cert is valid for at least 60 days")),
    "can determine the latest version", "cli is up-to-date",
    "control plane proxies are healthy", "control plane proxies are up-to-date",
    "data plane is up-to-date"}
# Upstream skips this check when no node exposes spec.podCIDR, as the embedded node does not.
SKIPPED_WITHOUT_POD_CIDR = "cluster networks contains all node podCIDRs"


def web_deployment(namespace: str) -> str:
    """Upstream's inject input (the emojivoto web Deployment) in `namespace`."""
    doc = next(d for d in yaml.safe_load_all(
        (GOLDEN / "inject_emojivoto_deployment.input.yml").read_text()) if d)
    doc["metadata"]["namespace"] = namespace
    return yaml.safe_dump(doc)


def pods(cluster: ClusterRef, namespace: str, selector: str = "app=web-svc") -> list[dict]:
    return json.loads(kubectl(cluster, "get", "pods", "-n", namespace, "-l", selector,
                              "-o", "json"))["items"]


def has_proxy(pod: dict) -> bool:
    return any(c["name"] == "linkerd-proxy" for c in pod["spec"].get("initContainers") or [])


def rolled_out(cluster: ClusterRef, namespace: str, meshed: bool) -> dict:
    """The one running pod of `web`, once it has (or lacks) the proxy, all containers ready."""
    def ready() -> dict | None:
        found = [p for p in pods(cluster, namespace)
                 if not p["metadata"].get("deletionTimestamp")]
        if len(found) != 1 or has_proxy(found[0]) != meshed:
            return None
        status = found[0].get("status") or {}
        statuses = [*(status.get("initContainerStatuses") or []),
                    *(status.get("containerStatuses") or [])]
        running = [s for s in statuses if s["name"] != "linkerd-init"]
        return found[0] if running and all(s.get("ready") for s in running) else None
    return poll(ready, f"web in {namespace} rolled out (meshed={meshed})", timeout=90,
                interval=0.5)


@dataclass(frozen=True)
class Workloads:
    cluster: ClusterRef
    meshed: str  # annotated linkerd.io/inject: enabled; web injected at admission
    plain: str  # web without a proxy


@pytest.fixture(scope="module")
def workloads(cluster: ClusterRef) -> Iterator[Workloads]:
    meshed, plain = (f"l5d-{kind}-{uuid.uuid4().hex[:6]}" for kind in ("mesh", "plain"))
    kubectl(cluster, "create", "namespace", meshed)
    kubectl(cluster, "annotate", "namespace", meshed, "linkerd.io/inject=enabled")
    kubectl(cluster, "create", "namespace", plain)
    for namespace in (meshed, plain):
        kubectl(cluster, "apply", "-f", "-", input=web_deployment(namespace))
    rolled_out(cluster, meshed, meshed=True)
    rolled_out(cluster, plain, meshed=False)
    try:
        yield Workloads(cluster, meshed, plain)
    finally:
        for namespace in (meshed, plain):
            cluster.kubectl("delete", "namespace", namespace, "--wait=false")


def deployments_available(cluster: ClusterRef, expected: dict[str, set[str]]) -> None:
    def ready() -> bool:
        for namespace, deployments in expected.items():
            listed = json.loads(kubectl(cluster, "get", "deployments", "-n", namespace, "-o",
                                        "json"))["items"]
            available = {d["metadata"]["name"] for d in listed
                         if (d.get("status") or {}).get("availableReplicas")}
            if not deployments <= available:
                return False
        return True
    poll(ready, f"deployments available: {expected}", timeout=90, interval=0.5)


def test_control_plane_pods_become_ready_without_viz(cluster: ClusterRef) -> None:
    deployments_available(cluster, {"linkerd": {"linkerd-destination", "linkerd-identity",
                                                "linkerd-proxy-injector"}})
    services = kubectl(cluster, "get", "services", "-n", "linkerd", "-o", "name").split()
    assert {"service/linkerd-dst", "service/linkerd-identity", "service/linkerd-policy",
            "service/linkerd-proxy-injector"} <= set(services)
    # viz comes on demand, as in the docs: not at cluster start
    absent = cluster.kubectl("get", "namespace", "linkerd-viz", timeout=TIMEOUT_S)
    assert absent.returncode == 1 and "NotFound" in absent.stderr


def test_version(cluster: ClusterRef, workloads: Workloads) -> None:
    pinned = version("LINKERD_VERSION")
    done = run(cluster, "version")
    assert (done.returncode, done.stdout) == (0, f"Client version: {pinned}\n"
                                                 f"Server version: {pinned}\n")
    assert run(cluster, "version", "--client", "--short").stdout == f"{pinned}\n"
    proxies = run(cluster, "version", "--proxy", "-n", workloads.meshed)
    assert proxies.stdout.endswith(f"Proxy versions:\n\t{pinned} (1 pods)\n")
    assert "Envoy playing linkerd2-proxy's part" in proxies.stderr


def test_namespace_annotation_injects_at_kubectl_apply(workloads: Workloads) -> None:
    pod = rolled_out(workloads.cluster, workloads.meshed, meshed=True)
    meta = pod["metadata"]
    assert meta["labels"]["linkerd.io/proxy-deployment"] == "web"
    assert meta["labels"]["linkerd.io/workload-ns"] == workloads.meshed
    assert meta["annotations"]["linkerd.io/created-by"] == (
        f"linkerd/proxy-injector {version('LINKERD_VERSION')}")
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["linkerd-init",
                                                                  "linkerd-proxy"]


def check_lines(text: str) -> list[tuple[str, str, str]]:
    """(category, glyph, description) of each check in `linkerd check` output."""
    found, category = [], ""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if i + 1 < len(lines) and lines[i + 1] and set(lines[i + 1]) == {"-"}:
            category = line
        elif line[:2] in ("\u221a ", "\u203c ", "\u00d7 "):
            found.append((category, line[0], line[2:]))
    return found


def test_check_proxy_follows_upstreams_golden(workloads: Workloads) -> None:
    done = run(workloads.cluster, "check", "--proxy", "-n", workloads.meshed, "--wait", "60s")
    assert done.returncode == 0, done.stdout
    assert done.stdout.endswith("\nStatus check results are \u221a\n")
    upstream = [entry for entry in check_lines((GOLDEN / "check.proxy.golden").read_text())
                if entry[2] != SKIPPED_WITHOUT_POD_CIDR]
    everything = check_lines(done.stdout)
    ours = everything  # no viz installed: the core checks only, as the golden
    assert [(c, d) for c, _, d in ours] == [(c, d) for c, _, d in upstream]
    warned = {d for _, glyph, d in ours if glyph == "\u203c"}
    assert warned == EMULATION_WARNINGS
    assert "\u00d7" not in {glyph for _, glyph, _ in ours}
    # a warning says why, then where to look, as upstream's hints do
    assert ("\u203c control plane proxies are healthy\n    the embedded cluster runs Linkerd's "
            "control-plane pods without linkerd-proxy") in done.stdout
    assert "    see https://linkerd.io/2/checks/#l5d-cp-proxy-healthy for hints\n" in done.stdout


def test_check_json(workloads: Workloads) -> None:
    done = run(workloads.cluster, "check", "-o", "json", "--wait", "60s")
    assert done.returncode == 0, done.stdout
    result = json.loads(done.stdout)  # one document: no extension is installed
    assert result["success"] is True
    names = [c["categoryName"] for c in result["categories"]]
    assert names == ["kubernetes-api", "kubernetes-version", "gateway-api-crd",
                     "linkerd-existence", "linkerd-config", "linkerd-identity",
                     "linkerd-webhooks-and-apisvc-tls", "linkerd-version",
                     "control-plane-version", "linkerd-control-plane-proxy",
                     "linkerd-extension-checks"]
    identity = next(c for c in result["categories"] if c["categoryName"] == "linkerd-identity")
    assert {c["result"] for c in identity["checks"]} == {"success"}
    latest = next(c for c in result["categories"] if c["categoryName"] == "linkerd-version")
    assert latest["checks"][0]["result"] == "warning"
    assert latest["checks"][0]["hint"] == "https://linkerd.io/2/checks/#l5d-version-latest"


def test_check_fails_without_proxies_and_stops(workloads: Workloads) -> None:
    done = run(workloads.cluster, "check", "--proxy", "-n", workloads.plain, "--wait", "0s")
    assert done.returncode == 1
    assert (f"\u00d7 data plane proxies are ready\n    no \"linkerd-proxy\" containers found in "
            f"the \"{workloads.plain}\" namespace\n    see "
            "https://linkerd.io/2/checks/#l5d-data-plane-ready for hints\n") in done.stdout
    assert "data plane is up-to-date" not in done.stdout  # a fatal check ends the run
    assert done.stdout.endswith("\n\nStatus check results are \u00d7\n")


def test_docs_pipe_injects_and_uninjects(workloads: Workloads) -> None:
    cluster, namespace = workloads.cluster, workloads.plain
    listed = kubectl(cluster, "get", "deploy", "-n", namespace, "-o", "yaml")
    injected = run(cluster, "inject", "-", input=listed)
    assert injected.returncode == 0, injected.stderr
    assert injected.stderr == '\ndeployment "web" injected\n\n'
    template = next(yaml.safe_load_all(injected.stdout))["items"][0]["spec"]["template"]
    assert template["metadata"]["annotations"]["linkerd.io/inject"] == "enabled"
    kubectl(cluster, "apply", "-f", "-", input=injected.stdout)
    rolled_out(cluster, namespace, meshed=True)
    listed = kubectl(cluster, "get", "deploy", "-n", namespace, "-o", "yaml")
    uninjected = run(cluster, "uninject", "-", input=listed)
    assert uninjected.stderr == '\ndeployment "web" uninjected\n\n'
    kubectl(cluster, "apply", "-f", "-", input=uninjected.stdout)
    rolled_out(cluster, namespace, meshed=False)


def test_manual_inject_uses_the_clusters_trust_anchors(workloads: Workloads) -> None:
    done = run(workloads.cluster, "inject", "--manual", "-", input=web_deployment("x"))
    assert done.returncode == 0, done.stderr
    injected = next(yaml.safe_load_all(done.stdout))
    roots = json.loads(kubectl(workloads.cluster, "get", "configmap", "-n", "linkerd",
                               "linkerd-identity-trust-roots", "-o", "json"))
    proxy = injected["spec"]["template"]["spec"]["initContainers"][1]
    anchors = next(e["value"] for e in proxy["env"]
                   if e["name"] == "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS")
    assert anchors.strip() == roots["data"]["ca-bundle.crt"].strip()
    assert injected["spec"]["template"]["metadata"]["annotations"]["linkerd.io/created-by"] == (
        f"linkerd/cli {version('LINKERD_VERSION')}")


@pytest.mark.parametrize(("args", "stdin", "message"), [
    (["inject", "-"], "kind: Deployment\nmetadata: name: web\n",
     "Error transforming resources:\nerror converting YAML to JSON: yaml: line 2: mapping "
     "values are not allowed here\n"),
    (["inject", "/nonexistent/web.yaml"], None,
     "Error: open /nonexistent/web.yaml: no such file or directory\n"),
    (["inject", "http://127.0.0.1:9/web.yaml"], None, "Error: only HTTPS URLs are allowed\n"),
    (["uninject"], None, "Error: please specify a kubernetes resource file\n"),
    (["identity"], None, "Error: Provide the pod name argument or use the selector flag\n"),
    (["check", "--pre", "--proxy"], None, "--pre and --proxy flags are mutually exclusive"),
])
def test_bad_input_is_a_clear_error(cluster: ClusterRef, args: list[str], stdin: str | None,
                                    message: str) -> None:
    done = run(cluster, *args, input=stdin)
    assert done.returncode == 1
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_identity_prints_the_proxys_certificate(workloads: Workloads) -> None:
    pod = rolled_out(workloads.cluster, workloads.meshed, meshed=True)
    name = f"default.{workloads.meshed}.serviceaccount.identity.linkerd.cluster.local"

    def issued() -> str | None:
        done = run(workloads.cluster, "identity", "-n", workloads.meshed, "-l", "app=web-svc")
        return done.stdout if "Certificate:" in done.stdout else None
    text = poll(issued, "the proxy's certificate", timeout=60, interval=0.5)
    assert text.startswith(f"\nPOD {pod['metadata']['name']} (1 of 1)\n\nCertificate:\n")
    assert f"        Subject: CN={name}\n" in text
    assert "        Issuer: CN=identity.linkerd.cluster.local\n" in text
    assert f"            X509v3 Subject Alternative Name:\n                DNS:{name}\n" in text
    when = re.findall(r"Not (?:Before|After ): (\w+ \d+ [\d:]+ \d+) UTC", text)
    start, end = (dt.datetime.strptime(w, "%b %d %H:%M:%S %Y") for w in when)
    assert end - start == dt.timedelta(hours=24)
    plain = run(workloads.cluster, "identity", "-n", workloads.plain, "-l", "app=web-svc")
    assert plain.stdout.endswith("\nfailed to find linkerd-admin port in linkerd-proxy "
                                 "container for given pod spec\n")


def test_check_pre_on_an_installed_cluster(cluster: ClusterRef) -> None:
    """Pre-installation checks fail where Linkerd is already installed, as upstream's do."""
    done = run(cluster, "check", "--pre")
    assert done.returncode == 1
    assert [c for c, _, _ in check_lines(done.stdout)][-13:-2] == ["pre-kubernetes-setup"] * 11
    assert ("\u00d7 control plane namespace does not already exist\n    The \"linkerd\" "
            "namespace already exists\n") in done.stdout
    assert "\u221a can create Deployments\n" in done.stdout


def test_install_again_keeps_the_clusters_identity(cluster: ClusterRef) -> None:
    """Running getting-started's two install steps on an installed cluster applies cleanly and
    hands back the cluster's trust anchor and issuer (a fresh pair would leave every running
    proxy distrusting its peers); linkerd-config keeps that anchor and `linkerd check` passes."""
    def identity() -> tuple[str, str]:
        roots = json.loads(kubectl(cluster, "get", "configmap", "-n", "linkerd",
                                   "linkerd-identity-trust-roots", "-o", "json"))
        issuer = json.loads(kubectl(cluster, "get", "secret", "-n", "linkerd",
                                    "linkerd-identity-issuer", "-o", "json"))
        return roots["data"]["ca-bundle.crt"], issuer["data"]["crt.pem"]
    before = identity()
    crds = run(cluster, "install", "--crds")
    assert crds.returncode == 0, crds.stderr
    assert {d["metadata"]["name"] for d in yaml.safe_load_all(crds.stdout) if d} >= {
        "servers.policy.linkerd.io", "serviceprofiles.linkerd.io",
        "authorizationpolicies.policy.linkerd.io"}
    kubectl(cluster, "apply", "-f", "-", input=crds.stdout)
    control_plane = run(cluster, "install")
    assert control_plane.returncode == 0, control_plane.stderr
    applied = kubectl(cluster, "apply", "-f", "-", input=control_plane.stdout)
    assert "deployment.apps/linkerd-destination" in applied
    assert "secret/linkerd-identity-issuer" in applied
    assert identity() == before
    config = json.loads(kubectl(cluster, "get", "configmap", "-n", "linkerd", "linkerd-config",
                                "-o", "json"))
    assert yaml.safe_load(config["data"]["values"])["identityTrustAnchorsPEM"] == before[0]
    checked = run(cluster, "check")
    assert checked.returncode == 0, checked.stdout
    assert checked.stdout.endswith("Status check results are \u221a\n")


def test_getting_started_on_a_fresh_cluster(tmp_path: Path) -> None:
    """A new cluster has no Linkerd: `check --pre` passes, a pod of an inject-annotated
    namespace gets no proxy; after `linkerd install --crds | kubectl apply -f -` and `linkerd
    install | kubectl apply -f -` (which generates the identity objects), `linkerd check`
    passes and a new pod of that namespace is injected."""
    embedded = EmbeddedCluster("fresh-l5d", tmp_path / "state")
    fresh = ClusterRef(embedded.up(), embedded.name, embedded)
    try:
        assert fresh.kubectl("get", "namespace", "linkerd").returncode == 1
        pre = run(fresh, "check", "--pre")
        assert pre.returncode == 0, pre.stdout
        kubectl(fresh, "create", "namespace", "app")
        kubectl(fresh, "annotate", "namespace", "app", "linkerd.io/inject=enabled")
        kubectl(fresh, "apply", "-f", "-", input=web_deployment("app"))
        rolled_out(fresh, "app", meshed=False)
        # the cluster serves Linkerd's CRDs already, as if applied: kubectl sees no change
        crds = fresh.kubectl("apply", "-f", "-", input=run(fresh, "install", "--crds").stdout)
        assert crds.returncode == 0 and crds.stderr == "", crds.stderr
        assert all(line.endswith(" unchanged") for line in crds.stdout.splitlines()), crds.stdout
        rendered = run(fresh, "install")
        kinds = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(rendered.stdout)
                 if d}
        assert {("Secret", "linkerd-identity-issuer"),
                ("ConfigMap", "linkerd-identity-trust-roots")} <= kinds
        install_linkerd(fresh)
        checked = run(fresh, "check")
        assert checked.returncode == 0, checked.stdout
        kubectl(fresh, "rollout", "restart", "-n", "app", "deployment/web")
        rolled_out(fresh, "app", meshed=True)
    finally:
        embedded.down()


def test_install_refuses_the_control_plane_without_its_crds() -> None:
    """As install.go: the control plane needs the CRDs first (here a cluster without them)."""
    class NoCrds:
        def cluster_items(self, resource: str, selector: str = "") -> list[object]:
            return []

    message = ("Linkerd CRDs must be installed first. Run linkerd install with the --crds "
               "flag.")
    with pytest.raises(install.InstallError, match=f"^{re.escape(message)}$"):
        install.control_plane_text(NoCrds())  # type: ignore[arg-type]


def test_other_clusters_need_the_real_linkerd(tmp_path: Path) -> None:
    """A kubeconfig that is not an embedded cluster's is handed to the pinned binary; without
    one installed, the error says how to install it."""
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\ncontexts: []\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHLAB_")}
    env.update(KUBECONFIG=str(kubeconfig), MESHLAB_TOOLS_DIR=str(tmp_path / "tools"))
    done = subprocess.run([LINKERD, "check"], capture_output=True, text=True, timeout=60,
                          env=env)
    assert done.returncode == 1
    assert done.stderr.startswith("Error: this cluster is not a meshlab embedded cluster, so "
                                  "the real linkerd is needed: ")
    assert "meshlab tools install" in done.stderr


def test_check_proxy_in_all_namespaces(workloads: Workloads) -> None:
    """The control plane's own (proxy-less) pods are not taken for broken data-plane pods."""
    done = run(workloads.cluster, "check", "--proxy", "--wait", "60s")
    assert done.returncode == 0, done.stdout
    assert "\u221a data plane proxies are ready\n" in done.stdout
    assert "\u221a data plane proxies certificate match CA\n" in done.stdout


def test_viz_on_demand_then_check_sees_it(cluster: ClusterRef) -> None:
    """The docs' `linkerd viz install | kubectl apply -f -`, `linkerd viz check`, `linkerd
    check` (now with the extension's document), and `linkerd viz uninstall | kubectl delete`."""
    installed = run(cluster, "viz", "install")
    assert installed.returncode == 0 and "kind: Namespace" in installed.stdout
    assert "${" not in installed.stdout  # the pinned versions are filled in
    applied = kubectl(cluster, "apply", "-f", "-", input=installed.stdout)
    assert "namespace/linkerd-viz created" in applied
    try:
        deployments_available(cluster, {"linkerd-viz": {"metrics-api", "tap", "tap-injector",
                                                        "web"}
                                         | ({"prometheus"} if shutil.which("prometheus")
                                            else set())})
        prometheus = json.loads(kubectl(cluster, "get", "service", "prometheus", "-n",
                                        "linkerd-viz", "-o", "json"))
        assert [p["port"] for p in prometheus["spec"]["ports"]] == [9090]
        viz = run(cluster, "viz", "check", "--wait", "60s")
        assert viz.returncode == 0, viz.stdout
        categories = [c for c, _, _ in check_lines(viz.stdout)]
        assert categories == ["kubernetes-api"] * 2 + ["linkerd-existence"] * 7 + \
            ["linkerd-viz"] * 14
        assert ("linkerd-viz", "\u221a", "viz extension pods are running") in \
            check_lines(viz.stdout)
        done = run(cluster, "check", "-o", "json", "--wait", "60s")
        result, end = json.JSONDecoder().raw_decode(done.stdout)
        extension = json.loads(done.stdout[end:])  # upstream: the core document, then viz's
        assert result["success"] is True and extension["success"] is True
        assert [c["categoryName"] for c in extension["categories"]] == ["linkerd-viz"]
    finally:
        removal = run(cluster, "viz", "uninstall")
        assert removal.returncode == 0, removal.stderr
        assert "kind: Namespace" in removal.stdout and "name: linkerd-viz" in removal.stdout
        kubectl(cluster, "delete", "-f", "-", input=removal.stdout)
    poll(lambda: cluster.kubectl("get", "namespace", "linkerd-viz",
                                 timeout=TIMEOUT_S).returncode == 1,
         "linkerd-viz deleted", timeout=90, interval=1)
    gone = run(cluster, "viz", "uninstall")
    assert (gone.returncode, gone.stderr) == (
        1, "Error: could not find the linkerd-viz extension\n")
    again = run(cluster, "check", "-o", "json", "--wait", "60s")
    assert json.loads(again.stdout)["success"] is True  # one document again


@pytest.mark.parametrize(("argv", "parsed"), [
    (["-n", "emojivoto", "check", "--proxy"], ["check", "--proxy", "-n", "emojivoto"]),
    (["viz", "-n", "linkerd", "edges", "deployment"],
     ["viz", "edges", "deployment", "-n", "linkerd"]),
    (["--context", "c", "--namespace=x", "check"], ["--context", "c", "check", "--namespace=x"]),
    (["viz", "stat", "deploy", "-n", "e"], ["viz", "stat", "deploy", "-n", "e"]),
])
def test_namespace_before_the_command_as_the_docs_write_it(argv: list[str],
                                                         parsed: list[str]) -> None:
    """`linkerd -n emojivoto check --proxy` (getting-started) parses as cobra parses it."""
    assert namespace_after_command(argv) == parsed
