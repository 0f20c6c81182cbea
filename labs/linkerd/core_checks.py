"""The core health checks of `linkerd check`, each reading the cluster through kubectl.

Categories, descriptions, hint anchors, fatal/warning flags, order and error texts follow
linkerd/linkerd2 `pkg/healthcheck/healthcheck.go` (`allCategories`), `healthcheck_labels.go`,
`pkg/issuercerts/issuercerts.go` and `pkg/k8s/api.go`. What the embedded cluster cannot check
(admission webhooks and their certificates, a version service to ask, pod and service addresses
inside clusterNetworks, control-plane proxies) is reported as ‼ with the reason.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from labs.embedded.mesh.linkerd.injection import (
    CONFIG_MAP,
    CONTROL_PLANE_NS_LABEL,
    PROXY_CONTAINER,
    TRUST_ROOT_SHA,
    TRUST_ROOTS_KEY,
    values_from_objects,
)
from labs.linkerd import certs
from labs.linkerd.checks import (
    Checker,
    CheckFailed,
    Context,
    Obj,
    Skip,
    Unsupported,
    data_plane_namespace,
    expect_names,
    latest_version,
    namespace_exists,
    pods_running,
    proxy_container,
    versions_match,
)
from labs.linkerd.kube import KubeError

MIN_KUBERNETES = (1, 31, 0)  # pkg/k8s/api.go minAPIVersion
GATEWAY_CRDS = ("httproutes.gateway.networking.k8s.io", "grpcroutes.gateway.networking.k8s.io")
GATEWAY_MISSING = """The Gateway API CRDs must be installed prior to installing Linkerd. Run:

kubectl apply --server-side -f https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.5.1/standard-install.yaml

or see https://gateway-api.sigs.k8s.io/guides/#installing-gateway-api for more options."""
LINKERD_CRDS = Path(__file__).resolve().parents[1] / "embedded/apiserver/crds/linkerd.yaml"
SERVICE_ACCOUNTS = ("linkerd-destination", "linkerd-identity", "linkerd-proxy-injector")
CONTROL_PLANE_COMPONENTS = ("destination", "identity", "proxy-injector")
NO_CHANNEL = "unable to determine version channel"
NO_WEBHOOKS = ("the embedded API server serves no admissionregistration.k8s.io API: Linkerd's "
               "proxy injector is an admission step inside it "
               "(labs/embedded/mesh/linkerd/injection.py), with no webhook or webhook certificate "
               "to check")


def _client(ctx: Context) -> None:
    path = ctx.kube.ref.kubeconfig
    try:
        config = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CheckFailed(f"error configuring Kubernetes API client: {exc}") from None
    contexts = [c.get("name") for c in config.get("contexts") or []]
    if ctx.kube.ref.context not in contexts:
        raise CheckFailed(f'error configuring Kubernetes API client: context '
                          f'"{ctx.kube.ref.context}" does not exist')


def _query(ctx: Context) -> None:
    if not ctx.kube.server_version().get("gitVersion"):
        raise CheckFailed("the server did not report its version")


def _kubernetes_version(ctx: Context) -> None:
    git_version = str(ctx.kube.server_version().get("gitVersion", ""))
    match = re.match(r"v?(\d+)\.(\d+)\.(\d+)", git_version)
    if match is None:
        raise CheckFailed(f"could not parse Kubernetes version {git_version!r}")
    found = tuple(int(part) for part in match.groups())
    if found < MIN_KUBERNETES:
        raise CheckFailed("Kubernetes is on version [{}.{}.{}], but version [{}.{}.{}] or more "
                          "recent is required".format(*found, *MIN_KUBERNETES))


def _gateway_crds(ctx: Context) -> None:
    for name in GATEWAY_CRDS:
        crd = ctx.kube.get("customresourcedefinitions", name)
        if crd is None:
            continue
        if not any(v.get("name") == "v1" for v in (crd.get("spec") or {}).get("versions") or []):
            raise CheckFailed(f"the {name} CRD is missing the v1 version, please upgrade to "
                              "Gateway API v1.1.1 or later")
        return
    raise CheckFailed(GATEWAY_MISSING)


