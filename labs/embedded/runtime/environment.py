"""The environment a container process (and `kubectl exec` in it) gets, built like the kubelet's.

Order and precedence follow the kubelet: `envFrom` sources, then `env` entries (with `$(VAR)`
expansion), then the Docker-links style service variables for names not already set. On top of a
minimal clean base (PATH, HOME = the container's working directory, LANG, HOSTNAME = pod name) the
runtime adds MESHLAB_POD_NAME / MESHLAB_POD_NAMESPACE / MESHLAB_POD_UID for the built-in twins,
the pod's network settings (`http_proxy` …, its `localhost` map: see network.py) and, first on
PATH, the directory of the commands its images provide. POD_NAME and friends are not automatic,
as on a real cluster: use `fieldRef`.
"""

from __future__ import annotations

import base64
import binascii
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..apiserver.api import ObjectApi
from ..workload import POD_NAME_ENV, POD_NAMESPACE_ENV
from .process import POD_UID_ENV

Obj = dict[str, Any]
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
POD_IP = "127.0.0.1"
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_LABEL_REF = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


class ContainerConfigError(Exception):
    """The container cannot be configured yet (the kubelet's CreateContainerConfigError)."""


def base_env(pod: Obj, workdir: Path, bin_dir: Path | None = None) -> dict[str, str]:
    meta = pod["metadata"]
    python_bin = str(Path(sys.executable).parent)  # `python` inside the pod is the course's
    shims = f"{bin_dir}:" if bin_dir is not None else ""
    return {
        "PATH": f"{shims}{BASE_PATH}:{python_bin}",
        "HOME": str(workdir),
        "LANG": "C.UTF-8",
        "HOSTNAME": meta["name"],
        POD_NAME_ENV: meta["name"],
        POD_NAMESPACE_ENV: meta.get("namespace", ""),
        POD_UID_ENV: meta.get("uid", ""),
    }


def container_env(api: ObjectApi, pod: Obj, container: Obj, workdir: Path, *,
                  network: Mapping[str, str] | None = None,
                  bin_dir: Path | None = None) -> dict[str, str]:
    """The full environment; raises ContainerConfigError for a missing ConfigMap/Secret/key.
    `network` and `bin_dir` extend the base, so the pod spec's own `env` still wins."""
    namespace = pod["metadata"].get("namespace", "default")
    explicit: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        explicit.update(_env_from(api, namespace, source))
    services = service_env(api, pod)
    for var in container.get("env") or []:
        name = var.get("name", "")
        if "valueFrom" in var:
            value = _value_from(api, pod, container, var["valueFrom"])
            if value is None:  # an optional source that is missing: the variable is not set
                continue
        else:
            value = expand(str(var.get("value", "")), {**services, **explicit})
        explicit[name] = value
    env = base_env(pod, workdir, bin_dir)
    env.update(network or {})
    env.update({k: v for k, v in services.items() if k not in explicit})
    env.update(explicit)
    return env


