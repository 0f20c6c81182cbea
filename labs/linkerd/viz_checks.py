"""The checks of the viz extension, which `linkerd check` runs after its own for a namespace
labelled `linkerd.io/extension=viz` (upstream runs `linkerd viz check`: linkerd/linkerd2
`viz/pkg/healthcheck/healthcheck.go` `VizCategory`, `VizDataPlaneCategory`; `cli/cmd/
check_extensions.go`).

On the embedded cluster metrics-api, tap and the dashboard answer their probes only, and the
viz pods run without linkerd-proxy (labs/manifests/linkerd-viz.yaml): the checks that need
them say so (‼); the others read the cluster as upstream does.
"""

from __future__ import annotations

from collections.abc import Callable

from labs.linkerd.checks import (
    Checker,
    CheckFailed,
    Context,
    Obj,
    Unsupported,
    data_plane_namespace,
    expect_names,
    latest_version,
    pods_running,
    proxy_container,
    versions_match,
)
from labs.linkerd.viz import prom

EXTENSION_LABEL = "linkerd.io/extension"
VIZ_SELECTOR = f"{EXTENSION_LABEL}=viz"
COMPONENTS = ("web", "tap", "metrics-api", "tap-injector")
NO_METRICS_API = ("metrics-api on the embedded cluster answers its probes only (its gRPC API is "
                  "not emulated)")
NO_TAP_API = ("the embedded API server serves no apiregistration.k8s.io API: there is no tap "
              "APIService, nor a tap server certificate to check")
NOT_SCRAPING = ("the viz Prometheus runs the embedded cluster's Prometheus launcher: it scrapes "
                "the proxies with upstream's linkerd-proxy job from a target list the control "
                "plane writes (not prometheus-config, not kubernetes_sd), so this check is not "
                "emulated; `linkerd viz stat` shows what it scraped")


def viz_namespace(ctx: Context) -> str:
    found = ctx.kube.cluster_items("namespaces", VIZ_SELECTOR)
    if not found:
        raise CheckFailed('could not find the linkerd-viz extension. It can be installed by '
                          'running `linkerd viz install | kubectl apply -f -`')
    return str(found[0]["metadata"]["name"])


def installed(ctx: Context) -> bool:
    """runExtensionChecks runs an extension's checks when a namespace carries its label."""
    return bool(ctx.kube.cluster_items("namespaces", VIZ_SELECTOR))


def _viz_pods(ctx: Context) -> list[Obj]:
    return ctx.kube.items("pods", viz_namespace(ctx), VIZ_SELECTOR)


def _unmeshed(ctx: Context) -> bool:
    """The viz pods run without proxies, as the embedded cluster installs them."""
    return not any(proxy_container(p) for p in _viz_pods(ctx))


def _rbac(resource: str, label: str, suffixes: tuple[str, ...]) -> Callable[[Context], None]:
    def check(ctx: Context) -> None:
        ns = viz_namespace(ctx)
        names = [f"linkerd-{ns}-{s}" for s in suffixes] + ["linkerd-tap-injector"]
        expect_names(resource, label, ctx.kube.cluster_items(resource), names)
    return check


def _for_pods(ctx: Context, components: tuple[str, ...]) -> None:
    """CheckForPods: a pod labelled with each component."""
    present = {p["metadata"].get("labels", {}).get("component") for p in _viz_pods(ctx)}
    for component in components:
        if component not in present:
            raise CheckFailed(f"Could not find pods for deployment {component}")


def _pods_injected(ctx: Context) -> None:
    missing = [p["metadata"]["name"] for p in ctx.kube.items("pods", viz_namespace(ctx))
               if proxy_container(p) is None]
    if missing and _unmeshed(ctx):
        raise Unsupported("the embedded cluster runs linkerd-viz's pods without linkerd-proxy "
                          "(labs/manifests/linkerd-viz.yaml)")
    if missing:
        raise CheckFailed(f"could not find proxy container for {missing[0]} pod")


def _pods_running(ctx: Context) -> None:
    """Running and ready; with proxies, their proxies ready (CheckPodsRunning)."""
    ctx.kube.forget("pods")
    _for_pods(ctx, COMPONENTS)
    pods = _viz_pods(ctx)
    if not _unmeshed(ctx):
        pods_running(pods, viz_namespace(ctx))
        return
    for pod in pods:
        status = pod.get("status") or {}
        if status.get("phase") != "Running":
            raise CheckFailed(f'pod "{pod["metadata"]["name"]}" status is {status.get("phase")}')
        not_ready = [s["name"] for s in status.get("containerStatuses") or []
                     if not s.get("ready")]
        if not_ready:
            raise CheckFailed(f'container "{not_ready[0]}" in pod '
                              f'"{pod["metadata"]["name"]}" is not ready')