def _namespace_absent(ctx: Context) -> None:
    if ctx.kube.get("namespaces", ctx.control_plane_ns) is not None:
        raise CheckFailed(f"The \"{ctx.control_plane_ns}\" namespace already exists")


def _can(verb: str, resource: str, namespace: str | None = "") -> Callable[[Context], None]:
    """CheckCanPerformAction, through `kubectl auth can-i`, in `namespace` (empty: the control
    plane's; None: cluster-scoped)."""
    def check(ctx: Context) -> None:
        scope = ([] if namespace is None
                 else [f"--namespace={namespace or ctx.control_plane_ns}"])
        done = ctx.kube.ref.kubectl("auth", "can-i", verb, resource, *scope, timeout=30)
        if done.stdout.strip() == "yes":
            return
        if done.returncode != 0 and done.stdout.strip() != "no":
            raise Unsupported(f"cannot ask the API server whether it may {verb} {resource}: "
                              f"{done.stderr.strip() or 'no answer'}")
        raise CheckFailed(f"not authorized to access {resource}")
    return check


def _extension_apiserver_cm(ctx: Context) -> None:
    if ctx.kube.get("configmaps", "extension-apiserver-authentication", "kube-system") is None:
        raise Unsupported("the embedded API server has no "
                          "kube-system/extension-apiserver-authentication ConfigMap (it serves "
                          "no aggregated APIs)")


def _clock_skew(ctx: Context) -> None:
    for node in ctx.kube.cluster_items("nodes"):
        for condition in (node.get("status") or {}).get("conditions") or []:
            beat = condition.get("lastHeartbeatTime")
            if condition.get("type") != "Ready" or not beat:
                continue
            when = dt.datetime.fromisoformat(beat.replace("Z", "+00:00"))
            if abs(ctx.now - when) > dt.timedelta(minutes=5):
                raise CheckFailed(f"clock skew detected for node(s): "
                                  f"{node['metadata']['name']}")


def _linkerd_config(ctx: Context) -> None:
    config = ctx.config_map(CONFIG_MAP)
    if config is None:
        raise CheckFailed(f'configmaps "{CONFIG_MAP}" not found')
    try:
        values = yaml.safe_load((config.get("data") or {}).get("values") or "") or {}
    except yaml.YAMLError as exc:
        raise CheckFailed(f"could not read {CONFIG_MAP} values: {exc}") from None
    ctx.values = values if isinstance(values, dict) else {}


def components_selector(ctx: Context) -> str:
    return f"{CONTROL_PLANE_NS_LABEL},!linkerd.io/cni-resource"


def _heartbeat_sa(ctx: Context) -> None:
    if ctx.values.get("disableHeartBeat"):
        return
    expect_names("serviceaccounts", "ServiceAccounts", ctx.kube.items(
        "serviceaccounts", ctx.control_plane_ns, components_selector(ctx)),
        ["linkerd-heartbeat"])


def _replica_sets(ctx: Context) -> None:
    errors = [f"{c.get('reason')}: {c.get('message')}"
              for rs in ctx.kube.items("replicasets", ctx.control_plane_ns)
              for c in (rs.get("status") or {}).get("conditions") or []
              if c.get("type") == "ReplicaFailure" and c.get("status") == "True"]
    if errors:
        raise CheckFailed("\n   ".join(errors))


def _unschedulable(ctx: Context) -> None:
    for pod in ctx.kube.items("pods", ctx.control_plane_ns):
        for condition in (pod.get("status") or {}).get("conditions") or []:
            if condition.get("reason") == "Unschedulable":
                raise CheckFailed(f"{pod['metadata']['name']}: {condition.get('message', '')}")


def _control_plane_pods(ctx: Context) -> None:
    """validateControlPlanePods: each component has a running pod whose containers are all
    ready (fresh each try: the check is retried while the pods start)."""
    ctx.kube.forget("pods")
    pods = ctx.kube.items("pods", ctx.control_plane_ns, "linkerd.io/control-plane-component")
    for component in CONTROL_PLANE_COMPONENTS:
        running = [p for p in pods
                   if p["metadata"].get("labels", {}).get(
                       "linkerd.io/control-plane-component") == component
                   and (p.get("status") or {}).get("phase") == "Running"]
        if not running:
            raise CheckFailed(f'No running pods for "linkerd-{component}"')
        error = ""
        for pod in running:
            statuses = (pod.get("status") or {}).get("containerStatuses") or []
            not_ready = [s["name"] for s in statuses if not s.get("ready")]
            if not not_ready and statuses:
                break
            error = (f"pod/{pod['metadata']['name']} container "
                     f"{not_ready[0] if not_ready else '?'} is not ready")
        else:
            raise CheckFailed(error)


