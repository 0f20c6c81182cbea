"""`istioctl analyze`: a set of Istio's analyzers, with their codes, levels, message templates
(istio/istio release-1.30 `pkg/config/analysis/msg/messages.yaml`) and output
(`diag.Message.String`: `Error [IST0101] (VirtualService bookinfo/reviews) Referenced host not
found: "reviewz"`), over the live cluster plus any files given.

Analyzers followed (release-1.30 `pkg/config/analysis/analyzers/`): virtualservice
destinationhosts, gateways, destinationrules, conflictingmeshgatewayhosts; injection;
service portname; destinationrule subset (IST0173); and the VirtualService rule checks of
`pkg/config/validation/validation.go` (`analyzeUnreachableHTTPRules`, IST0130 / IST0131).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from labs.cluster import ClusterRef
from labs.istio_names import SIDECAR_CONTAINER

Obj = dict[str, Any]
LEVELS = {"Error": 0, "Warning": 1, "Info": 2}
SYSTEM_NAMESPACES = ("istio-system", "kube-system", "kube-public", "kube-node-lease",
                     "local-path-storage")
# analysis.go: `url.ConfigAnalysis` for the pinned minor release
DOCS = "https://istio.io/v{minor}/docs/reference/config/analysis"
# pkg/config/protocol: the name prefixes (before "-") Istio recognises
PROTOCOLS = {"http", "http2", "https", "grpc", "grpc-web", "tcp", "tls", "mongo", "redis",
             "mysql", "udp", "http_proxy", "h2c"}
KINDS = {"VirtualService": "virtualservices.networking.istio.io",
         "DestinationRule": "destinationrules.networking.istio.io",
         "Gateway": "gateways.networking.istio.io",
         "ServiceEntry": "serviceentries.networking.istio.io",
         "Service": "services", "Pod": "pods", "Namespace": "namespaces"}


@dataclass(frozen=True)
class Message:
    level: str
    code: str
    kind: str
    namespace: str
    name: str
    text: str
    origin: str = ""  # "file.yaml:3" for an object read from a file

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        origin = f" {self.origin}" if self.origin else ""
        return f"{self.level} [{self.code}] ({self.kind} {where}{origin}) {self.text}"

    def sort_key(self) -> tuple[int, str, str, str]:
        return LEVELS[self.level], self.code, f"{self.kind}/{self.namespace}/{self.name}", str(
            self)


@dataclass
class Snapshot:
    """The objects analyzed, by kind; `origins` maps (kind, ns, name) to a file position."""

    objects: dict[str, list[Obj]] = field(default_factory=lambda: {k: [] for k in KINDS})
    origins: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def add(self, obj: Obj, origin: str = "") -> None:
        kind = obj.get("kind", "")
        if kind not in self.objects:
            return
        key = (kind, obj["metadata"].get("namespace", ""), obj["metadata"].get("name", ""))
        self.objects[kind] = [o for o in self.objects[kind] if _key(o) != key] + [obj]
        if origin:
            self.origins[key] = origin


def _key(obj: Obj) -> tuple[str, str, str]:
    return obj.get("kind", ""), obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def live_snapshot(ref: ClusterRef) -> Snapshot:
    """Every object of the analyzed kinds in the cluster (analysis sees the whole cluster and
    reports on the selected namespaces, as upstream)."""
    snapshot = Snapshot()
    for kind, resource in KINDS.items():
        got = ref.kubectl("get", resource, "--all-namespaces", "-o", "json")
        if got.returncode != 0:
            raise AnalyzeError(f"reading {resource} from the cluster failed: "
                               f"{got.stderr.strip()}")
        for item in json.loads(got.stdout).get("items", []):
            item["kind"] = kind
            snapshot.add(item)
    return snapshot


class AnalyzeError(RuntimeError):
    """The cluster could not be read; the message says why."""


def _message(level: str, code: str, obj: Obj, text: str, snapshot: Snapshot) -> Message:
    kind, namespace, name = _key(obj)
    return Message(level, code, kind, namespace, name, text, snapshot.origins.get(
        (kind, namespace, name), ""))


def _fqdn(host: str, namespace: str) -> str:
    """A short host `reviews` means `reviews.<namespace>.svc.cluster.local` (Istio's rule)."""
    return host if "." in host or host == "*" else f"{host}.{namespace}.svc.cluster.local"


def _known_hosts(snapshot: Snapshot) -> set[str]:
    hosts = {f"{s['metadata']['name']}.{s['metadata']['namespace']}.svc.cluster.local"
             for s in snapshot.objects["Service"]}
    for entry in snapshot.objects["ServiceEntry"]:
        hosts.update(entry.get("spec", {}).get("hosts", []))
    return hosts


def _host_exists(fqdn: str, hosts: set[str]) -> bool:
    if fqdn in hosts:
        return True
    return any(h.startswith("*.") and fqdn.endswith(h[1:]) for h in hosts) or (
        fqdn.startswith("*.") and any(h.endswith(fqdn[1:]) for h in hosts))


def _destinations(vs: Obj) -> Iterator[tuple[str, Obj]]:
    """("route"|"mirror", destination) of every http/tcp/tls rule."""
    spec = vs.get("spec", {})
    for section in ("http", "tcp", "tls"):
        for rule in spec.get(section) or []:
            for target in rule.get("route") or []:
                if target.get("destination"):
                    yield "route", target["destination"]
            if rule.get("mirror"):
                yield "mirror", rule["mirror"]


def destination_hosts(snapshot: Snapshot) -> Iterator[Message]:
    """IST0101 `Referenced host not found` (virtualservice/destinationhosts.go)."""
    hosts = _known_hosts(snapshot)
    for vs in snapshot.objects["VirtualService"]:
        namespace = vs["metadata"]["namespace"]
        for what, target in _destinations(vs):
            host = str(target.get("host", ""))
            if host and not _host_exists(_fqdn(host, namespace), hosts):
                kind = "host" if what == "route" else "mirror host"
                yield _message("Error", "IST0101", vs, f'Referenced {kind} not found: "{host}"',
                               snapshot)


def gateways(snapshot: Snapshot) -> Iterator[Message]:
    """IST0101 `Referenced gateway not found` (virtualservice/gateways.go)."""
    known = {f"{g['metadata']['namespace']}/{g['metadata']['name']}"
             for g in snapshot.objects["Gateway"]}
    for vs in snapshot.objects["VirtualService"]:
        namespace = vs["metadata"]["namespace"]
        for gateway in vs.get("spec", {}).get("gateways") or []:
            if gateway == "mesh":
                continue
            scoped = gateway if "/" in gateway else f"{namespace}/{gateway.split('.')[0]}"
            if "/" not in gateway and "." in gateway:  # name.namespace.svc... form
                parts = gateway.split(".")
                scoped = f"{parts[1]}/{parts[0]}"
            if scoped not in known:
                yield _message("Error", "IST0101", vs,
                               f'Referenced gateway not found: "{gateway}"', snapshot)


def subsets(snapshot: Snapshot) -> Iterator[Message]:
    """IST0101 `Referenced host+subset in destinationrule not found`
    (virtualservice/destinationrules.go)."""
    defined: set[tuple[str, str]] = set()
    for rule in snapshot.objects["DestinationRule"]:
        fqdn = _fqdn(rule.get("spec", {}).get("host", ""), rule["metadata"]["namespace"])
        defined.update((fqdn, s.get("name", "")) for s in rule["spec"].get("subsets") or [])
    for vs in snapshot.objects["VirtualService"]:
        namespace = vs["metadata"]["namespace"]
        for what, target in _destinations(vs):
            subset = target.get("subset")
            if subset and (_fqdn(target.get("host", ""), namespace), subset) not in defined:
                kind = "host+subset" if what == "route" else "mirror+subset"
                yield _message("Error", "IST0101", vs, f"Referenced {kind} in destinationrule "
                               f'not found: "{target.get("host")}+{subset}"', snapshot)


def mesh_gateway_conflicts(snapshot: Snapshot) -> Iterator[Message]:
    """IST0109 (virtualservice/conflictingmeshgatewayhosts.go): VirtualServices bound to the
    mesh gateway sharing a host (exported to all namespaces: scope `*`)."""
    by_host: dict[str, list[Obj]] = {}
    for vs in snapshot.objects["VirtualService"]:
        spec = vs.get("spec", {})
        bound = spec.get("gateways") or ["mesh"]
        if "mesh" not in bound:
            continue
        for host in spec.get("hosts") or []:
            scope = ",".join(spec.get("exportTo") or []) or "*"
            key = f"{scope}/{_fqdn(host, vs['metadata']['namespace'])}"
            by_host.setdefault(key, []).append(vs)
    for host, services in by_host.items():
        if len(services) > 1:
            names = ",".join(sorted(f"{v['metadata']['namespace']}/{v['metadata']['name']}"
                                    for v in services))
            for vs in services:
                yield _message("Error", "IST0109", vs, f"The VirtualServices {names} associated "
                               f"with mesh gateway define the same host {host} which can lead "
                               "to undefined behavior. This can be fixed by merging the "
                               "conflicting VirtualServices into a single resource.", snapshot)


def _route_name(rule: Obj, index: int) -> str:
    return json.dumps(rule["name"]) if rule.get("name") else f"#{index}"


def unreachable_rules(snapshot: Snapshot) -> Iterator[Message]:
    """IST0130 / IST0131 (`analyzeUnreachableHTTPRules` and its TCP/TLS twins in
    pkg/config/validation/validation.go): a rule after a match-all rule, a second match-all
    rule, a rule whose every match an earlier rule has; duplicate matches."""
    for vs in snapshot.objects["VirtualService"]:
        for section in ("http", "tcp", "tls"):
            rules = vs.get("spec", {}).get(section) or []
            seen: dict[str, int] = {}
            catch_all = -1
            for index, rule in enumerate(rules):
                name = _route_name(rule, index) if section == "http" else f"#{index}"
                matches = rule.get("match") or []
                if not matches:
                    if catch_all >= 0:
                        yield _unused(vs, name, "only the last rule can have no matches",
                                      snapshot)
                    catch_all = index
                    continue
                duplicates = 0
                for number, match in enumerate(matches):
                    if catch_all >= 0:
                        yield _unused(vs, name, "route without matches defined before",
                                      snapshot)
                        continue
                    key = json.dumps({k: v for k, v in match.items() if k != "name"},
                                     sort_keys=True)
                    if key in seen:
                        label = (json.dumps(match["name"]) if match.get("name")
                                 else f"#{number}")
                        earlier = rules[seen[key]]
                        dup = (_route_name(earlier, seen[key]) if section == "http"
                               else f"#{seen[key]}")
                        yield _message("Info", "IST0131", vs, f"VirtualService rule {name} "
                                       f"match {label} is not used (duplicate/overlapping "
                                       f"match in rule {dup}).", snapshot)
                        duplicates += 1
                        continue
                    seen[key] = index
                if duplicates == len(matches):
                    yield _unused(vs, name, "all matches used by prior rules", snapshot)


def _unused(vs: Obj, rule: str, reason: str, snapshot: Snapshot) -> Message:
    return _message("Warning", "IST0130", vs, f"VirtualService rule {rule} not used ({reason}).",
                    snapshot)


def injection(snapshot: Snapshot) -> Iterator[Message]:
    """IST0123 for namespaces with more than one kind of injection label, IST0102 for
    namespaces without one and IST0103 for pods of injected namespaces without a proxy
    (injection/injection.go)."""
    injected = set()
    for namespace in snapshot.objects["Namespace"]:
        name = namespace["metadata"]["name"]
        labels = namespace["metadata"].get("labels") or {}
        if name == "istio-system":
            continue
        found = injection_labels(labels)
        if len(found) > 1:
            yield _message("Warning", "IST0123", namespace, "The namespace has more than one "
                           f"type of injection labels [{' '.join(found)}], which may lead to "
                           "undefined behavior. Make sure only one injection label exists.",
                           snapshot)
        if labels.get("istio.io/dataplane-mode") == "ambient":
            continue
        label = labels.get("istio-injection", "")
        if not label and "istio.io/rev" not in labels:
            yield _message("Info", "IST0102", namespace, "The namespace is not enabled for Istio "
                           f"injection. Run 'kubectl label namespace {name} "
                           f"istio-injection=enabled' to enable it, or 'kubectl label namespace "
                           f"{name} istio-injection=disabled' to explicitly mark it as not "
                           "needing injection.", snapshot)
        elif label == "enabled" or (not label and "istio.io/rev" in labels):
            injected.add(name)
    for pod in snapshot.objects["Pod"]:
        meta = pod["metadata"]
        if meta.get("namespace") not in injected or pod["spec"].get("hostNetwork"):
            continue
        choice = (meta.get("labels") or {}).get("sidecar.istio.io/inject") or (
            meta.get("annotations") or {}).get("sidecar.istio.io/inject", "")
        if choice.lower() == "false":
            continue
        names = [c["name"] for c in pod["spec"].get("containers", [])]
        if SIDECAR_CONTAINER not in names and not any(
                c["name"] == SIDECAR_CONTAINER for c in pod["spec"].get("initContainers") or []):
            yield _message("Warning", "IST0103", pod, f"The pod {meta['name']} is missing the "
                           "Istio proxy. This can often be resolved by restarting or "
                           "redeploying the workload.", snapshot)


def injection_labels(labels: dict[str, str]) -> list[str]:
    """The namespace's injection labels as upstream lists them: `istio-injection`, then
    `istio.io/rev` and `istio.io/dataplane-mode` unless `istio-injection` is set to something
    other than `enabled` (which opts the namespace out)."""
    legacy = labels.get("istio-injection")
    found = [] if legacy is None else [f"istio-injection={legacy}"]
    found += [f"{key}={labels[key]}" for key in ("istio.io/rev", "istio.io/dataplane-mode")
              if key in labels and legacy in (None, "enabled")]
    return found


def port_names(snapshot: Snapshot) -> Iterator[Message]:
    """IST0118 (service/portname.go): a port without appProtocol whose name does not start
    with a protocol Istio knows (`http`, `http-web`, `grpc`, ...)."""
    for service in snapshot.objects["Service"]:
        labels = service["metadata"].get("labels") or {}
        if labels.get("app") == "istiod" or "gateway.istio.io/managed" in labels:
            continue
        for port in service.get("spec", {}).get("ports") or []:
            if port.get("appProtocol") or port.get("protocol") == "UDP":
                continue
            name = str(port.get("name", ""))
            if name.split("-")[0].lower() not in PROTOCOLS:
                target = port.get("targetPort", port.get("port"))
                yield _message("Info", "IST0118", service, f"Port name {name} (port: "
                               f"{port.get('port')}, targetPort: {target}) doesn't follow the "
                               "naming convention of Istio port.", snapshot)


def subset_pods(snapshot: Snapshot) -> Iterator[Message]:
    """IST0173 (destinationrule/subset.go): a subset whose labels select no pod of the
    host's Service; IST0174 when the host is no Service."""
    services = {f"{s['metadata']['name']}.{s['metadata']['namespace']}.svc.cluster.local": s
                for s in snapshot.objects["Service"]}
    hosts = _known_hosts(snapshot)
    for rule in snapshot.objects["DestinationRule"]:
        spec = rule.get("spec", {})
        fqdn = _fqdn(spec.get("host", ""), rule["metadata"]["namespace"])
        if not _host_exists(fqdn, hosts):
            yield _message("Warning", "IST0174", rule, f"The host {spec.get('host')} defined in "
                           "the DestinationRule does not match any services in the mesh.",
                           snapshot)
            continue
        service = services.get(fqdn)
        if service is None:
            continue
        selector = service.get("spec", {}).get("selector") or {}
        pods = [(p["metadata"].get("labels") or {}) for p in snapshot.objects["Pod"]
                if p["metadata"].get("namespace") == service["metadata"]["namespace"]]
        for subset in spec.get("subsets") or []:
            wanted = {**selector, **(subset.get("labels") or {})}
            if not any(all(labels.get(k) == v for k, v in wanted.items()) for labels in pods):
                yield _message("Error", "IST0173", rule, f"The Subset {subset.get('name')} "
                               "defined in the DestinationRule does not select any pods. Which "
                               "may lead to 503 UH (NoHealthyUpstream).", snapshot)


ANALYZERS = (destination_hosts, gateways, subsets, mesh_gateway_conflicts, unreachable_rules,
             injection, port_names, subset_pods)


def analyze(snapshot: Snapshot, namespaces: Iterable[str] | None) -> list[Message]:
    """Every message about an object in `namespaces` (None: all but the system ones for
    namespace checks), sorted and deduplicated as `diag.Messages.SortedDedupedCopy`."""
    scope = set(namespaces) if namespaces is not None else None
    found: dict[str, Message] = {}
    for analyzer in ANALYZERS:
        for message in analyzer(snapshot):
            own = message.name if message.kind == "Namespace" else message.namespace
            if scope is not None and own not in scope:
                continue
            if scope is None and own in SYSTEM_NAMESPACES:
                continue
            found.setdefault(str(message), message)
    return sorted(found.values(), key=Message.sort_key)
