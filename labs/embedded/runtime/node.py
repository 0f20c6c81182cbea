"""The cluster's one Node, registered the way a kubelet registers itself at start-up."""

from __future__ import annotations

import os
import platform
import uuid
from pathlib import Path
from typing import Any

from ..apiserver.api import ObjectApi
from ..apiserver.objects import now
from .environment import POD_IP

Obj = dict[str, Any]
KUBELET_VERSION = "v1.37.0-meshlab"
MAX_PODS = "110"
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _memory_ki() -> str:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return f"{line.split()[1]}Ki"
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        return f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') // 1024}Ki"
    return "8Gi"


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return f"{platform.system()} {platform.release()}"


def node_object(name: str) -> Obj:
    resources = {"cpu": str(os.cpu_count() or 1), "memory": _memory_ki(), "pods": MAX_PODS,
                 "ephemeral-storage": "100Gi"}
    stamp = now()

    def condition(ctype: str, status: str, reason: str, message: str) -> Obj:
        return {"type": ctype, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}

    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": _ARCH.get(platform.machine().lower(), platform.machine()),
            "beta.kubernetes.io/os": "linux", "node-role.kubernetes.io/control-plane": ""}},
        "spec": {},
        "status": {
            "capacity": resources,
            "allocatable": dict(resources),
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory",
                          "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure",
                          "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID",
                          "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [{"type": "InternalIP", "address": POD_IP},
                          {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": _read("/etc/machine-id") or uuid.uuid4().hex,
                "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
                "bootID": _read("/proc/sys/kernel/random/boot_id") or str(uuid.uuid4()),
                "kernelVersion": platform.release(),
                "osImage": _os_image(),
                "containerRuntimeVersion": "meshlab://0.1.0",
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": _ARCH.get(platform.machine().lower(), platform.machine()),
            },
        },
    }


def register_node(api: ObjectApi, name: str) -> Obj:
    """Create the Node, or refresh its labels and status if it survived a daemon restart."""
    rt = api.registry.lookup("", "v1", "nodes")
    assert rt is not None
    wanted = node_object(name)
    existing = api.find(rt, "", name)
    if existing is None:
        return api.create(rt, "", wanted, validate=False).object
    existing["metadata"].setdefault("labels", {}).update(wanted["metadata"]["labels"])
    api.update(rt, "", name, existing, validate=False)
    current = api.get(rt, "", name)
    current["status"] = wanted["status"]
    return api.update(rt, "", name, current, subresource="status", validate=False).object