def _networks(ctx: Context) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    raw = str(ctx.values.get("clusterNetworks") or "")
    try:
        return [ipaddress.ip_network(n) for n in raw.strip(",").split(",") if n]
    except ValueError as exc:
        raise CheckFailed(str(exc)) from None


def _in_networks(ip: str, networks: list[Any]) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in network for network in networks)


def _node_pod_cidrs(ctx: Context) -> None:
    networks = _networks(ctx)
    cidrs = [n["spec"]["podCIDR"] for n in ctx.kube.cluster_items("nodes")
             if (n.get("spec") or {}).get("podCIDR")]
    if not cidrs:
        raise Skip("skipping check because the nodes aren't exposing podCIDR")
    bad = sorted(c for c in cidrs if not any(
        ipaddress.ip_network(c, strict=False).subnet_of(n) for n in networks
        if n.version == ipaddress.ip_network(c, strict=False).version))
    if bad:
        escaped = "\\,".join(bad)
        raise CheckFailed(f"node has podCIDR(s) {bad} which are not contained in the Linkerd "
                          f"clusterNetworks.\n\tTry installing linkerd via --set "
                          f'clusterNetworks="{escaped}"')


def _quoted_networks(ctx: Context) -> str:
    """Go's `[%q]` of the clusterNetworks value."""
    return f"[{json.dumps(str(ctx.values.get('clusterNetworks') or ''))}]"


def _loopback(ip: str, what: str, ctx: Context) -> None:
    """The embedded cluster's addresses are loopback ones by design: say so (‼)."""
    if _in_networks(ip, [ipaddress.ip_network("127.0.0.0/8")]):
        raise Unsupported(f"{what} on the embedded cluster are loopback addresses ({ip}…), so "
                          f"Linkerd's clusterNetworks {_quoted_networks(ctx)} cannot contain "
                          "them")


def _all_pods_in_networks(ctx: Context) -> None:
    networks = _networks(ctx)
    for pod in ctx.kube.items("pods"):
        ip = (pod.get("status") or {}).get("podIP") or ""
        if (pod.get("spec") or {}).get("hostNetwork") or not ip:
            continue
        _loopback(ip, "pod IPs (pods share 127.0.0.1, each port on its own host port)", ctx)
        if not _in_networks(ip, networks):
            meta = pod["metadata"]
            raise CheckFailed(f"the Linkerd clusterNetworks {_quoted_networks(ctx)} do not "
                              f"include pod {meta['namespace']}/{meta['name']} ({ip})")


def _all_services_in_networks(ctx: Context) -> None:
    networks = _networks(ctx)
    for svc in ctx.kube.items("services"):
        ip = (svc.get("spec") or {}).get("clusterIP") or ""
        if not ip or ip == "None":
            continue
        _loopback(ip, "Service cluster IPs", ctx)
        if not _in_networks(ip, networks):
            meta = svc["metadata"]
            raise CheckFailed(f"the Linkerd clusterNetworks {_quoted_networks(ctx)} do not "
                              f"include svc {meta['namespace']}/{meta['name']} ({ip})")


def _rbac(resource: str, label: str) -> Callable[[Context], None]:
    def check(ctx: Context) -> None:
        ns = ctx.control_plane_ns
        expect_names(resource, label, ctx.kube.cluster_items(resource, components_selector(ctx)),
                      [f"linkerd-{ns}-identity", f"linkerd-{ns}-proxy-injector"])
    return check


def _service_accounts(ctx: Context) -> None:
    expect_names("serviceaccounts", "ServiceAccounts", ctx.kube.items(
        "serviceaccounts", ctx.control_plane_ns, components_selector(ctx)),
        list(SERVICE_ACCOUNTS))