def expand(value: str, mapping: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: unknown references stay as written, `$$` escapes `$`."""
    out: list[str] = []
    i = 0
    while i < len(value):
        if value[i] == "$" and i + 1 < len(value):
            if value[i + 1] == "$":
                out.append("$")
                i += 2
                continue
            if value[i + 1] == "(":
                end = value.find(")", i + 2)
                if end > 0:
                    name = value[i + 2:end]
                    out.append(mapping.get(name, value[i:end + 1]))
                    i = end + 1
                    continue
        out.append(value[i])
        i += 1
    return "".join(out)


def _find(api: ObjectApi, plural: str, namespace: str, name: str) -> Obj | None:
    rt = api.registry.lookup("", "v1", plural)
    assert rt is not None
    return api.find(rt, namespace, name)


def _secret_data(secret: Obj) -> dict[str, str]:
    data: dict[str, str] = {}
    for key, encoded in (secret.get("data") or {}).items():
        try:
            data[key] = base64.b64decode(encoded, validate=True).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            raise ContainerConfigError(
                f"secret \"{secret['metadata']['name']}\": key {key} is not valid base64; "
                "re-create the secret (kubectl create secret generic ... --from-literal=...)"
            ) from None
    data.update(secret.get("stringData") or {})
    return data


def _source(api: ObjectApi, kind: str, namespace: str, name: str,
            optional: bool) -> dict[str, str] | None:
    """The data of a ConfigMap or Secret, None when missing but optional."""
    plural = "configmaps" if kind == "ConfigMap" else "secrets"
    obj = _find(api, plural, namespace, name)
    if obj is None:
        if optional:
            return None
        raise ContainerConfigError(f'{kind.lower()} "{name}" not found')
    if kind == "Secret":
        return _secret_data(obj)
    return {k: str(v) for k, v in (obj.get("data") or {}).items()}


def _env_from(api: ObjectApi, namespace: str, source: Obj) -> dict[str, str]:
    prefix = source.get("prefix", "")
    for kind, field in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
        ref = source.get(field)
        if ref is not None:
            data = _source(api, kind, namespace, ref.get("name", ""), bool(ref.get("optional")))
            # invalid variable names are skipped, as the kubelet does
            return {prefix + k: v for k, v in (data or {}).items() if _ENV_NAME.match(prefix + k)}
    raise ContainerConfigError("envFrom entry needs configMapRef or secretRef")


def _value_from(api: ObjectApi, pod: Obj, container: Obj, value_from: Obj) -> str | None:
    namespace = pod["metadata"].get("namespace", "default")
    for kind, field in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
        ref = value_from.get(field)
        if ref is None:
            continue
        name, key, optional = ref.get("name", ""), ref.get("key", ""), bool(ref.get("optional"))
        data = _source(api, kind, namespace, name, optional)
        if data is None:
            return None
        if key not in data:
            if optional:
                return None
            raise ContainerConfigError(f"couldn't find key {key} in {kind} {namespace}/{name}")
        return data[key]
    if "fieldRef" in value_from:
        return field_value(pod, value_from["fieldRef"].get("fieldPath", ""))
    if "resourceFieldRef" in value_from:
        resource = value_from["resourceFieldRef"].get("resource", "")
        raise ContainerConfigError(
            f"container {container.get('name')}: resourceFieldRef {resource!r} is not emulated by "
            "the embedded runtime; set the value with `value:` instead")
    raise ContainerConfigError(f"unsupported valueFrom {sorted(value_from)}")


def field_value(pod: Obj, path: str) -> str:
    """The downward API's `fieldRef` paths for environment variables."""
    meta, spec = pod["metadata"], pod.get("spec", {})
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": POD_IP,
        "status.podIPs": POD_IP,
        "status.hostIP": POD_IP,
        "status.hostIPs": POD_IP,
    }
    if path in simple:
        return simple[path]
    match = _LABEL_REF.match(path)
    if match:
        return (meta.get(match.group(1)) or {}).get(match.group(2), "")
    raise ContainerConfigError(
        f"fieldRef {path!r} is not supported: use metadata.name, metadata.namespace, "
        "metadata.uid, metadata.labels['KEY'], metadata.annotations['KEY'], spec.nodeName, "
        "spec.serviceAccountName, status.podIP or status.hostIP")


def _service_vars(service: Obj) -> dict[str, str]:
    """Docker-links style variables for one service, as pkg/kubelet/envvars makes them."""
    spec = service.get("spec", {})
    ip = spec.get("clusterIP", "")
    ports = spec.get("ports") or []
    if not ip or ip == "None" or not ports:
        return {}
    prefix = service["metadata"]["name"].upper().replace("-", "_")
    first = ports[0]
    out = {f"{prefix}_SERVICE_HOST": ip, f"{prefix}_SERVICE_PORT": str(first.get("port")),
           f"{prefix}_PORT": f"{first.get('protocol', 'TCP').lower()}://{ip}:{first.get('port')}"}
    for port in ports:
        number, proto = port.get("port"), port.get("protocol", "TCP")
        if port.get("name"):
            out[f"{prefix}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(number)
        base = f"{prefix}_PORT_{number}_{proto.upper()}"
        out[base] = f"{proto.lower()}://{ip}:{number}"
        out[f"{base}_PROTO"] = proto.lower()
        out[f"{base}_PORT"] = str(number)
        out[f"{base}_ADDR"] = ip
    return out


def service_env(api: ObjectApi, pod: Obj) -> dict[str, str]:
    """Services of the pod's namespace (if enableServiceLinks) plus `kubernetes` in default."""
    rt = api.registry.lookup("", "v1", "services")
    assert rt is not None
    namespace = pod["metadata"].get("namespace", "default")
    services: list[Obj] = []
    if pod.get("spec", {}).get("enableServiceLinks", True):
        services = api.list(rt, namespace)[0]
    master = api.find(rt, "default", "kubernetes")
    if master is not None:
        services.append(master)
    out: dict[str, str] = {}
    for service in services:
        out.update(_service_vars(service))
    return out

