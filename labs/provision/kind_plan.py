"""Every command the kind backend runs, built as argv lists in this one place: create a
student's cluster (kind config from cluster-setup/kind/cluster.yaml), install Gateway API CRDs,
the mesh as its docs do it, verify it, the add-ons and Flagger, preload sample images; delete it.

Sources followed: Gateway API's standard-install.yaml with `kubectl apply --server-side`
(gateway-api site-src/guides/index.md); `istioctl install --set profile=default|ambient`
(istio.io docs/setup/install/istioctl, docs/ambient/install/istioctl); Istio's add-ons from
samples/addons on the release branch (istio.io docs/ops/integrations/{prometheus,grafana,
jaeger,kiali}); `linkerd install --crds | kubectl apply -f -`, `linkerd install | kubectl apply
-f -`, `linkerd check`, `linkerd viz install | kubectl apply -f -` (linkerd/website
linkerd.io/content/2-edge/getting-started/_index.md); Flagger's CRDs and chart with the mesh
provider and metrics server of fluxcd/flagger docs/gitbook/install/flagger-install-on-kubernetes.md
(Istio) and docs/gitbook/tutorials/linkerd-progressive-delivery.md (Linkerd: gatewayapi:v1beta1,
prometheus.linkerd-viz, linkerdAuthPolicy.create). Helm gets the chart with `--repo` rather
than `helm repo add`, so parallel installs do not race on the user's repositories.yaml.
Readiness is `kubectl wait` / `kubectl rollout status` for Istio (current istioctl has no
`verify-install`) and `linkerd check --wait` for Linkerd, each attempt bounded and retried.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path

import yaml

from labs.provision.steps import Step
from labs.setup.figures import kind_ports
from labs.versions import version

REPO = Path(__file__).resolve().parents[2]
KIND_DIR = REPO / "cluster-setup" / "kind"
CLUSTER_TEMPLATE = KIND_DIR / "cluster.yaml"
ISTIO_OVERLAY = KIND_DIR / "istio-ingress-nodeport.yaml"
FLAGGER_LINKERD = KIND_DIR / "flagger-linkerd.yaml"
MANIFESTS = REPO / "labs" / "manifests"
# The sample apps the labs deploy; their images are what `--image-cache` preloads.
SAMPLE_MANIFESTS = ("bookinfo.yaml", "curl.yaml", "httpbin.yaml", "fortio.yaml",
                    "ext-authz.yaml")
MESHES = ("istio", "ambient", "linkerd", "none")
CLUSTER_PREFIX = "meshlab-"
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$")
ISTIO_ADDONS = ("prometheus", "grafana", "jaeger", "kiali")
FLAGGER_REPO = "https://flagger.app"
WAIT = "180s"  # what each `kubectl wait` / `linkerd check --wait` allows per attempt
WAIT_S = 180.0
READY_RETRIES = 2  # a readiness check is tried 3 times before the step fails


class PlanError(ValueError):
    """The request cannot be turned into commands; the message says what to change."""


@dataclass(frozen=True)
class KindTarget:
    """One student's kind cluster: its name, its place on the host (slot: its ports), the mesh,
    and where its kubeconfig goes (None: kind's default, $KUBECONFIG or ~/.kube/config)."""

    student: str
    slot: int = 0
    mesh: str = "istio"
    image_cache: Path | None = None
    kubeconfig: Path | None = None

    def __post_init__(self) -> None:
        if not NAME.match(self.student):
            raise PlanError(f"student name {self.student!r} cannot name a kind cluster: use 1-32 "
                            "lower-case letters, digits and '-', starting and ending with a "
                            "letter or digit (e.g. 'alice' or 'student-07')")
        if self.mesh not in MESHES:
            raise PlanError(f"mesh {self.mesh!r} is not one of {', '.join(MESHES)}")
        if self.slot < 0:
            raise PlanError(f"slot {self.slot} is negative: slots count from 0")

    @property
    def cluster(self) -> str:
        return CLUSTER_PREFIX + self.student

    @property
    def context(self) -> str:
        """The kube context kind writes for the cluster (kind-<cluster name>)."""
        return "kind-" + self.cluster

    @property
    def api_port(self) -> int:
        return kind_ports(self.slot)[0]

    @property
    def ingress_port(self) -> int:
        return kind_ports(self.slot)[1]

    def access(self) -> str:
        """The line that makes the labs use this cluster (labs/cluster reads these)."""
        kubeconfig = f"KUBECONFIG={self.kubeconfig} " if self.kubeconfig else ""
        return f"{kubeconfig}MESHLAB_CONTEXT={self.context}"


def gateway_node_port(path: Path = ISTIO_OVERLAY) -> int:
    """The http2 nodePort the Istio overlay gives the ingress gateway (kind maps it)."""
    overlay = yaml.safe_load(path.read_text())
    for gateway in overlay["spec"]["components"]["ingressGateways"]:
        for port in gateway["k8s"]["service"]["ports"]:
            if port["name"] == "http2":
                return int(port["nodePort"])
    raise PlanError(f"{path} gives the ingress gateway no http2 nodePort")


def kind_config(target: KindTarget) -> str:
    """cluster.yaml with the student's ports, comment lines dropped."""
    text = string.Template(CLUSTER_TEMPLATE.read_text()).substitute(
        api_port=target.api_port, ingress_port=target.ingress_port,
        node_port=gateway_node_port())
    return "".join(line for line in text.splitlines(keepends=True)
                   if not line.lstrip().startswith("#"))


def sample_images() -> list[str]:
    """The container images of the sample apps, in manifest order, each once."""
    images: list[str] = []
    for name in SAMPLE_MANIFESTS:
        for doc in yaml.safe_load_all((MANIFESTS / name).read_text()):
            spec = ((doc or {}).get("spec") or {}).get("template", {}).get("spec") or {}
            for container in spec.get("containers", []) + spec.get("initContainers", []):
                if container["image"] not in images:
                    images.append(container["image"])
    return images


def archive_name(image: str) -> str:
    """The `docker save` archive of `image` in an image cache folder."""
    return re.sub(r"[/:@]", "_", image) + ".tar"


class _Commands:
    """The tools' flags that point them at the target's cluster."""

    def __init__(self, target: KindTarget) -> None:
        self.target = target
        where = ("--kubeconfig", str(target.kubeconfig)) if target.kubeconfig else ()
        self.kube = (*where, "--context", target.context)  # kubectl, istioctl, linkerd
        self.helm = (*where, "--kube-context", target.context)

    def kubectl(self, *args: str) -> tuple[str, ...]:
        return ("kubectl", *self.kube, *args)

    def wait_deployments(self, namespace: str, what: str, hint: str) -> Step:
        return Step(f"wait for {what}", (self.kubectl(
            "wait", "--for=condition=Available", "deployment", "--all", "--namespace",
            namespace, f"--timeout={WAIT}"),), timeout_s=WAIT_S + 30, retries=READY_RETRIES,
            hint=hint)


def create_plan(target: KindTarget) -> list[Step]:
    """The steps of `meshlab cluster create --backend kind`, in order."""
    run = _Commands(target)
    kubeconfig = ("--kubeconfig", str(target.kubeconfig)) if target.kubeconfig else ()
    steps = [
        Step("check the cluster name is free", (("kind", "get", "clusters"),), timeout_s=30,
             refuse_if_listed=target.cluster,
             hint=f"delete the old cluster first: meshlab cluster delete --backend kind "
                  f"--student {target.student}"),
        Step(f"create kind cluster {target.cluster}", (
            ("kind", "create", "cluster", "--name", target.cluster, "--image",
             version("KIND_NODE_IMAGE"), *kubeconfig, "--wait", "120s", "--config=-"),),
            stdin=kind_config(target), timeout_s=420,
            hint="check Docker (`docker info`), free memory and the ports with "
                 "`meshlab preflight --backend kind`"),
        Step("install the Gateway API CRDs", (run.kubectl(
            "apply", "--server-side", "-f",
            "https://github.com/kubernetes-sigs/gateway-api/releases/download/"
            f"{version('GATEWAY_API_VERSION')}/standard-install.yaml"),), timeout_s=120,
            retries=1, hint="check the host reaches github.com (or its proxy, HTTPS_PROXY)"),
        Step("wait for the Gateway API CRDs", (run.kubectl(
            "wait", "--for=condition=Established", "crd/gateways.gateway.networking.k8s.io",
            "crd/httproutes.gateway.networking.k8s.io", f"--timeout={WAIT}"),),
            timeout_s=WAIT_S + 30, retries=READY_RETRIES,
            hint="see `kubectl get crd` on the cluster"),
    ]
    if target.mesh in ("istio", "ambient"):
        steps += _istio(run, target.mesh)
    elif target.mesh == "linkerd":
        steps += _linkerd(run)
    if target.image_cache is not None:
        steps += _preload(target)
    return steps


def _istio(run: _Commands, mesh: str) -> list[Step]:
    profile = "default" if mesh == "istio" else "ambient"
    istio = version("ISTIO_VERSION")
    branch = "release-" + ".".join(istio.split(".")[:2])
    addons = [arg for name in ISTIO_ADDONS for arg in (
        "-f", f"https://raw.githubusercontent.com/istio/istio/{branch}/samples/addons/"
              f"{name}.yaml")]
    pods = "kubectl get pods -n istio-system; kubectl describe pods -n istio-system"
    steps = [
        Step(f"install Istio {istio} (profile {profile})", (
            ("istioctl", "install", *run.kube, "--set", f"profile={profile}", "-f",
             str(ISTIO_OVERLAY), "-y"),), timeout_s=600,
            hint=f"see {pods}; istioctl must be {istio} (`meshlab tools list`)"),
        run.wait_deployments("istio-system", "istiod and the ingress gateway",
                             f"the mesh did not become ready: see {pods}"),
    ]
    if mesh == "ambient":
        steps += [Step(f"wait for the {name} DaemonSet", (run.kubectl(
            "rollout", "status", f"daemonset/{name}", "--namespace", "istio-system",
            f"--timeout={WAIT}"),), timeout_s=WAIT_S + 30, retries=READY_RETRIES,
            hint=f"the ambient data plane did not become ready: see {pods}")
            for name in ("istio-cni-node", "ztunnel")]
    steps += [
        Step("install the add-ons (Prometheus, Grafana, Jaeger, Kiali)",
             (run.kubectl("apply", *addons),), timeout_s=180, retries=1,
             hint="check the host reaches raw.githubusercontent.com"),
        run.wait_deployments("istio-system", "the add-ons", f"see {pods}"),
        *_flagger(run, "istio-system", ("meshProvider=istio",
                                        "metricsServer=http://prometheus:9090")),
    ]
    return steps


def _linkerd(run: _Commands) -> list[Step]:
    linkerd = version("LINKERD_VERSION")
    apply = run.kubectl("apply", "-f", "-")
    check = "run `linkerd check` yourself and follow its hints"
    return [
        Step(f"install the Linkerd {linkerd} CRDs",
             (("linkerd", *run.kube, "install", "--crds"), apply), timeout_s=180,
             hint=f"linkerd must be {linkerd} (`meshlab tools list`)"),
        Step(f"install the Linkerd {linkerd} control plane",
             (("linkerd", *run.kube, "install"), apply), timeout_s=180, hint=check),
        Step("linkerd check", (("linkerd", *run.kube, "check", f"--wait={WAIT}"),),
             timeout_s=WAIT_S + 60, retries=READY_RETRIES,
             hint=f"the control plane did not become ready: {check}"),
        Step("install Linkerd viz (Prometheus, dashboard)",
             (("linkerd", *run.kube, "viz", "install"), apply), timeout_s=180, hint=check),
        Step("linkerd viz check", (("linkerd", *run.kube, "viz", "check", f"--wait={WAIT}"),),
             timeout_s=WAIT_S + 60, retries=READY_RETRIES,
             hint="viz did not become ready: run `linkerd viz check` and follow its hints"),
        Step("create the flagger-system namespace (meshed)",
             (run.kubectl("apply", "-f", str(FLAGGER_LINKERD)),), timeout_s=60),
        *_flagger(run, "flagger-system", ("meshProvider=gatewayapi:v1beta1",
                                          "metricsServer=http://prometheus.linkerd-viz:9090",
                                          "linkerdAuthPolicy.create=true")),
    ]


def _flagger(run: _Commands, namespace: str, settings: tuple[str, ...]) -> list[Step]:
    flagger = version("FLAGGER_VERSION")
    sets = [arg for setting in ("crd.create=false", *settings) for arg in ("--set", setting)]
    return [
        Step("install Flagger's CRDs", (run.kubectl(
            "apply", "-f", f"https://raw.githubusercontent.com/fluxcd/flagger/v{flagger}/"
            "artifacts/flagger/crd.yaml"),), timeout_s=120, retries=1,
            hint="check the host reaches raw.githubusercontent.com"),
        Step(f"install Flagger {flagger}", (
            ("helm", "upgrade", "--install", "flagger", "flagger", "--repo", FLAGGER_REPO,
             "--version", flagger, *run.helm, "--namespace", namespace, *sets, "--wait",
             "--timeout", "5m"),), timeout_s=360, retries=1,
            hint=f"see `helm status flagger -n {namespace}` and `kubectl get pods -n "
                 f"{namespace}`"),
    ]


def _preload(target: KindTarget) -> list[Step]:
    assert target.image_cache is not None
    images = sample_images()
    loads = [Step(f"load {image} into Docker", (
        ("docker", "load", "--input", str(target.image_cache / archive_name(image))),),
        timeout_s=300, hint=f"save it first: docker pull {image} && docker save --output "
                            f"{target.image_cache / archive_name(image)} {image}")
        for image in images]
    return [*loads, Step("preload the sample images into the node", (
        ("kind", "load", "docker-image", *images, "--name", target.cluster),), timeout_s=600,
        hint="see `docker images`; kind loads only images Docker has")]


def delete_plan(target: KindTarget) -> list[Step]:
    """`meshlab cluster delete --backend kind` (also the clean-up of a failed create)."""
    kubeconfig = ("--kubeconfig", str(target.kubeconfig)) if target.kubeconfig else ()
    return [Step(f"delete kind cluster {target.cluster}", (
        ("kind", "delete", "cluster", "--name", target.cluster, *kubeconfig),), timeout_s=180,
        hint=f"remove its container yourself: docker rm -f {target.cluster}-control-plane")]