def _crds(ctx: Context) -> None:
    """CheckCustomResourceDefinitions: every CRD Linkerd installs is there."""
    expected = [doc["metadata"]["name"] for doc in yaml.safe_load_all(LINKERD_CRDS.read_text())
                if doc and doc.get("kind") == "CustomResourceDefinition"]
    expect_names("customresourcedefinitions", "CustomResourceDefinitions",
                  ctx.kube.cluster_items("customresourcedefinitions"), expected)


def _webhook_configs(resource: str, names: list[str], label: str) -> Callable[[Context], None]:
    def check(ctx: Context) -> None:
        try:
            found = ctx.kube.cluster_items(resource, components_selector(ctx))
        except KubeError as err:
            if "doesn't have a resource type" in str(err):
                raise Unsupported(NO_WEBHOOKS) from None
            raise
        expect_names(resource, label, found, names)
    return check


def _docker_runtime(ctx: Context) -> None:
    if (ctx.values.get("proxyInit") or {}).get("runAsRoot"):
        return
    for node in ctx.kube.cluster_items("nodes"):
        runtime = ((node.get("status") or {}).get("nodeInfo") or {}).get(
            "containerRuntimeVersion", "")
        if str(runtime).startswith("docker:"):
            raise CheckFailed("there are nodes using the docker container runtime and "
                              "proxy-init container must run as root user.\ntry installing "
                              "linkerd via --set proxyInit.runAsRoot=true")


def _certificate_config(ctx: Context) -> None:
    """checkCertificatesConfig for the linkerd.io/tls scheme (what `linkerd install` uses)."""
    scheme = ((ctx.values.get("identity") or {}).get("issuer") or {}).get("scheme") or ""
    if scheme not in ("", "linkerd.io/tls"):
        raise Unsupported(f"issuer scheme {scheme!r}: the embedded cluster generates a "
                          "linkerd.io/tls issuer (labs/embedded/mesh/linkerd/identity.py)")
    secret = ctx.kube.get("secrets", "linkerd-identity-issuer", ctx.control_plane_ns)
    if secret is None:
        raise CheckFailed('secrets "linkerd-identity-issuer" not found')
    data = secret.get("data") or {}
    for key, what, external in (("crt.pem", "issuer certificate", "false"),
                                ("key.pem", "issuer key", "true")):
        if key not in data:
            raise CheckFailed(f"key {key} containing the {what} needs to exist in secret "
                              f"linkerd-identity-issuer if --identity-external-issuer={external}")
    try:
        crt = x509.load_pem_x509_certificate(base64.b64decode(data["crt.pem"]))
    except ValueError as exc:
        raise CheckFailed(f"could not parse issuer certificate: {exc}") from None
    try:
        key = serialization.load_pem_private_key(base64.b64decode(data["key.pem"]), None)
    except (ValueError, TypeError) as exc:
        raise CheckFailed(f"failed to read private key: {exc}") from None
    if key.public_key() != crt.public_key():
        raise CheckFailed("tls: private key does not match public key")
    pem = str(ctx.values.get("identityTrustAnchorsPEM") or "")
    try:
        anchors = x509.load_pem_x509_certificates(pem.encode())
    except ValueError:
        raise CheckFailed("failed to decode PEM certificates: no certificates in "
                          f"{CONFIG_MAP} values.identityTrustAnchorsPEM") from None
    ctx.issuer, ctx.trust_anchors = crt, anchors


def _each_anchor(ctx: Context, problem: Callable[[x509.Certificate], str | None],
                 header: str) -> None:
    found = [f"{certs.describe(a)} {p}" for a in ctx.trust_anchors
             if (p := problem(a)) is not None]
    if found:
        raise CheckFailed(f"{header}:\n\t" + "\n\t".join(found))


def _issuer(ctx: Context) -> x509.Certificate:
    assert ctx.issuer is not None  # set by the fatal "certificate config is valid"
    return ctx.issuer


def _issuer_problem(problem: str | None, prefix: str) -> None:
    if problem is not None:
        raise CheckFailed(f"{prefix}{problem}")


def _issued_by_anchor(ctx: Context) -> None:
    if not certs.issued_by(_issuer(ctx), ctx.trust_anchors):
        raise CheckFailed("x509: certificate signed by unknown authority")


