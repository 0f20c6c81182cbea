"""`istioctl version` and `istioctl proxy-status` on the embedded cluster.

The embedded control plane (istiod's part, inside the cluster daemon) delivers each proxy's
CDS, RDS and LDS as files (file-based xDS, `labs.embedded.mesh.writer`); a proxy is SYNCED for a
type when its Envoy's `/config_dump` holds exactly what the file holds, STALE when it does not
(yet), NOT SENT when no file was written. Endpoints are inline in the clusters (no EDS) and no
ECDS is used, so those types are not subscribed, as in upstream's IGNORED.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from labs import proxy
from labs.cluster import ClusterRef
from labs.duration import human_duration
from labs.embedded.mesh.proxyfiles import ProxyFiles
from labs.istio_names import SIDECAR_CONTAINER
from labs.istioctl import configdump
from labs.istioctl.tabwriter import render
from labs.versions import version

Obj = dict[str, Any]
CLUSTER_ID = "Kubernetes"  # istiod's default cluster ID
# (short type, the config_dump section, its list, the key holding each resource)
TYPES = {
    "CDS": ("ClustersConfigDump", "dynamic_active_clusters", "cluster"),
    "LDS": ("ListenersConfigDump", "dynamic_listeners", "active_state.listener"),
    "RDS": ("RoutesConfigDump", "dynamic_route_configs", "route_config"),
}
ALL_TYPES = ("CDS", "ECDS", "EDS", "LDS", "RDS")  # sorted by type URL, as upstream -v 1


def control_plane_id(ref: ClusterRef) -> str:
    """What ISTIOD shows: the embedded control plane runs in the daemon on the cluster's one
    node (`<cluster>-control-plane`, the NODE of every pod), not in an istiod pod."""
    return f"{ref.context}-control-plane"


def meshed_pods(ref: ClusterRef, namespace: str | None) -> list[Obj]:
    """Running pods with an `istio-proxy` container (sidecars and gateways)."""
    scope = [f"--namespace={namespace}"] if namespace else ["--all-namespaces"]
    listed = ref.kubectl("get", "pods", *scope, "-o", "json")
    if listed.returncode != 0:
        raise proxy.ProxyError(f"listing pods failed: {listed.stderr.strip()}")
    pods = json.loads(listed.stdout).get("items", [])
    return [p for p in pods if p.get("status", {}).get("phase") == "Running"
            and any(c["name"] == SIDECAR_CONTAINER for c in p["spec"].get("containers", []))]


def proxy_version(pod: Obj) -> str:
    """The Istio version of a proxy: the tag of its `istio-proxy` image."""
    for container in pod["spec"].get("containers", []):
        if container["name"] == SIDECAR_CONTAINER:
            image = str(container.get("image", ""))
            return image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
    return ""


def version_text(ref: ClusterRef) -> str:
    """`istioctl version` (short form, its default): `pkg/version/cobra.go` and
    `renderProxyVersions` (`1.30.5 (7 proxies)`, versions sorted)."""
    pinned = version("ISTIO_VERSION")
    counts: dict[str, int] = {}
    for pod in meshed_pods(ref, None):
        counts[proxy_version(pod)] = counts.get(proxy_version(pod), 0) + 1
    plane = ", ".join(f"{v} ({n} proxies)" for v, n in sorted(counts.items())) or "none"
    return (f"client version: {pinned}\ncontrol plane version: {pinned}\n"
            f"data plane version: {plane}\n")


@dataclass(frozen=True)
class ProxySync:
    proxy_id: str
    version: str
    types: dict[str, str]  # short type -> SYNCED (age) / STALE / NOT SENT
    cluster: str = CLUSTER_ID


def sync_of(ref: ClusterRef, pod: Obj, now: float | None = None) -> ProxySync:
    """Compare one proxy's xDS files with its Envoy's config_dump."""
    meta = pod["metadata"]
    files = ProxyFiles(ref.embedded.paths.pod_dir(pod) / SIDECAR_CONTAINER / "xds") if (
        ref.embedded) else None
    dump = proxy.config_dump(meta["name"], meta["namespace"], cluster=ref)
    types = {}
    for short, path in (("CDS", files.cds if files else None),
                        ("LDS", files.lds if files else None),
                        ("RDS", files.rds if files else None)):
        types[short] = _type_status(short, path, dump, now or time.time())
    return ProxySync(f"{meta['name']}.{meta['namespace']}", proxy_version(pod), types)


def _type_status(short: str, path: Path | None, dump: Obj, now: float) -> str:
    try:
        sent = json.loads(path.read_text())["resources"] if path else None
        written = path.stat().st_mtime if path else now
    except (OSError, ValueError, KeyError, TypeError):
        sent = None
    if sent is None:
        return "NOT SENT"
    if not in_sync(sent, loaded(dump, short)):
        return "STALE"
    return f"SYNCED ({human_duration(now - written)})"


def loaded(dump: Obj, short: str) -> list[Obj]:
    """The resources of one xDS type that Envoy has accepted (dynamic, active)."""
    kind, listing, key = TYPES[short]
    out = []
    for entry in configdump.section(dump, kind).get(listing, []):
        for part in key.split("."):
            entry = entry.get(part, {}) if isinstance(entry, dict) else {}
        if entry:
            out.append(entry)
    return out


def in_sync(sent: list[Obj], held: list[Obj]) -> bool:
    """Every sent resource is held with the same content, and nothing else is held."""
    by_name = {str(r.get("name")): {k: v for k, v in r.items() if k != "@type"} for r in held}
    if {str(r.get("name")) for r in sent} != set(by_name):
        return False
    return all(_same({k: v for k, v in r.items() if k != "@type"}, by_name[str(r.get("name"))])
               for r in sent)


def _same(sent: Any, held: Any) -> bool:
    """Equal as Envoy prints it: fields left at their default are absent from the dump."""
    if isinstance(sent, dict) and isinstance(held, dict):
        if set(held) - set(sent):
            return False
        return all(_same(v, held[k]) if k in held else _is_default(v) for k, v in sent.items())
    if isinstance(sent, list) and isinstance(held, list):
        return len(sent) == len(held) and all(_same(a, b) for a, b in
                                              zip(sent, held, strict=True))
    if sent == held or (isinstance(sent, int) and str(sent) == held):  # int64 as a string
        return True
    return _duration(sent) is not None and _duration(sent) == _duration(held)


def _is_default(value: Any) -> bool:
    """Scalars Envoy omits when they hold the proto default (false, 0, "", the zero enum)."""
    return isinstance(value, str | bool | int | float) or value in ({}, [])


def _duration(value: Any) -> float | None:
    if isinstance(value, str) and value.endswith("s"):
        try:
            return float(value[:-1])
        except ValueError:
            return None
    return None


def status_table(istiod: str, syncs: list[ProxySync], verbosity: int = 0) -> str:
    """`istioctl proxy-status` as release-1.30 prints it (`XdsStatusWriter.PrintAll`,
    `istioctl/pkg/writer/pilot/status.go`; testdata `multiXdsStatusSinglePilot.txt`):
    NAME CLUSTER ISTIOD VERSION SUBSCRIBED TYPES; with `-v 1` one column per xDS type
    (`multiXdsStatusMultiPilot_verbose.txt`). Proxies sorted by ID."""
    rows = sorted(syncs, key=lambda s: s.proxy_id)
    if verbosity > 0:
        lines = [["NAME", "CLUSTER", *ALL_TYPES, "ISTIOD", "VERSION"]]
        lines += [[s.proxy_id, s.cluster, *(s.types.get(t, "IGNORED") for t in ALL_TYPES),
                   istiod, s.version] for s in rows]
        return render(lines)
    lines = [["NAME", "CLUSTER", "ISTIOD", "VERSION", "SUBSCRIBED TYPES"]]
    for sync in rows:
        subscribed = [t for t in ("CDS", "LDS", "EDS", "RDS", "ECDS")  # core order, extras
                      if sync.types.get(t, "IGNORED") != "IGNORED"]
        text = f"{len(subscribed)} ({','.join(subscribed)})" if subscribed else "0"
        lines.append([sync.proxy_id, sync.cluster, istiod, sync.version, text])
    return render(lines)


def diff_text(ref: ClusterRef, pod: Obj) -> str:
    """`istioctl proxy-status POD`: does the proxy hold what the control plane sent
    (`istioctl/pkg/writer/compare/{cluster,listener,route}.go`)?"""
    sync = sync_of(ref, pod)
    out = []
    for short, noun in (("CDS", "Clusters"), ("LDS", "Listeners"), ("RDS", "Routes")):
        state = sync.types[short]
        if not state.startswith("SYNCED"):
            out.append(f"{noun} Don't Match ({state})")
        elif short == "RDS":
            files = ref.embedded.paths.pod_dir(pod) if ref.embedded else None
            loaded_at = (datetime.fromtimestamp(ProxyFiles(files / SIDECAR_CONTAINER / "xds")
                                                .rds.stat().st_mtime, UTC)
                         if files else datetime.now(UTC))
            out.append(f"{noun} Match (RDS last loaded at "
                       f"{loaded_at.strftime('%a, %d %b %Y %H:%M:%S UTC')})")
        else:
            out.append(f"{noun} Match")
    return "\n".join(out) + "\n"
