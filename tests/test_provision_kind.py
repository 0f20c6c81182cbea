"""`meshlab cluster create|delete --backend kind` against recorded command doubles
(tests/doubles: docker, kind, helm, istioctl, linkerd, kubectl, with upstream's output): the
commands and their order, retries of readiness checks, the clean-up of a half-created cluster,
the messages; `--dry-run`; and the Kubernetes objects we author, applied to the embedded API
server with `kubectl apply --dry-run=server`.

Not checked here (no Docker daemon, no network): that kind, istioctl, linkerd and helm accept
these commands and the pinned releases' URLs (Gateway API standard-install.yaml, Istio's
samples/addons, Flagger's CRDs and chart) serve what the plan expects; the IstioOperator overlay
(istioctl reads it, no API server does) and the kind config (not an API object) are checked for
their fields only.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from provision_support import DOUBLES, REPO, Doubles

from labs.cluster import ClusterRef
from labs.provision.kind_plan import archive_name, sample_images
from labs.versions import version

OVERLAY = REPO / "cluster-setup" / "kind" / "istio-ingress-nodeport.yaml"
FLAGGER_NS = REPO / "cluster-setup" / "kind" / "flagger-linkerd.yaml"
CTX = "--context kind-meshlab-alice"


@pytest.fixture
def doubles(tmp_path: Path) -> Iterator[Doubles]:
    yield Doubles(tmp_path)


def istio_commands() -> list[str]:
    """What creating alice's Istio cluster must run, in order (written out, not derived from
    the plan, so a change to the plan shows here)."""
    istio_branch = "release-" + ".".join(version("ISTIO_VERSION").split(".")[:2])
    addons = " ".join(f"-f https://raw.githubusercontent.com/istio/istio/{istio_branch}/samples/"
                      f"addons/{name}.yaml" for name in ("prometheus", "grafana", "jaeger",
                                                         "kiali"))
    flagger = version("FLAGGER_VERSION")
    return [
        "kind get clusters",
        f"kind create cluster --name meshlab-alice --image {version('KIND_NODE_IMAGE')} "
        "--wait 120s --config=-",
        f"kubectl {CTX} apply --server-side -f https://github.com/kubernetes-sigs/gateway-api/"
        f"releases/download/{version('GATEWAY_API_VERSION')}/standard-install.yaml",
        f"kubectl {CTX} wait --for=condition=Established crd/gateways.gateway.networking.k8s.io "
        "crd/httproutes.gateway.networking.k8s.io --timeout=180s",
        f"istioctl install {CTX} --set profile=default -f {OVERLAY} -y",
        f"kubectl {CTX} wait --for=condition=Available deployment --all --namespace "
        "istio-system --timeout=180s",
        f"kubectl {CTX} apply {addons}",
        f"kubectl {CTX} wait --for=condition=Available deployment --all --namespace "
        "istio-system --timeout=180s",
        f"kubectl {CTX} apply -f https://raw.githubusercontent.com/fluxcd/flagger/v{flagger}/"
        "artifacts/flagger/crd.yaml",
        f"helm upgrade --install flagger flagger --repo https://flagger.app --version {flagger} "
        "--kube-context kind-meshlab-alice --namespace istio-system --set crd.create=false "
        "--set meshProvider=istio --set metricsServer=http://prometheus:9090 --wait --timeout 5m",
    ]


def test_create_runs_the_istio_plan_in_order_and_prints_the_context(doubles: Doubles) -> None:
    done = doubles.meshlab("cluster", "create", "--backend", "kind", "--student", "alice",
                           "--slot", "2")
    assert done.returncode == 0, done.stderr
    assert doubles.calls() == istio_commands()
    assert "export MESHLAB_CONTEXT=kind-meshlab-alice" in done.stdout
    assert "ingress on http://localhost:18082/" in done.stdout
    assert "step 10/10: install Flagger" in done.stdout
    # kind got the config on stdin: the student's own API port and ingress mapping
    config = yaml.safe_load((doubles.state / "config-meshlab-alice.yaml").read_text())
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["networking"] == {"apiServerAddress": "127.0.0.1", "apiServerPort": 16445}
    assert config["nodes"][0]["extraPortMappings"] == [{
        "containerPort": 30080, "hostPort": 18082, "listenAddress": "127.0.0.1",
        "protocol": "TCP"}]
    assert (doubles.state / "clusters" / "meshlab-alice").exists()


def test_the_kind_mapping_reaches_the_gateway_node_port() -> None:
    """The node port kind maps is the one the IstioOperator overlay gives the gateway."""
    overlay = yaml.safe_load(OVERLAY.read_text())
    assert overlay["apiVersion"] == "install.istio.io/v1alpha1"
    assert overlay["kind"] == "IstioOperator"
    gateway = overlay["spec"]["components"]["ingressGateways"][0]
    assert gateway["name"] == "istio-ingressgateway" and gateway["enabled"] is True
    service = gateway["k8s"]["service"]
    assert service["type"] == "NodePort"
    assert {p["name"]: (p["port"], p["targetPort"], p.get("nodePort"))
            for p in service["ports"]}["http2"] == (80, 8080, 30080)


def test_a_kubeconfig_is_passed_to_every_tool(doubles: Doubles, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "alice.kubeconfig"
    done = doubles.meshlab("cluster", "create", "--student", "alice", "--mesh", "none",
                           "--kubeconfig", str(kubeconfig))
    assert done.returncode == 0, done.stderr
    calls = doubles.calls()
    assert calls[1].startswith("kind create cluster --name meshlab-alice ")
    assert f"--kubeconfig {kubeconfig}" in calls[1]
    assert all(f"--kubeconfig {kubeconfig} --context kind-meshlab-alice" in call
               for call in calls[2:]), calls
    assert len(calls) == 4  # mesh none: the cluster and the Gateway API CRDs only
    assert f"export KUBECONFIG={kubeconfig} MESHLAB_CONTEXT=kind-meshlab-alice" in done.stdout


def test_linkerd_is_installed_as_its_docs_do_it(doubles: Doubles) -> None:
    done = doubles.meshlab("cluster", "create", "--student", "alice", "--mesh", "linkerd")
    assert done.returncode == 0, done.stderr
    calls = doubles.calls()[4:]  # after the cluster and the Gateway API CRDs
    apply = f"kubectl {CTX} apply -f -"
    # both sides of a pipe run at once, so which logs first varies: compare each pair as a set
    assert sorted(calls[0:2]) == sorted([f"linkerd {CTX} install --crds", apply])
    assert sorted(calls[2:4]) == sorted([f"linkerd {CTX} install", apply])
    assert calls[4] == f"linkerd {CTX} check --wait=180s"
    assert sorted(calls[5:7]) == sorted([f"linkerd {CTX} viz install", apply])
    flagger = version("FLAGGER_VERSION")
    assert calls[7:] == [
        f"linkerd {CTX} viz check --wait=180s",
        f"kubectl {CTX} apply -f {FLAGGER_NS}",
        f"kubectl {CTX} apply -f https://raw.githubusercontent.com/fluxcd/flagger/v{flagger}/"
        "artifacts/flagger/crd.yaml",
        f"helm upgrade --install flagger flagger --repo https://flagger.app --version {flagger} "
        "--kube-context kind-meshlab-alice --namespace flagger-system --set crd.create=false "
        "--set meshProvider=gatewayapi:v1beta1 --set "
        "metricsServer=http://prometheus.linkerd-viz:9090 --set linkerdAuthPolicy.create=true "
        "--wait --timeout 5m",
    ]
    # what linkerd printed went through the pipe into kubectl
    applied = (doubles.state / "applied-from-stdin").read_text().splitlines()
    assert applied == [
        *(f"customresourcedefinition.apiextensions.k8s.io/{name} created" for name in (
            "authorizationpolicies.policy.linkerd.io", "httproutes.policy.linkerd.io",
            "servers.policy.linkerd.io", "serviceprofiles.linkerd.io")),
        "namespace/linkerd created",
        *(f"deployment.apps/{name} created" for name in (
            "linkerd-identity", "linkerd-destination", "linkerd-proxy-injector")),
        "namespace/linkerd-viz created",
        *(f"deployment.apps/{name} created" for name in (
            "metrics-api", "prometheus", "tap", "tap-injector", "web"))]


def test_ambient_waits_for_its_daemonsets(doubles: Doubles) -> None:
    done = doubles.meshlab("cluster", "create", "--student", "alice", "--mesh", "ambient")
    assert done.returncode == 0, done.stderr
    calls = doubles.calls()
    assert f"istioctl install {CTX} --set profile=ambient -f {OVERLAY} -y" in calls
    rollouts = [c for c in calls if " rollout status " in c]
    assert rollouts == [f"kubectl {CTX} rollout status daemonset/{name} --namespace "
                        "istio-system --timeout=180s" for name in ("istio-cni-node", "ztunnel")]


def test_kind_failing_half_way_deletes_the_cluster(doubles: Doubles) -> None:
    done = doubles.meshlab("cluster", "create", "--student", "alice", DOUBLE_KIND_CREATE="fail")
    assert done.returncode == 1
    assert doubles.calls() == [
        "kind get clusters",
        f"kind create cluster --name meshlab-alice --image {version('KIND_NODE_IMAGE')} "
        "--wait 120s --config=-",
        "kind delete cluster --name meshlab-alice"]
    message = done.stderr
    assert message.startswith("meshlab: step 2 (create kind cluster meshlab-alice) failed: "
                              "exit 1; `kind create cluster --name meshlab-alice")
    assert "ERROR: failed to create cluster: failed to init node with kubeadm" in message
    assert "what to do: check Docker (`docker info`)" in message
    assert "the half-created cluster meshlab-alice was deleted" in message
    assert "Traceback" not in message


def test_a_mesh_that_never_becomes_ready_fails_after_bounded_retries(doubles: Doubles) -> None:
    done = doubles.meshlab("cluster", "create", "--student", "alice", "--mesh", "linkerd",
                           "--retry-delay", "0", DOUBLE_LINKERD_CHECK="never")
    assert done.returncode == 1
    calls = doubles.calls()
    checks = [c for c in calls if c == f"linkerd {CTX} check --wait=180s"]
    assert len(checks) == 3  # the first attempt and two retries
    assert not any("viz install" in c for c in calls)  # nothing after the failed step
    assert calls[-1] == "kind delete cluster --name meshlab-alice"
    assert "attempt 2 of 3 failed (exit 1); retrying in 0 s" in done.stdout
    assert "step 7 (linkerd check) failed: exit 1 after 3 attempts" in done.stderr
    assert "× control plane pods are ready" in done.stderr
    assert "see https://linkerd.io/2/checks/#l5d-api-control-ready for hints" in done.stderr
    assert "what to do: the control plane did not become ready" in done.stderr


def test_a_check_that_passes_on_its_second_attempt_goes_on(doubles: Doubles) -> None:
    done = doubles.meshlab("cluster", "create", "--student", "alice", "--retry-delay", "0",
                           DOUBLE_KUBECTL_WAIT="once")
    assert done.returncode == 0, done.stderr
    waits = [c for c in doubles.calls() if "wait --for=condition=Available" in c]
    assert len(waits) == 3  # istiod's wait twice, the add-ons' once
    assert "step 6/10: wait for istiod and the ingress gateway: attempt 1 of 3 failed" \
        in done.stdout


def test_keep_on_failure_keeps_the_half_created_cluster(doubles: Doubles) -> None:
    done = doubles.meshlab("cluster", "create", "--student", "alice", "--retry-delay", "0",
                           "--keep-on-failure", DOUBLE_KUBECTL_WAIT="never")
    assert done.returncode == 1
    assert not any(c.startswith("kind delete") for c in doubles.calls())
    assert "error: timed out waiting for the condition on deployments/istiod" in done.stderr
    assert "the cluster meshlab-alice was kept (--keep-on-failure)" in done.stderr
    assert (doubles.state / "clusters" / "meshlab-alice").exists()


def test_an_existing_cluster_is_refused_and_left_alone(doubles: Doubles) -> None:
    (doubles.state / "clusters").mkdir(parents=True)
    (doubles.state / "clusters" / "meshlab-alice").touch()
    done = doubles.meshlab("cluster", "create", "--student", "alice")
    assert done.returncode == 1
    assert doubles.calls() == ["kind get clusters"]
    assert "a kind cluster named meshlab-alice exists already; nothing was changed" \
        in done.stderr
    assert "meshlab cluster delete --backend kind --student alice" in done.stderr


def test_a_missing_tool_is_one_line_naming_tools_install(doubles: Doubles,
                                                         tmp_path: Path) -> None:
    partial = tmp_path / "partial-bin"
    partial.mkdir()
    for name in ("kind", "kubectl", "helm", "record.sh"):  # istioctl is missing
        (partial / name).symlink_to(DOUBLES / name)
    done = subprocess.run([sys.executable, "-m", "labs.cli", "cluster", "create", "--student",
                           "alice"], capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**doubles.env(), "PATH": f"{partial}:/usr/bin:/bin"})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "meshlab: istioctl not found (neither in meshlab's tools directory nor on PATH): run "
        "`meshlab tools install`"]
    assert doubles.calls() == []  # nothing started


def test_the_image_cache_is_loaded_then_preloaded(doubles: Doubles, tmp_path: Path) -> None:
    cache = tmp_path / "images"
    cache.mkdir()
    images = sample_images()
    assert "docker.io/istio/examples-bookinfo-productpage-v1:1.20.1" in images
    missing = doubles.meshlab("cluster", "create", "--student", "alice", "--image-cache",
                              str(cache))
    assert missing.returncode == 1 and doubles.calls() == []
    assert f"the image cache {cache} lacks {len(images)} of the sample images" in missing.stderr
    for image in images:
        (cache / archive_name(image)).write_text(image)
    done = doubles.meshlab("cluster", "create", "--student", "alice", "--mesh", "none",
                           "--image-cache", str(cache))
    assert done.returncode == 0, done.stderr
    calls = doubles.calls()[4:]
    assert calls == [f"docker load --input {cache / archive_name(image)}" for image in images] \
        + [f"kind load docker-image {' '.join(images)} --name meshlab-alice"]


def test_dry_run_prints_the_commands_and_runs_nothing(doubles: Doubles) -> None:
    done = doubles.meshlab("cluster", "create", "--student", "alice", "--slot", "2",
                           "--dry-run")
    assert done.returncode == 0, done.stderr
    assert doubles.calls() == []
    lines = done.stdout.splitlines()
    heredoc = lines.index("EOF")
    assert lines[1].endswith("--config=- <<'EOF'")
    assert "  apiServerPort: 16445" in lines[1:heredoc]
    # with the heredoc folded back, the lines are the commands that would run
    commands = [lines[0], lines[1].removesuffix(" <<'EOF'"), *lines[heredoc + 1:]]
    assert commands == istio_commands()


def test_delete_and_bad_names(doubles: Doubles) -> None:
    done = doubles.meshlab("cluster", "delete", "--backend", "kind", "--student", "alice")
    assert done.returncode == 0, done.stderr
    assert doubles.calls() == ["kind delete cluster --name meshlab-alice"]
    assert "kind cluster meshlab-alice deleted" in done.stdout
    bad = doubles.meshlab("cluster", "create", "--student", "Alice Smith")
    assert bad.returncode == 1
    assert bad.stderr.startswith("meshlab: student name 'Alice Smith' cannot name a kind "
                                 "cluster: use 1-32 lower-case letters")
    assert "Traceback" not in bad.stderr


def test_the_doubles_are_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck; ./run test "
                    "installs it)")
    scripts = sorted(str(p) for p in DOUBLES.iterdir() if p.is_file())
    done = subprocess.run([shellcheck, "-x", *scripts], capture_output=True, text=True,
                          timeout=60, cwd=DOUBLES)
    assert done.returncode == 0, done.stdout + done.stderr


def test_what_we_author_passes_a_server_side_dry_run(cluster: ClusterRef,
                                                     namespace: str) -> None:
    """flagger-system (cluster-setup/kind) and the sample apps whose images the kind path
    preloads (labs/manifests), as the embedded API server validates them; nothing is kept."""
    files = [FLAGGER_NS, *(REPO / "labs" / "manifests" / name for name in (
        "bookinfo.yaml", "curl.yaml", "httpbin.yaml", "fortio.yaml", "ext-authz.yaml"))]
    args = [arg for path in files for arg in ("-f", str(path))]
    done = cluster.kubectl("apply", "--dry-run=server", f"--namespace={namespace}", *args,
                           timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "namespace/flagger-system created (server dry run)" in lines
    assert "deployment.apps/productpage-v1 created (server dry run)" in lines
    assert all(line.endswith("(server dry run)") for line in lines), lines
    assert cluster.kubectl("get", "namespace", "flagger-system").returncode != 0