def _data_plane_certificates(ctx: Context) -> None:
    """checkPodsProxiesCertificate: each meshed pod outside the control plane carries the
    current trust bundle (its proxy's LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS, and the
    linkerd.io/trust-root-sha256 annotation computed from it)."""
    raw = ctx.trust_bundle()
    bundle = raw.strip()
    expected_sha = values_from_objects({}, {"data": {TRUST_ROOTS_KEY: raw}}, "").trust_root_sha256
    offending = []
    for pod in ctx.data_plane_pods():
        meta = pod["metadata"]
        if meta.get("namespace") == ctx.control_plane_ns:
            continue
        proxy = proxy_container(pod)
        if proxy is None:
            continue
        anchors = next((e.get("value", "") for e in proxy.get("env") or []
                        if e.get("name") == "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS"), "")
        sha = (meta.get("annotations") or {}).get(TRUST_ROOT_SHA)
        if anchors.strip() != bundle or (sha is not None and sha != expected_sha):
            offending.append(f"* {meta['name']}" if ctx.data_plane_ns
                             else f"* {meta['namespace']}/{meta['name']}")
    if offending:
        raise CheckFailed("Some pods do not have the current trust bundle and must be "
                          "restarted:\n\t" + "\n\t".join(offending))


def _no_channel(ctx: Context) -> None:
    """What the up-to-date checks say without the latest versions (version.Channels empty)."""
    raise Unsupported(NO_CHANNEL)


def _server_version(ctx: Context) -> None:
    if not ctx.values:
        _linkerd_config(ctx)
    if not ctx.values.get("linkerdVersion"):
        raise CheckFailed(f"{CONFIG_MAP} has no linkerdVersion")


def _server_matches_cli(ctx: Context) -> None:
    server = ctx.values.get("linkerdVersion")
    if server != ctx.cli_version:
        raise CheckFailed(f"control plane running {server} but cli running {ctx.cli_version}")


def _control_plane_proxy_pods(ctx: Context) -> list[Obj]:
    return ctx.kube.items("pods", ctx.control_plane_ns, CONTROL_PLANE_NS_LABEL)


def _control_plane_proxies_healthy(ctx: Context) -> None:
    pods = _control_plane_proxy_pods(ctx)
    if not any(proxy_container(p) for p in pods):
        raise Unsupported("the embedded cluster runs Linkerd's control-plane pods without "
                          f"{PROXY_CONTAINER} (labs/manifests/linkerd-control-plane.yaml): "
                          "there is no control-plane proxy to check")
    pods_running(pods, ctx.control_plane_ns)


def _data_plane_ready(ctx: Context) -> None:
    ctx.kube.forget("pods")
    pods_running(ctx.data_plane_pods(), ctx.data_plane_ns)


def _labels_misplaced(objects: list[Obj], field_name: str, bad: Callable[[str], bool],
                      header: str) -> None:
    invalid = []
    for obj in objects:
        keys = sorted(k for k in (obj["metadata"].get(field_name) or {}) if bad(k))
        if keys:
            meta = obj["metadata"]
            invalid.append(f"\t* {meta['namespace']}/{meta['name']}\n\t\t" + "\n\t\t".join(keys))
    if invalid:
        raise CheckFailed(f"{header}:\n" + "\n".join(invalid))


def _annotation_only(key: str) -> bool:
    """validAsAnnotationOnly / validAsAnnotationPrefixOnly (healthcheck_labels.go)."""
    return key == "linkerd.io/inject" or key.startswith(("config.linkerd.io",
                                                         "config.alpha.linkerd.io"))


def _pod_labels(ctx: Context) -> None:
    _labels_misplaced(ctx.data_plane_pods(), "labels", _annotation_only,
                      "Some labels on data plane pods should be annotations")


def _service_labels(ctx: Context) -> None:
    _labels_misplaced(ctx.kube.items("services", ctx.data_plane_ns), "labels", _annotation_only,
                      "Some labels on data plane services should be annotations")


def _service_annotations(ctx: Context) -> None:
    _labels_misplaced(ctx.kube.items("services", ctx.data_plane_ns), "annotations",
                      lambda key: key == "mirror.linkerd.io/exported",
                      "Some annotations on data plane services should be labels")


