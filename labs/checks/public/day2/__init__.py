"""Day 2 labs: Istio authorization on Bookinfo, end-user JWTs on httpbin.

Shared by the day-2 lab modules: whether a lab's workloads run in the mesh, and the status codes
requests from given workloads must get — the way both labs judge a policy by what it does."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from labs.checks.context import CheckContext
from labs.checks.model import Outcome, failed, passed
from labs.istio_names import SIDECAR_CONTAINER

REQUESTS = 2  # per expectation; a behavioural check also retries until it passes twice in a row
LINKERD_PROXY = "linkerd-proxy"  # the injected container (linkerd2 charts/partials/_proxy.tpl)


def has_container(pod: dict[str, object], name: str) -> bool:
    """The pod runs a container `name`, app or init container (Linkerd's proxy is a native
    sidecar: an init container with `restartPolicy: Always`)."""
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return False
    return any(isinstance(c, dict) and c.get("name") == name
               for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])])


def meshed_apps(ctx: CheckContext, namespace: str, apps: Iterable[str],
                sidecar: str = SIDECAR_CONTAINER) -> Outcome:
    """Each `app` label has a Ready pod with a `sidecar` proxy in `namespace` (Istio's
    istio-proxy by default; Linkerd's linkerd-proxy is a native sidecar, an init container)."""
    pods = [p for p in ctx.items("pods", namespace) if not p["metadata"].get("deletionTimestamp")]
    missing, bare = [], []
    for app in apps:
        mine = [p for p in pods if (p["metadata"].get("labels") or {}).get("app") == app
                and _ready(p)]
        if not mine:
            missing.append(app)
        elif not any(has_container(p, sidecar) for p in mine):
            bare.append(app)
    problems = ([f"no Ready pod for app {', '.join(missing)}"] if missing else []) + (
        [f"without the {sidecar} sidecar: {', '.join(bare)}"] if bare else [])
    return failed(f"in namespace {namespace}: " + "; ".join(problems)) if problems else passed()


def _ready(pod: dict[str, object]) -> bool:
    status = pod.get("status")
    conditions = status.get("conditions") if isinstance(status, dict) else None
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in conditions or [] if isinstance(c, dict))


@dataclass(frozen=True)
class Expect:
    """A request from deploy/`source` and the status code it must get."""

    source: str
    url: str
    status: int
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    what: str = ""  # how a failure names the request beyond method and path ("with no token")

    def name(self) -> str:
        path = urlsplit(self.url).path or "/"
        host = urlsplit(self.url).hostname
        return " ".join(filter(None, [self.method, f"{host}{path}", self.what,
                                      f"from {self.source}"]))


def expect_statuses(ctx: CheckContext, namespace: str, expectations: Iterable[Expect]
                    ) -> Outcome:
    """Probe each expectation from its source workload in `namespace`; fail naming every request
    whose answers were not all the expected status."""
    problems = []
    for item in expectations:
        result = ctx.probe(item.url, from_workload=item.source, namespace=namespace, n=REQUESTS,
                           method=item.method, headers=dict(item.headers), max_time=10)
        if result.codes != {item.status: REQUESTS}:
            got = ", ".join(f"{code or 'no response'} ×{n}"
                            for code, n in sorted(result.codes.items()))
            problems.append(f"{item.name()}: expected {item.status}, got {got}")
    return failed("; ".join(problems)) if problems else passed()
