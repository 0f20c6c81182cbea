"""Config tracking (fluxcd/flagger v1.44.0 `pkg/canary/config_tracker.go`): the ConfigMaps and
Secrets a target's pod spec references (volumes, projected sources, env valueFrom, envFrom, of
containers and init containers) are copied as `<name>-primary` for the primary, whose pod spec
is rewritten to use the copies; their checksums (`status.trackedConfigs`, `configmap/<name>`
→ first 8 bytes of the SHA-256 of the JSON data) make a changed ConfigMap a new revision.

Objects annotated `flagger.app/config-tracking: disabled` are left alone; Secrets other than
Opaque, basic-auth, ssh-auth and TLS are ignored, as upstream does.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.errors import ApiError

from .status import MANAGER

Obj = dict[str, Any]
DISABLED_ANNOTATION = "flagger.app/config-tracking"
TRACKED_SECRET_TYPES = ("Opaque", "kubernetes.io/basic-auth", "kubernetes.io/ssh-auth",
                        "kubernetes.io/tls")
log = logging.getLogger("meshlab.flagger")


class ConfigError(Exception):
    """A mandatory ConfigMap or Secret is missing, or a copy could not be written."""


@dataclass(frozen=True)
class ConfigRef:
    type: str  # "configmap" | "secret"
    name: str
    checksum: str

    @property
    def key(self) -> str:
        return f"{self.type}/{self.name}"


def _mandatory(ref: Obj) -> bool:
    return not ref.get("optional", False)


def references(pod_spec: Obj) -> Iterator[tuple[str, Obj, str]]:
    """(type, the dict holding the name, the name's key) for each reference, in the places
    GetTargetConfigs and ApplyPrimaryConfigs both look."""
    for volume in pod_spec.get("volumes") or []:
        if volume.get("configMap"):
            yield "configmap", volume["configMap"], "name"
        if volume.get("secret"):
            yield "secret", volume["secret"], "secretName"
        for source in (volume.get("projected") or {}).get("sources") or []:
            if source.get("configMap"):
                yield "configmap", source["configMap"], "name"
            if source.get("secret"):
                yield "secret", source["secret"], "name"
    for container in [*(pod_spec.get("containers") or []),
                      *(pod_spec.get("initContainers") or [])]:
        for env in container.get("env") or []:
            value_from = env.get("valueFrom") or {}
            if value_from.get("configMapKeyRef"):
                yield "configmap", value_from["configMapKeyRef"], "name"
            elif value_from.get("secretKeyRef"):
                yield "secret", value_from["secretKeyRef"], "name"
        for env_from in container.get("envFrom") or []:
            if env_from.get("configMapRef"):
                yield "configmap", env_from["configMapRef"], "name"
            elif env_from.get("secretRef"):
                yield "secret", env_from["secretRef"], "name"


def checksum(data: object) -> str:
    encoded = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).digest()[:8].hex()


class ConfigTracker:
    def __init__(self, api: ObjectApi) -> None:
        self.api = api
        maps = api.registry.lookup("", "v1", "configmaps")
        secrets = api.registry.lookup("", "v1", "secrets")
        assert maps is not None and secrets is not None
        self.kinds = {"configmap": maps, "secret": secrets}

    def _ref(self, kind: str, name: str, namespace: str) -> ConfigRef | None:
        obj = self.api.find(self.kinds[kind], namespace, name)
        if obj is None:
            plural = "configmaps" if kind == "configmap" else "secrets"
            raise ConfigError(f'{kind} {name}.{namespace} get query error: {plural} "{name}" '
                              "not found")
        annotations = obj["metadata"].get("annotations") or {}
        if str(annotations.get(DISABLED_ANNOTATION, "")).startswith("disable"):
            return None
        if kind == "secret" and obj.get("type", "Opaque") not in TRACKED_SECRET_TYPES:
            return None
        return ConfigRef(kind, name, checksum(obj.get("data") or {}))

    def target_configs(self, pod_spec: Obj, namespace: str) -> dict[str, ConfigRef]:
        """GetTargetConfigs: a missing mandatory reference is an error, an optional one is
        skipped."""
        wanted: dict[tuple[str, str], bool] = {}
        for kind, holder, key in references(pod_spec):
            wanted[(kind, str(holder.get(key, "")))] = _mandatory(holder)
        found: dict[str, ConfigRef] = {}
        for (kind, name), mandatory in wanted.items():
            try:
                ref = self._ref(kind, name, namespace)
            except ConfigError as err:
                if mandatory:
                    raise ConfigError(f"{kind} {name}.{namespace} get query error: {err}"
                                      ) from None
                log.error("%s %s.%s get query failed: %s", kind, name, namespace, err)
                continue
            if ref is not None:
                found[ref.key] = ref
        return found

    @staticmethod
    def changed(refs: dict[str, ConfigRef], tracked: dict[str, str] | None) -> bool:
        """HasConfigChanged against `status.trackedConfigs`."""
        if not refs and tracked is None:
            return False
        if tracked is None or len(refs) != len(tracked):
            return True
        return any(tracked.get(key) != ref.checksum for key, ref in refs.items())

    def create_primary_configs(self, cd: Obj, refs: dict[str, ConfigRef],
                               owner: Obj) -> None:
        """CreatePrimaryConfigs: `<name>-primary` copies owned by the Canary (other owners of
        an existing copy are kept, no longer as controller)."""
        namespace = cd["metadata"]["namespace"]
        for ref in refs.values():
            rt = self.kinds[ref.type]
            source = self.api.find(rt, namespace, ref.name)
            if source is None:
                raise ConfigError(f"{ref.type} {ref.name}.{namespace} get query failed : "
                                  "not found")
            name = f"{ref.name}-primary"
            owners = [owner]
            current = self.api.find(rt, namespace, name)
            for other in (current or {}).get("metadata", {}).get("ownerReferences") or []:
                if other.get("kind") != "Canary" or other.get("name") != cd["metadata"]["name"]:
                    owners.append({**other, "controller": False})
            body: Obj = {"apiVersion": "v1", "kind": "ConfigMap" if ref.type == "configmap"
                         else "Secret",
                         "metadata": {"name": name, "namespace": namespace,
                                      "ownerReferences": owners},
                         "data": copy.deepcopy(source.get("data") or {})}
            if ref.type == "secret":
                body["type"] = source.get("type", "Opaque")
            try:
                if current is None:
                    self.api.create(rt, namespace, body, manager=MANAGER)
                else:
                    self.api.update(rt, namespace, name, body, manager=MANAGER)
            except ApiError as err:
                verb = "creating" if current is None else "updating"
                raise ConfigError(f"{verb} {ref.type} {name}.{namespace} failed: "
                                  f"{err.message}") from None

    @staticmethod
    def apply_primary_configs(pod_spec: Obj, refs: dict[str, ConfigRef]) -> Obj:
        """ApplyPrimaryConfigs: a copy of the pod spec naming the `-primary` copies."""
        out = copy.deepcopy(pod_spec)
        for kind, holder, key in references(out):
            if f"{kind}/{holder.get(key)}" in refs:
                holder[key] = f"{holder[key]}-primary"
        return out