def _opaque_ports(ctx: Context) -> None:
    """checkMisconfiguredOpaquePortAnnotations, for a service's opaque ports: a pod behind it
    exposing a targeted port must mark it opaque too."""
    annotation = "config.linkerd.io/opaque-ports"
    pods = {(p["metadata"]["namespace"], p["metadata"]["name"]): p
            for p in ctx.kube.items("pods", ctx.data_plane_ns)}
    errors = []
    for svc in ctx.kube.items("services", ctx.data_plane_ns):
        svc_ports = [p for p in (svc["metadata"].get("annotations") or {}).get(
            annotation, "").split(",") if p]
        if (svc.get("spec") or {}).get("clusterIP") == "None" or not svc_ports:
            continue
        ns = svc["metadata"]["namespace"]
        endpoints = ctx.kube.get("endpoints", svc["metadata"]["name"], ns) or {}
        for subset in endpoints.get("subsets") or []:
            for address in subset.get("addresses") or []:
                pod = pods.get((ns, (address.get("targetRef") or {}).get("name", "")))
                if pod is not None:
                    errors.extend(_opaque_mismatch(svc, pod, svc_ports, annotation))
    if errors:
        raise CheckFailed("\n    ".join(f"\t* {e}" for e in errors))


def _opaque_mismatch(svc: Obj, pod: Obj, svc_ports: list[str], annotation: str) -> Iterator[str]:
    pod_ports = (pod["metadata"].get("annotations") or {}).get(annotation, "").split(",")
    container_ports = [cp for c in [*(pod["spec"].get("initContainers") or []),
                                    *(pod["spec"].get("containers") or [])]
                       for cp in c.get("ports") or []]
    for port in svc_ports:
        for sp in (svc.get("spec") or {}).get("ports") or []:
            if str(sp.get("port")) != port:
                continue
            target = sp.get("targetPort", sp.get("port"))
            for cp in container_ports:
                if cp.get("containerPort") == target or cp.get("name") == target:
                    wanted = str(target if isinstance(target, int) else cp["containerPort"])
                    if wanted not in pod_ports:
                        yield (f"service {svc['metadata']['name']} expects target port {wanted} "
                               f"to be opaque; add it to pod {pod['metadata']['name']} "
                               f"{annotation} annotation")


def _extension_namespaces(ctx: Context) -> None:
    seen: dict[str, list[str]] = {}
    for ns in ctx.kube.cluster_items("namespaces", "linkerd.io/extension"):
        extension = ns["metadata"]["labels"]["linkerd.io/extension"]
        seen.setdefault(extension, []).append(f"\t\t* {ns['metadata']['name']}")
    errors = [f'\t* label "linkerd.io/extension={ext}" is present on more than one '
              f"namespace:\n" + "\n".join(names) for ext, names in seen.items() if len(names) > 1]
    if errors:
        raise CheckFailed("some extensions have invalid configuration\n" + "\n".join(errors))


def _anchor_check(ctx: Context, kind: str) -> None:
    if kind == "algo":
        _each_anchor(ctx, certs.trust_anchor_algo_problem, "Invalid trustAnchors")
    elif kind == "valid":
        _each_anchor(ctx, lambda a: certs.validity_problem(a, ctx.now), "Invalid anchors")
    else:
        _each_anchor(ctx, lambda a: certs.expiry_problem(a, ctx.now), "Anchors expiring soon")


