"""`istioctl dashboard NAME`: upstream port-forwards to the addon's pod and opens a browser
(`istioctl/pkg/dashboard/dashboard.go`). On the embedded cluster every pod already listens on
127.0.0.1 host ports, so the command prints the URL the way istioctl does
(`http://localhost:PORT<path>`) and opens a browser only when `--browser` is true and one exists."""

from __future__ import annotations

import json
import webbrowser
from dataclasses import dataclass
from typing import Any

from labs.cluster import ClusterRef
from labs.embedded.workload import host_ports, proxy_ports
from labs.proxy import resolve_pod

Obj = dict[str, Any]


@dataclass(frozen=True)
class Addon:
    selector: str  # the label upstream looks the pod up by
    port: int  # the container port upstream forwards to
    path: str = ""


# dashboard.go: selectors, ports and URL paths per addon (release-1.30)
ADDONS = {
    "kiali": Addon("app=kiali", 20001, "/kiali"),
    "prometheus": Addon("app.kubernetes.io/name=prometheus", 9090),
    "grafana": Addon("app.kubernetes.io/name=grafana", 3000),
    "jaeger": Addon("app=jaeger", 16686),
    "zipkin": Addon("app=zipkin", 9411),
    "skywalking": Addon("app=skywalking-ui", 8080),
    "controlz": Addon("app=istiod", 9876),
}


class DashboardError(RuntimeError):
    """The addon or pod is not there; the message is istioctl's."""


def addon_url(ref: ClusterRef, name: str, namespaces: list[str]) -> str:
    """The addon's URL; its pod is looked up in the Istio namespace, then the current one
    (`inferPodMeta`)."""
    addon = ADDONS[name]
    pods: list[Obj] = []
    for namespace in namespaces:
        got = ref.kubectl(f"--namespace={namespace}", "get", "pods", "-l", addon.selector,
                          "-o", "json")
        pods = json.loads(got.stdout).get("items", []) if got.returncode == 0 else []
        if pods:
            break
    if not pods:
        raise DashboardError(f"no pods found with selector {addon.selector}")
    port = host_ports(pods[0]).get(str(addon.port))
    if port is None:
        raise DashboardError(f"pod {pods[0]['metadata']['name']} has no host port for "
                             f"container port {addon.port} yet")
    return f"http://localhost:{port}{addon.path}"


def envoy_url(ref: ClusterRef, pod: str, namespace: str) -> str:
    """`istioctl dashboard envoy POD`: the sidecar's admin UI (upstream forwards to 15000)."""
    admin = proxy_ports(resolve_pod(ref, pod, namespace)).get("admin")
    if admin is None:
        raise DashboardError(f"pod {pod} in namespace {namespace} has no Envoy admin port: "
                             "is it meshed and Running?")
    return f"http://localhost:{admin}"


def open_url(url: str, browser: bool) -> str:
    """What `openBrowser` prints: the URL, then either that no browser is opened
    (`--browser=false`, no newline as upstream) or, when none can be started, where to go."""
    if not browser:
        return f"{url}\nskipping opening a browser"
    try:
        opened = webbrowser.get().open(url)
    except webbrowser.Error:
        opened = False
    return f"{url}\n" if opened else f"{url}\nFailed to open browser; open {url} in your browser.\n"