def _proxies_healthy(ctx: Context) -> None:
    if _unmeshed(ctx):
        raise Unsupported("the embedded cluster runs linkerd-viz's pods without linkerd-proxy: "
                          "there is no viz proxy to check")
    pods_running(_viz_pods(ctx), viz_namespace(ctx))


def _prometheus(ctx: Context) -> None:
    ns = viz_namespace(ctx)
    for resource, label in (("clusterroles", "ClusterRoles"),
                            ("clusterrolebindings", "ClusterRoleBindings")):
        expect_names(resource, label, ctx.kube.cluster_items(resource),
                     [f"linkerd-{ns}-prometheus"])
    expect_names("configmaps", "ConfigMaps", ctx.kube.items("configmaps", ns),
                 ["prometheus-config"])
    _for_pods(ctx, ("prometheus",))
    raise Unsupported(NOT_SCRAPING)


def _proxies_in_prometheus(ctx: Context) -> None:
    """validateDataPlanePodReporting: every data-plane pod is found in linkerd-viz's
    Prometheus (here: its `linkerd-proxy` target is up, where upstream asks metrics-api)."""
    try:
        up = prom.run(ctx.kube, 'up{job="linkerd-proxy"}')
    except prom.VizError as err:
        raise CheckFailed(str(err)) from None
    found = {(s["metric"].get("namespace"), s["metric"].get("pod")) for s in up
             if s["value"][1] == "1"}
    missing = [p["metadata"]["name"] for p in ctx.data_plane_pods()
               if (p["metadata"].get("namespace"), p["metadata"]["name"]) not in found]
    if missing:
        raise CheckFailed(f"Data plane metrics not found for {', '.join(missing)}.")


def _unsupported(reason: str) -> Callable[[Context], None]:
    def check(ctx: Context) -> None:
        raise Unsupported(reason)
    return check


def categories(proxy: bool) -> list[tuple[str, list[Checker]]]:
    """VizCategory(fullCheck) and, with --proxy, VizDataPlaneCategory."""
    viz = [
        Checker("linkerd-viz Namespace exists", "l5d-viz-ns-exists", viz_namespace, fatal=True),
        Checker("can initialize the client", "l5d-viz-existence-client",
                _unsupported(NO_METRICS_API), fatal=True),
        Checker("linkerd-viz ClusterRoles exist", "l5d-viz-cr-exists",
                _rbac("clusterroles", "ClusterRoles", ("tap", "metrics-api", "tap-admin")),
                fatal=True),
        Checker("linkerd-viz ClusterRoleBindings exist", "l5d-viz-crb-exists",
                _rbac("clusterrolebindings", "ClusterRoleBindings",
                      ("tap", "metrics-api", "tap-auth-delegator")), fatal=True),
        Checker("tap API server has valid cert", "l5d-tap-cert-valid",
                _unsupported(NO_TAP_API), fatal=True),
        Checker("tap API server cert is valid for at least 60 days",
                "l5d-tap-cert-not-expiring-soon", _unsupported(NO_TAP_API), warning=True),
        Checker("tap API service is running", "l5d-tap-api", _unsupported(NO_TAP_API),
                warning=True),
        Checker("linkerd-viz pods are injected", "l5d-viz-pods-injection", _pods_injected,
                warning=True),
        Checker("viz extension pods are running", "l5d-viz-pods-running", _pods_running,
                warning=True, retry=True),
        Checker("viz extension proxies are healthy", "l5d-viz-proxy-healthy", _proxies_healthy,
                warning=True),
        Checker("viz extension proxies are up-to-date", "l5d-viz-proxy-cp-version",
                latest_version, warning=True),
        Checker("viz extension proxies and cli versions match", "l5d-viz-proxy-cli-version",
                lambda ctx: versions_match(_viz_pods(ctx), ctx.cli_version), warning=True),
        Checker("prometheus is installed and configured correctly", "l5d-viz-prometheus",
                _prometheus, warning=True),
        Checker("viz extension self-check", "l5d-viz-metrics-api",
                _unsupported(NO_METRICS_API), fatal=True),
    ]
    found = [("linkerd-viz", viz)]
    if proxy:
        found.append(("linkerd-viz-data-plane", [
            Checker("data plane namespace exists", "l5d-data-plane-exists",
                    data_plane_namespace, fatal=True),
            Checker("prometheus is authorized to scrape data plane pods",
                    "l5d-viz-data-plane-prom-authz", _unsupported(NOT_SCRAPING), warning=True),
            Checker("data plane proxy metrics are present in Prometheus", "l5d-data-plane-prom",
                    _proxies_in_prometheus, warning=True, retry=True)]))
    return found