def categories() -> list[tuple[str, list[Checker]]]:
    """allCategories, in upstream's order."""
    def no_webhooks(ctx: Context) -> None:
        raise Unsupported(NO_WEBHOOKS)

    return [
        ("kubernetes-api", [
            Checker("can initialize the client", "k8s-api", _client, fatal=True),
            Checker("can query the Kubernetes API", "k8s-api", _query, fatal=True)]),
        ("kubernetes-version", [
            Checker("is running the minimum Kubernetes API version", "k8s-version",
                    _kubernetes_version)]),
        ("gateway-api-crd", [
            Checker("Gateway API CRDs are installed", "gateway-api-crd", _gateway_crds,
                    fatal=True)]),
        ("pre-kubernetes-setup", [
            Checker("control plane namespace does not already exist", "pre-ns", _namespace_absent),
            Checker("can create non-namespaced resources", "pre-k8s-cluster-k8s",
                    _can("create", "clusterroles", None)),
            Checker("can create ServiceAccounts", "pre-k8s", _can("create", "serviceaccounts")),
            Checker("can create Services", "pre-k8s", _can("create", "services")),
            Checker("can create Deployments", "pre-k8s", _can("create", "deployments")),
            Checker("can create CronJobs", "pre-k8s", _can("create", "cronjobs")),
            Checker("can create ConfigMaps", "pre-k8s", _can("create", "configmaps")),
            Checker("can create Secrets", "pre-k8s", _can("create", "secrets")),
            Checker("can read Secrets", "pre-k8s", _can("get", "secrets", "kube-system")),
            Checker("can read extension-apiserver-authentication configmap", "pre-k8s",
                    _extension_apiserver_cm),
            Checker("no clock skew detected", "pre-k8s-clock-skew", _clock_skew, warning=True)]),
        ("linkerd-existence", [
            Checker("'linkerd-config' config map exists", "l5d-existence-linkerd-config",
                    _linkerd_config, fatal=True),
            Checker("heartbeat ServiceAccount exist", "l5d-existence-sa", _heartbeat_sa,
                    fatal=True),
            Checker("control plane replica sets are ready", "l5d-existence-replicasets",
                    _replica_sets, fatal=True, retry=True),
            Checker("no unschedulable pods", "l5d-existence-unschedulable-pods", _unschedulable,
                    warning=True, retry=True),
            Checker("control plane pods are ready", "l5d-api-control-ready", _control_plane_pods,
                    fatal=True, retry=True),
            Checker("cluster networks contains all node podCIDRs", "l5d-cluster-networks-cidr",
                    _node_pod_cidrs),
            Checker("cluster networks contains all pods", "l5d-cluster-networks-pods",
                    _all_pods_in_networks),
            Checker("cluster networks contains all services", "l5d-cluster-networks-pods",
                    _all_services_in_networks)]),
        ("linkerd-config", [
            Checker("control plane Namespace exists", "l5d-existence-ns",
                    lambda ctx: namespace_exists(ctx, ctx.control_plane_ns), fatal=True),
            Checker("control plane ClusterRoles exist", "l5d-existence-cr",
                    _rbac("clusterroles", "ClusterRoles"), fatal=True),
            Checker("control plane ClusterRoleBindings exist", "l5d-existence-crb",
                    _rbac("clusterrolebindings", "ClusterRoleBindings"), fatal=True),
            Checker("control plane ServiceAccounts exist", "l5d-existence-sa", _service_accounts,
                    fatal=True),
            Checker("control plane CustomResourceDefinitions exist", "l5d-existence-crd", _crds,
                    fatal=True),
            Checker("control plane MutatingWebhookConfigurations exist", "l5d-existence-mwc",
                    _webhook_configs("mutatingwebhookconfigurations",
                               ["linkerd-proxy-injector-webhook-config"],
                               "MutatingWebhookConfigurations"), fatal=True),
            Checker("control plane ValidatingWebhookConfigurations exist", "l5d-existence-vwc",
                    _webhook_configs("validatingwebhookconfigurations",
                               ["linkerd-sp-validator-webhook-config"],
                               "ValidatingWebhookConfigurations"), fatal=True),
            Checker("proxy-init container runs as root user if docker container runtime is used",
                    "l5d-proxy-init-run-as-root", _docker_runtime)]),
        ("linkerd-identity", [
            Checker("certificate config is valid", "l5d-identity-cert-config-valid",
                    _certificate_config, fatal=True),
            Checker("trust anchors are using supported crypto algorithm",
                    "l5d-identity-trustAnchors-use-supported-crypto",
                    lambda ctx: _anchor_check(ctx, "algo"), fatal=True),
            Checker("trust anchors are within their validity period",
                    "l5d-identity-trustAnchors-are-time-valid",
                    lambda ctx: _anchor_check(ctx, "valid"), fatal=True),
            Checker("trust anchors are valid for at least 60 days",
                    "l5d-identity-trustAnchors-not-expiring-soon",
                    lambda ctx: _anchor_check(ctx, "expiry"), warning=True),
            Checker("issuer cert is using supported crypto algorithm",
                    "l5d-identity-issuer-cert-uses-supported-crypto",
                    lambda ctx: _issuer_problem(certs.issuer_algo_problem(_issuer(ctx)),
                                                "issuer certificate "), fatal=True),
            Checker("issuer cert is within its validity period",
                    "l5d-identity-issuer-cert-is-time-valid",
                    lambda ctx: _issuer_problem(certs.validity_problem(_issuer(ctx), ctx.now),
                                                "issuer certificate is "), fatal=True),
            Checker("issuer cert is valid for at least 60 days",
                    "l5d-identity-issuer-cert-not-expiring-soon",
                    lambda ctx: _issuer_problem(certs.expiry_problem(_issuer(ctx), ctx.now),
                                                "issuer certificate "), warning=True),
            Checker("issuer cert is issued by the trust anchor",
                    "l5d-identity-issuer-cert-issued-by-trust-anchor", _issued_by_anchor)]),
        ("linkerd-webhooks-and-apisvc-tls", [
            Checker(f"{webhook} {what}", f"l5d-{webhook}-webhook-cert-{anchor}", no_webhooks,
                    fatal=not soon, warning=soon)
            for webhook in ("proxy-injector", "sp-validator", "policy-validator")
            for what, anchor, soon in (("webhook has valid cert", "valid", False),
                                       ("cert is valid for at least 60 days",
                                        "not-expiring-soon", True))]),
        ("linkerd-identity-data-plane", [
            Checker("data plane proxies certificate match CA",
                    "l5d-identity-data-plane-proxies-certs-match-ca", _data_plane_certificates,
                    warning=True)]),
        ("linkerd-version", [
            Checker("can determine the latest version", "l5d-version-latest", latest_version,
                    warning=True),
            Checker("cli is up-to-date", "l5d-version-cli", _no_channel, warning=True)]),
        ("control-plane-version", [
            Checker("can retrieve the control plane version", "l5d-version-control",
                    _server_version, fatal=True, retry=True),
            Checker("control plane is up-to-date", "l5d-version-control", _no_channel,
                    warning=True),
            Checker("control plane and cli versions match", "l5d-version-control",
                    _server_matches_cli, warning=True)]),
        ("linkerd-control-plane-proxy", [
            Checker("control plane proxies are healthy", "l5d-cp-proxy-healthy",
                    _control_plane_proxies_healthy, fatal=True, retry=True),
            Checker("control plane proxies are up-to-date", "l5d-cp-proxy-version",
                    _no_channel, warning=True),
            Checker("control plane proxies and cli versions match", "l5d-cp-proxy-cli-version",
                    lambda ctx: versions_match(_control_plane_proxy_pods(ctx), ctx.cli_version),
                    warning=True)]),
        ("linkerd-data-plane", [
            Checker("data plane namespace exists", "l5d-data-plane-exists",
                    data_plane_namespace, fatal=True),
            Checker("data plane proxies are ready", "l5d-data-plane-ready", _data_plane_ready,
                    fatal=True, retry=True),
            Checker("data plane is up-to-date", "l5d-data-plane-version",
                    _no_channel, warning=True),
            Checker("data plane and cli versions match", "l5d-data-plane-cli-version",
                    lambda ctx: versions_match(ctx.data_plane_pods(), ctx.cli_version),
                    warning=True),
            Checker("data plane pod labels are configured correctly", "l5d-data-plane-pod-labels",
                    _pod_labels, warning=True),
            Checker("data plane service labels are configured correctly",
                    "l5d-data-plane-services-labels", _service_labels, warning=True),
            Checker("data plane service annotations are configured correctly",
                    "l5d-data-plane-services-annotations", _service_annotations, warning=True),
            Checker("opaque ports are properly annotated", "linkerd-opaque-ports-definition",
                    _opaque_ports, warning=True)]),
        ("linkerd-extension-checks", [
            Checker("namespace configuration for extensions", "l5d-extension-namespaces",
                    _extension_namespaces, warning=True)]),
    ]
