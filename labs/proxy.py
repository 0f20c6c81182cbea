"""What a sidecar's Envoy really runs — the views of `istioctl proxy-config`, from Python.

    >>> from labs import proxy
    >>> proxy.routes("deploy/productpage-v1", "default")      # a table in a notebook
    >>> proxy.wait_for_config("deploy/productpage-v1", "default",
    ...                       proxy.mentions("outbound|9080|v1|reviews"))

`pod` is a pod name or `deploy/<name>` (the Deployment's first running pod). The Envoy admin API
is reached the way the backend allows (`ClusterRef.sidecar_admin`): on the embedded cluster the
sidecar's admin port on 127.0.0.1; on kind or an existing cluster through
`kubectl exec <pod> -c istio-proxy -- pilot-agent request GET <path>`, like istioctl does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from labs.cluster import ClusterRef, SidecarError, current_cluster
from labs.istio_names import SIDECAR_CONTAINER
from labs.istioctl import configdump
from labs.istioctl.configdump import ConfigTable

Obj = dict[str, Any]


class ProxyError(RuntimeError):
    """The proxy could not be asked; the message says what to fix."""


# --- reaching the Envoy admin API -------------------------------------------------------------

def admin(pod: str, namespace: str = "default", path: str = "config_dump", *,
          cluster: ClusterRef | None = None) -> str:
    """GET `path` (e.g. "stats", "clusters", "config_dump?include_eds") from the pod's sidecar
    Envoy admin API; returns the body."""
    ref = cluster or current_cluster()
    obj = resolve_pod(ref, pod, namespace)
    try:
        return ref.sidecar_admin(obj, path.lstrip("/"))
    except SidecarError as exc:
        raise ProxyError(str(exc)) from None


def config_dump(pod: str, namespace: str = "default", *,
                cluster: ClusterRef | None = None) -> Obj:
    """The sidecar Envoy's whole `/config_dump` (bootstrap, listeners, clusters, routes,
    secrets), as a dict."""
    text = admin(pod, namespace, "config_dump", cluster=cluster)
    try:
        dump: Obj = json.loads(text)
    except ValueError:
        raise ProxyError(f"the sidecar of {pod} in namespace {namespace} answered /config_dump "
                         f"with something that is not JSON: {text[:200]!r}") from None
    return dump


def stats(pod: str, namespace: str = "default", *,
          cluster: ClusterRef | None = None) -> dict[str, int]:
    """Counters and gauges of the sidecar Envoy (`/stats`), e.g.
    `cluster.outbound|8000||httpbin.default.svc.cluster.local.upstream_rq_200`."""
    out: dict[str, int] = {}
    for line in admin(pod, namespace, "stats", cluster=cluster).splitlines():
        name, sep, value = line.rpartition(": ")
        if sep and value.strip().isdigit():
            out[name] = int(value)
    return out


def wait_for_config(pod: str, namespace: str, predicate: Callable[[Obj], bool],
                    timeout: float = 10, *, cluster: ClusterRef | None = None,
                    interval: float = 0.1) -> Obj:
    """Poll the sidecar's config_dump until `predicate(dump)` is true; returns that dump.
    Use it after `kubectl apply` so the next request already sees the new config."""
    ref = cluster or current_cluster()
    deadline = time.monotonic() + timeout
    while True:
        dump = config_dump(pod, namespace, cluster=ref)
        if predicate(dump):
            return dump
        if time.monotonic() > deadline:
            raise ProxyError(f"the sidecar of {pod} in namespace {namespace} did not get the "
                             f"expected config within {timeout:g}s; check the object's status "
                             f"(`kubectl get vs,dr -n {namespace} -o yaml`) and events")
        time.sleep(interval)


def mentions(text: str) -> Callable[[Obj], bool]:
    """A predicate for `wait_for_config`: the dynamic config contains `text` anywhere, e.g. a
    subset cluster name `outbound|9080|v2|reviews.default.svc.cluster.local`."""
    def found(dump: Obj) -> bool:
        return text in json.dumps(dump)
    return found


def resolve_pod(ref: ClusterRef, pod: str, namespace: str) -> Obj:
    """The meshed pod named `pod` (or `deploy/<name>`'s first running pod), as a dict."""
    if pod.startswith(("deploy/", "deployment/")):
        deployment = pod.split("/", 1)[1]
        got = ref.kubectl(f"--namespace={namespace}", "get", "deployment", deployment, "-o",
                          "json")
        if got.returncode != 0:
            raise ProxyError(f"no Deployment {deployment!r} in namespace {namespace}: "
                             f"{got.stderr.strip()}")
        labels = json.loads(got.stdout)["spec"]["selector"].get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        listed = ref.kubectl(f"--namespace={namespace}", "get", "pods", "-l", selector,
                             "--field-selector=status.phase=Running", "-o", "json")
        items = json.loads(listed.stdout).get("items", []) if listed.returncode == 0 else []
        if not items:
            raise ProxyError(f"deploy/{deployment} in namespace {namespace} has no running "
                             f"pod; see `kubectl get pods -n {namespace} -l {selector}`")
        obj: Obj = items[0]
    else:
        got = ref.kubectl(f"--namespace={namespace}", "get", "pod", pod, "-o", "json")
        if got.returncode != 0:
            raise ProxyError(f"no pod {pod!r} in namespace {namespace}: {got.stderr.strip()} "
                             f"(pass a pod name from `kubectl get pods -n {namespace}` or "
                             f"deploy/<name>)")
        obj = json.loads(got.stdout)
    containers = [c["name"] for c in obj["spec"].get("containers", [])]
    if SIDECAR_CONTAINER not in containers:
        raise ProxyError(f"pod {obj['metadata']['name']} in namespace {namespace} has no "
                         f"{SIDECAR_CONTAINER} sidecar (containers: {', '.join(containers)}); "
                         f"label the namespace istio-injection=enabled and restart the "
                         f"workload with `kubectl rollout restart`")
    return obj


# --- the istioctl views (built by labs.istioctl.configdump, shared with `istioctl`) --------

_LISTENER_COLUMNS = ("NAME", "ADDRESSES", "PORT", "MATCH", "DESTINATION")
_ROUTE_COLUMNS = ("NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE", "DESTINATION")


def listener_table(dump: Obj) -> ConfigTable:
    """`istioctl proxy-config listeners` rows, with the listener NAME shown first."""
    return configdump.listener_table(dump).select(_LISTENER_COLUMNS)


def route_table(dump: Obj) -> ConfigTable:
    """`istioctl proxy-config routes` rows, plus the DESTINATION each route sends to (cluster,
    or weighted clusters) — a column istioctl leaves out."""
    return configdump.route_table(configdump.route_configs(dump)).select(_ROUTE_COLUMNS)


def cluster_table(dump: Obj) -> ConfigTable:
    """`istioctl proxy-config clusters` rows."""
    return configdump.cluster_table(dump)


def secret_table(dump: Obj) -> ConfigTable:
    """`istioctl proxy-config secret` rows."""
    return configdump.secret_table(dump)


def listeners(pod: str, namespace: str = "default", *,
              cluster: ClusterRef | None = None) -> ConfigTable:
    """`istioctl proxy-config listeners`: one row per filter chain."""
    return listener_table(config_dump(pod, namespace, cluster=cluster))


def routes(pod: str, namespace: str = "default", *,
           cluster: ClusterRef | None = None) -> ConfigTable:
    """`istioctl proxy-config routes`: one row per route of each virtual host."""
    return route_table(config_dump(pod, namespace, cluster=cluster))


def clusters(pod: str, namespace: str = "default", *,
             cluster: ClusterRef | None = None) -> ConfigTable:
    """`istioctl proxy-config clusters`: one row per Envoy cluster."""
    return cluster_table(config_dump(pod, namespace, cluster=cluster))


def secrets(pod: str, namespace: str = "default", *,
            cluster: ClusterRef | None = None) -> ConfigTable:
    """`istioctl proxy-config secret`: the workload certificate and the root CA."""
    return secret_table(config_dump(pod, namespace, cluster=cluster))


def endpoints(pod: str, namespace: str = "default", *,
              cluster: ClusterRef | None = None) -> ConfigTable:
    """`istioctl proxy-config endpoints`: every host of every cluster, with its health."""
    text = admin(pod, namespace, "clusters?format=json", cluster=cluster)
    try:
        return configdump.endpoint_table(json.loads(text))
    except ValueError:
        raise ProxyError(f"the sidecar of {pod} in namespace {namespace} answered /clusters "
                         f"with something that is not JSON: {text[:200]!r}") from None
