"""Server-side `Table` output: the columns `kubectl get` prints.

kubectl asks for `as=Table` and prints the server's columns verbatim; without them only NAME and
AGE show. Built-in kinds use the real printers' columns; custom resources use their CRD's
`additionalPrinterColumns`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from typing import Any

from ...duration import human_duration
from .objects import parse_time
from .resources import PrinterColumn, ResourceType

Obj = dict[str, Any]
Column = tuple[str, str, int, Callable[[Obj], Any]]  # name, type, priority, cell function


def age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    delta = dt.datetime.now(dt.UTC) - parse_time(timestamp)
    return human_duration(delta.total_seconds())


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata", {})


def _age(obj: Obj) -> str:
    return age(_meta(obj).get("creationTimestamp"))


def _pod_status(pod: Obj) -> str:
    if _meta(pod).get("deletionTimestamp"):
        return "Terminating"
    status = pod.get("status", {})
    reason = status.get("reason") or status.get("phase") or "Pending"
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state", {})
        if "waiting" in state and state["waiting"].get("reason"):
            reason = state["waiting"]["reason"]
        elif "terminated" in state:
            reason = state["terminated"].get("reason") or "Error"
    return reason


def _sidecar_statuses(pod: Obj) -> list[Obj]:
    """The statuses of native sidecars (init containers with `restartPolicy: Always`), which
    kubectl counts with the app containers (kubernetes pkg/printers/internalversion/printers.go
    printPod: a meshed Linkerd pod is `2/2`)."""
    restartable = {c.get("name") for c in pod.get("spec", {}).get("initContainers") or []
                   if c.get("restartPolicy") == "Always"}
    return [cs for cs in pod.get("status", {}).get("initContainerStatuses") or []
            if cs.get("name") in restartable]


def _pod_ready(pod: Obj) -> str:
    statuses = [*(pod.get("status", {}).get("containerStatuses") or []), *_sidecar_statuses(pod)]
    total = len(pod.get("spec", {}).get("containers") or []) + sum(
        1 for c in pod.get("spec", {}).get("initContainers") or []
        if c.get("restartPolicy") == "Always")
    return f"{sum(1 for cs in statuses if cs.get('ready'))}/{total}"


def _pod_restarts(pod: Obj) -> str:
    """Restarts of every container, init containers included, as printPod adds them."""
    status = pod.get("status", {})
    statuses = [*(status.get("containerStatuses") or []),
                *(status.get("initContainerStatuses") or [])]
    restarts = sum(int(cs.get("restartCount", 0)) for cs in statuses)
    last = max((cs.get("lastState", {}).get("terminated", {}).get("finishedAt", "")
                for cs in statuses), default="")
    return f"{restarts} ({age(last)} ago)" if restarts and last else str(restarts)


def _service_ports(svc: Obj) -> str:
    ports = []
    for port in svc.get("spec", {}).get("ports") or []:
        node = f":{port['nodePort']}" if port.get("nodePort") else ""
        ports.append(f"{port.get('port')}{node}/{port.get('protocol', 'TCP')}")
    return ",".join(ports) or "<none>"


def _external_ip(svc: Obj) -> str:
    spec = svc.get("spec", {})
    if spec.get("type") == "ExternalName":
        return spec.get("externalName", "<none>")
    ingress = svc.get("status", {}).get("loadBalancer", {}).get("ingress") or []
    ips = [i.get("ip") or i.get("hostname") for i in ingress] + (spec.get("externalIPs") or [])
    if ips:
        return ",".join(ips)
    return "<pending>" if spec.get("type") == "LoadBalancer" else "<none>"


def _endpoints(ep: Obj) -> str:
    addrs = [f"{a.get('ip')}:{p.get('port')}" for subset in ep.get("subsets") or []
             for a in subset.get("addresses") or [] for p in subset.get("ports") or [{}]]
    if not addrs:
        return "<none>"
    shown = ",".join(addrs[:3])
    return f"{shown} + {len(addrs) - 3} more..." if len(addrs) > 3 else shown


def _selector(obj: Obj) -> str:
    sel = obj.get("spec", {}).get("selector") or {}
    labels = sel.get("matchLabels", sel) if isinstance(sel, dict) else {}
    return ",".join(f"{k}={v}" for k, v in labels.items() if isinstance(v, str)) or "<none>"


def _containers(obj: Obj, field: str) -> str:
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    return ",".join(c.get(field, "") for c in spec.get("containers") or [])


def _num(obj: Obj, *path: str) -> int:
    value: Any = obj
    for part in path:
        value = value.get(part, {}) if isinstance(value, dict) else {}
    return value if isinstance(value, int) else 0


def _event_object(ev: Obj) -> str:
    inv = ev.get("involvedObject", {})
    return f"{str(inv.get('kind', '')).lower()}/{inv.get('name', '')}"


def _condition_status(obj: Obj, ctype: str) -> str:
    for cond in obj.get("status", {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return "Ready" if cond.get("status") == "True" else "NotReady"
    return "Unknown"


def _subjects(obj: Obj, kind: str) -> str:
    """`rbac.SubjectsStrings`: users and groups by name, service accounts as namespace/name."""
    names = [f"{s.get('namespace', '')}/{s.get('name', '')}" if kind == "ServiceAccount"
             else s.get("name", "") for s in obj.get("subjects") or [] if s.get("kind") == kind]
    return ", ".join(names)


NAME: Column = ("Name", "string", 0, lambda o: _meta(o).get("name", ""))
AGE: Column = ("Age", "string", 0, _age)
CREATED_AT: Column = ("Created At", "date", 0, lambda o: _meta(o).get("creationTimestamp", ""))
# kubernetes pkg/printers/internalversion/printers.go: roleBindingsColumnDefinitions
BINDING_COLUMNS: list[Column] = [
    NAME, ("Role", "string", 0, lambda o: f"{o.get('roleRef', {}).get('kind', '')}/"
                                          f"{o.get('roleRef', {}).get('name', '')}"),
    AGE, ("Users", "string", 1, lambda o: _subjects(o, "User")),
    ("Groups", "string", 1, lambda o: _subjects(o, "Group")),
    ("ServiceAccounts", "string", 1, lambda o: _subjects(o, "ServiceAccount"))]

BUILTIN_COLUMNS: dict[str, list[Column]] = {
    "/pods": [NAME, ("Ready", "string", 0, _pod_ready), ("Status", "string", 0, _pod_status),
              ("Restarts", "string", 0, _pod_restarts), AGE,
              ("IP", "string", 1, lambda o: o.get("status", {}).get("podIP") or "<none>"),
              ("Node", "string", 1, lambda o: o.get("spec", {}).get("nodeName") or "<none>"),
              ("Nominated Node", "string", 1, lambda o: "<none>"),
              ("Readiness Gates", "string", 1, lambda o: "<none>")],
    "apps/deployments": [
        NAME,
        ("Ready", "string", 0,
         lambda o: f"{_num(o, 'status', 'readyReplicas')}/{_num(o, 'spec', 'replicas')}"),
        ("Up-to-date", "integer", 0, lambda o: _num(o, "status", "updatedReplicas")),
        ("Available", "integer", 0, lambda o: _num(o, "status", "availableReplicas")),
        AGE,
        ("Containers", "string", 1, lambda o: _containers(o, "name")),
        ("Images", "string", 1, lambda o: _containers(o, "image")),
        ("Selector", "string", 1, _selector)],
    "apps/replicasets": [
        NAME,
        ("Desired", "integer", 0, lambda o: _num(o, "spec", "replicas")),
        ("Current", "integer", 0, lambda o: _num(o, "status", "replicas")),
        ("Ready", "integer", 0, lambda o: _num(o, "status", "readyReplicas")),
        AGE,
        ("Containers", "string", 1, lambda o: _containers(o, "name")),
        ("Images", "string", 1, lambda o: _containers(o, "image")),
        ("Selector", "string", 1, _selector)],
    "/services": [NAME, ("Type", "string", 0, lambda o: o.get("spec", {}).get("type", "")),
                  ("Cluster-IP", "string", 0,
                   lambda o: o.get("spec", {}).get("clusterIP") or "<none>"),
                  ("External-IP", "string", 0, _external_ip),
                  ("Port(s)", "string", 0, _service_ports), AGE,
                  ("Selector", "string", 1, _selector)],
    "/endpoints": [NAME, ("Endpoints", "string", 0, _endpoints), AGE],
    "/namespaces": [NAME, ("Status", "string", 0, lambda o: o.get("status", {}).get("phase", "")),
                    AGE],
    "/nodes": [NAME, ("Status", "string", 0, lambda o: _condition_status(o, "Ready")),
               ("Roles", "string", 0, lambda o: "control-plane"), AGE,
               ("Version", "string", 0,
                lambda o: o.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", ""))],
    "/serviceaccounts": [NAME, ("Secrets", "integer", 0, lambda o: len(o.get("secrets") or [])),
                         AGE],
    "/configmaps": [NAME, ("Data", "integer", 0,
                           lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {})),
                    AGE],
    "/secrets": [NAME, ("Type", "string", 0, lambda o: o.get("type", "")),
                 ("Data", "integer", 0, lambda o: len(o.get("data") or {})), AGE],
    "/events": [("Last Seen", "string", 0,
                 lambda o: age(o.get("lastTimestamp") or o.get("eventTime")
                               or _meta(o).get("creationTimestamp"))),
                ("Type", "string", 0, lambda o: o.get("type", "")),
                ("Reason", "string", 0, lambda o: o.get("reason", "")),
                ("Object", "string", 0, _event_object),
                ("Message", "string", 0, lambda o: o.get("message", ""))],
    "networking.k8s.io/ingresses": [
        NAME,
        ("Class", "string", 0, lambda o: o.get("spec", {}).get("ingressClassName") or "<none>"),
        ("Hosts", "string", 0, lambda o: ",".join(
            r.get("host", "*") for r in o.get("spec", {}).get("rules") or []) or "*"),
        ("Address", "string", 0, lambda o: ",".join(
            i.get("ip") or i.get("hostname", "") for i in
            o.get("status", {}).get("loadBalancer", {}).get("ingress") or [])),
        ("Ports", "string", 0, lambda o: "80, 443" if o.get("spec", {}).get("tls") else "80"),
        AGE],
    "networking.k8s.io/ingressclasses": [
        NAME, ("Controller", "string", 0, lambda o: o.get("spec", {}).get("controller", "")),
        ("Parameters", "string", 0, lambda o: "<none>"), AGE],
    "apiextensions.k8s.io/customresourcedefinitions": [NAME, CREATED_AT],
    "rbac.authorization.k8s.io/roles": [NAME, CREATED_AT],
    "rbac.authorization.k8s.io/clusterroles": [NAME, CREATED_AT],
    "rbac.authorization.k8s.io/rolebindings": BINDING_COLUMNS,
    "rbac.authorization.k8s.io/clusterrolebindings": BINDING_COLUMNS,
}


# -- JSONPath for printer columns ----------------------------------------------------------------
_TOKEN = re.compile(
    r"\.([A-Za-z0-9_\-]+)"  # .field
    r"|\[(\d+|\*)\]"  # [0] or [*]
    r"|\[\?\(@\.([A-Za-z0-9_.\-]+)==[\"']([^\"']*)[\"']\)\]"  # [?(@.type=="Ready")]
)


def jsonpath(obj: Any, path: str) -> list[Any]:
    """The subset of kubectl JSONPath CRDs use: `.a.b`, `[0]`, `[*]`, `[?(@.type=="Ready")]`."""
    values = [obj]
    for field, index, filter_key, filter_value in _TOKEN.findall(path.strip("{}")):
        nxt: list[Any] = []
        for value in values:
            if field:
                if isinstance(value, dict) and field in value:
                    nxt.append(value[field])
            elif index == "*":
                if isinstance(value, list):
                    nxt.extend(value)
            elif index:
                if isinstance(value, list) and int(index) < len(value):
                    nxt.append(value[int(index)])
            elif isinstance(value, list):
                for item in value:
                    probe: Any = item
                    for part in filter_key.split("."):
                        probe = probe.get(part) if isinstance(probe, dict) else None
                    if str(probe) == filter_value:
                        nxt.append(item)
        values = nxt
    return values


def _custom_cell(obj: Obj, column: PrinterColumn) -> Any:
    values = jsonpath(obj, column.json_path)
    if not values:
        return None
    value = values[0] if len(values) == 1 else values
    if column.type == "date" and isinstance(value, str):
        return age(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return value


def columns_for(rt: ResourceType) -> list[Column]:
    if rt.key in BUILTIN_COLUMNS:
        return BUILTIN_COLUMNS[rt.key]
    if rt.custom and rt.printer_columns:
        cols: list[Column] = [NAME]
        for pc in rt.printer_columns:
            cols.append((pc.name, "string" if pc.type == "date" else pc.type, pc.priority,
                         lambda o, pc=pc: _custom_cell(o, pc)))
        return cols
    return [NAME, AGE]


def table(rt: ResourceType, objects: list[Obj], resource_version: str,
          include_object: str = "Metadata") -> Obj:
    cols = columns_for(rt)
    rows = []
    for obj in objects:
        row: Obj = {"cells": [fn(obj) for _, _, _, fn in cols]}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": obj.get("metadata", {})}
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [
            {"name": name, "type": ctype, "format": "name" if name == "Name" else "",
             "description": "", "priority": priority}
            for name, ctype, priority, _ in cols
        ],
        "rows": rows,
    }
