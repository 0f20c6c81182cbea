"""`linkerd diagnostics proxy-metrics`: each selected pod's linkerd-proxy `/metrics`, fetched
from its admin port, as linkerd/linkerd2 `cli/cmd/metrics.go` prints them (`#\\n# POD <name>
(<i> of <n>)\\n#\\n` then the text, or `# ERROR: <why>`; pods sorted by name). Upstream reaches
the admin port by a port-forward; every embedded pod listens on 127.0.0.1 at its host port for
4191 instead."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

from labs.embedded.workload import LINKERD_ADMIN_PORT, host_ports
from labs.linkerd.kube import Kube
from labs.linkerd.viz.resources import Resource, objects, pods_of

Obj = dict[str, Any]
TIMEOUT_S = 30.0  # getMetrics' 30*time.Second


def _metrics(pod: Obj) -> str:
    port = host_ports(pod).get(str(LINKERD_ADMIN_PORT))
    if port is None:
        raise OSError(f"pod {pod['metadata']['name']} has no linkerd-admin port: is it meshed?")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT_S) as rsp:
        return str(rsp.read().decode())


def proxy_metrics(kube: Kube, resource: Resource) -> str:
    every = kube.items("pods", resource.namespace)
    pods = sorted((p for obj in objects(kube, resource, False)
                   for p in pods_of(resource.kind, obj, every)
                   if (p.get("status") or {}).get("phase") == "Running"),
                  key=lambda p: p["metadata"]["name"])
    if not pods:
        raise ValueError(f"no running pods found for {resource.kind}/{resource.name} in "
                         f"namespace {resource.namespace}")
    out = []
    for index, pod in enumerate(pods, 1):
        out.append(f"#\n# POD {pod['metadata']['name']} ({index} of {len(pods)})\n#\n")
        try:
            out.append(_metrics(pod))
        except (OSError, urllib.error.URLError) as err:
            out.append(f"# ERROR: {err}\n")
    return "".join(out)
