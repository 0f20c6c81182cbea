"""What `linkerd check`'s checks are made of: a check (`Checker`) and its `Result`, the
`Context` they share, the errors a check raises, and the proxy and object helpers both the core
checks (core_checks.py) and the viz extension's (viz_checks.py) use.

Mirrors linkerd/linkerd2 `pkg/healthcheck/healthcheck.go` (`Checker`, `CheckResult`,
`CheckPodsRunning`, `CheckIfProxyVersionsMatchWithCLI`, `checkResources`). A check the embedded
cluster cannot perform raises `Unsupported`: it is shown as a warning (‼) whose text says why,
and never fails the run.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from labs.embedded.mesh.linkerd.injection import (
    CONTROL_PLANE_NS_LABEL,
    PROXY_CONTAINER,
    TRUST_ROOTS_CONFIGMAP,
    TRUST_ROOTS_KEY,
)
from labs.linkerd.kube import Kube

Obj = dict[str, Any]
HINT_BASE = "https://linkerd.io/2/checks/#"  # HintBaseURL for edge versions
OK, WARN, FAIL = "\u221a", "\u203c", "\u00d7"  # √ ‼ × (healthcheck_output.go)
VERSION_CHECK_URL = "https://versioncheck.linkerd.io/version.json"


class CheckFailed(Exception):
    """The check's error, as upstream words it."""


class Unsupported(Exception):
    """The embedded cluster cannot perform this check; the message says why (shown as ‼)."""


class Skip(Exception):
    """SkipError: the check does not apply and is not shown."""


@dataclass(frozen=True)
class Checker:
    description: str
    hint_anchor: str
    run: Callable[[Context], None]
    fatal: bool = False
    warning: bool = False
    retry: bool = False  # retried until --wait runs out (retryDeadline)


@dataclass(frozen=True)
class Result:
    category: str
    description: str
    error: str | None = None
    warning: bool = False
    hint: str = ""

    @property
    def failed(self) -> bool:
        return self.error is not None and not self.warning


@dataclass
class Context:
    """What the checks share: the cluster, the options, and what earlier checks found."""

    kube: Kube
    cli_version: str
    control_plane_ns: str = "linkerd"
    data_plane_ns: str | None = None
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    values: Obj = field(default_factory=dict)
    trust_anchors: list[x509.Certificate] = field(default_factory=list)
    issuer: x509.Certificate | None = None

    def config_map(self, name: str) -> Obj | None:
        return self.kube.get("configmaps", name, self.control_plane_ns)

    def data_plane_pods(self) -> list[Obj]:
        """GetDataPlanePods: pods labelled linkerd.io/control-plane-ns=<control plane ns>,
        except the control plane's own pods, which run without proxies on the embedded
        cluster (upstream's always have one)."""
        pods = self.kube.items("pods", self.data_plane_ns,
                               f"{CONTROL_PLANE_NS_LABEL}={self.control_plane_ns}")
        return [p for p in pods if proxy_container(p) is not None
                or p["metadata"].get("namespace") != self.control_plane_ns]

    def trust_bundle(self) -> str:
        roots = self.config_map(TRUST_ROOTS_CONFIGMAP)
        if roots is None:
            raise CheckFailed(f'configmaps "{TRUST_ROOTS_CONFIGMAP}" not found')
        return str((roots.get("data") or {}).get(TRUST_ROOTS_KEY) or "")


def expect_names(resource: str, label: str, objects: list[Obj], names: list[str]) -> None:
    """checkResources: `missing <Resources>: a, b`."""
    found = {o["metadata"]["name"] for o in objects}
    missing = sorted(set(names) - found)
    if missing:
        raise CheckFailed(f"missing {label}: {', '.join(missing)}")


def namespace_exists(ctx: Context, name: str) -> None:
    if ctx.kube.get("namespaces", name) is None:
        raise CheckFailed(f"The \"{name}\" namespace does not exist")


def data_plane_namespace(ctx: Context) -> None:
    """With -n, that namespace must exist (all namespaces: nothing to check)."""
    if ctx.data_plane_ns:
        namespace_exists(ctx, ctx.data_plane_ns)


def latest_version(ctx: Context) -> None:
    raise Unsupported(f"the embedded cluster's linkerd does not query {VERSION_CHECK_URL} (the "
                      f"course runs offline); its pinned version is {ctx.cli_version} "
                      "(cluster-setup/versions.env)")


def proxy_container(pod: Obj) -> Obj | None:
    spec = pod.get("spec") or {}
    return next((c for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
                 if c.get("name") == PROXY_CONTAINER), None)


def _proxy_ready(pod: Obj) -> bool:
    status = pod.get("status") or {}
    return any(s.get("name") == PROXY_CONTAINER and s.get("ready")
               for s in [*(status.get("initContainerStatuses") or []),
                         *(status.get("containerStatuses") or [])])


def pods_running(pods: list[Obj], namespace: str | None) -> None:
    """CheckPodsRunning."""
    if not pods:
        where = f' in the "{namespace}" namespace' if namespace else ""
        raise CheckFailed(f'no "{PROXY_CONTAINER}" containers found{where}')
    for pod in pods:
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed") and phase != "Running":
            continue
        if phase != "Running":
            raise CheckFailed(f'pod "{pod["metadata"]["name"]}" status is {phase}')
        if not _proxy_ready(pod):
            raise CheckFailed(f'container "{PROXY_CONTAINER}" in pod '
                              f'"{pod["metadata"]["name"]}" is not ready')


def _proxy_version(pod: Obj) -> str:
    return (pod["metadata"].get("annotations") or {}).get("linkerd.io/proxy-version", "")


def versions_match(pods: list[Obj], cli_version: str) -> None:
    """CheckIfProxyVersionsMatchWithCLI."""
    for pod in pods:
        version = _proxy_version(pod)
        if (pod.get("status") or {}).get("phase") == "Running" and version and \
                version != cli_version:
            raise CheckFailed(f"{pod['metadata']['name']} running {version} but cli running "
                              f"{cli_version}")
