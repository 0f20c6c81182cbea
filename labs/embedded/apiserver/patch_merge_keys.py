"""Which list is merged by which key: the patch metadata of the built-in Kubernetes types.

Strategic merge patch and server-side apply both need, for every field of a built-in object,
its type and its `patchStrategy` / `patchMergeKey` (the Go struct tags in k8s.io/api, published
as `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key` in the OpenAPI spec). Field
types come from the official `kubernetes` client's generated models (through the table in
`client_models`); the strategies are transcribed below from the struct tags compiled into
kubectl 1.37. A field missing from the table is atomic: a patch replaces it whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Literal

from . import client_models

# (model class, JSON field) -> (patch strategies, merge key or None). Lists of primitives with
# strategy "merge" and no key are merged as sets (metadata.finalizers, spec.podCIDRs).
_CONTAINER_LISTS = {
    "ports": ("merge", "containerPort"),
    "env": ("merge", "name"),
    "volumeMounts": ("merge", "mountPath"),
    "volumeDevices": ("merge", "devicePath"),
}
_CONDITIONS = ("merge", "type")
PATCH_META: dict[tuple[str, str], tuple[str, str | None]] = {
    ("V1ObjectMeta", "finalizers"): ("merge", None),
    ("V1ObjectMeta", "ownerReferences"): ("merge", "uid"),
    ("V1PodSpec", "containers"): ("merge", "name"),
    ("V1PodSpec", "initContainers"): ("merge", "name"),
    ("V1PodSpec", "ephemeralContainers"): ("merge", "name"),
    ("V1PodSpec", "volumes"): ("merge,retainKeys", "name"),
    ("V1PodSpec", "imagePullSecrets"): ("merge", "name"),
    ("V1PodSpec", "hostAliases"): ("merge", "ip"),
    ("V1PodSpec", "topologySpreadConstraints"): ("merge", "topologyKey"),
    ("V1PodSpec", "schedulingGates"): ("merge", "name"),
    ("V1PodSpec", "resourceClaims"): ("merge,retainKeys", "name"),
    **{("V1Container", f): v for f, v in _CONTAINER_LISTS.items()},
    **{("V1EphemeralContainer", f): v for f, v in _CONTAINER_LISTS.items()},
    ("V1PodStatus", "conditions"): _CONDITIONS,
    ("V1PodStatus", "podIPs"): ("merge", "ip"),
    ("V1PodStatus", "hostIPs"): ("merge", "ip"),
    ("V1PodStatus", "resourceClaimStatuses"): ("merge,retainKeys", "name"),
    ("V1ContainerStatus", "volumeMounts"): ("merge", "mountPath"),
    ("V1ContainerStatus", "allocatedResourcesStatus"): ("merge", "name"),
    ("V1ServiceSpec", "ports"): ("merge", "port"),
    ("V1ServiceStatus", "conditions"): _CONDITIONS,
    ("V1ServiceAccount", "secrets"): ("merge", "name"),
    ("V1NamespaceStatus", "conditions"): _CONDITIONS,
    ("V1NodeSpec", "podCIDRs"): ("merge", None),
    ("V1NodeStatus", "conditions"): _CONDITIONS,
    ("V1NodeStatus", "addresses"): ("merge", "type"),
    ("V1PersistentVolumeClaimStatus", "conditions"): _CONDITIONS,
    ("V1ReplicationControllerStatus", "conditions"): _CONDITIONS,
    ("V1DeploymentSpec", "strategy"): ("retainKeys", None),
    ("V1DeploymentStatus", "conditions"): _CONDITIONS,
    ("V1ReplicaSetStatus", "conditions"): _CONDITIONS,
    ("V1StatefulSetStatus", "conditions"): _CONDITIONS,
    ("V1DaemonSetStatus", "conditions"): _CONDITIONS,
    ("V1JobStatus", "conditions"): _CONDITIONS,
    ("V1PodDisruptionBudgetSpec", "selector"): ("replace", None),
    ("V1PodDisruptionBudgetStatus", "conditions"): _CONDITIONS,
    ("V2HorizontalPodAutoscalerStatus", "conditions"): _CONDITIONS,
    ("V1MutatingWebhookConfiguration", "webhooks"): ("merge", "name"),
    ("V1ValidatingWebhookConfiguration", "webhooks"): ("merge", "name"),
    ("V1MutatingWebhook", "matchConditions"): ("merge", "name"),
    ("V1ValidatingWebhook", "matchConditions"): ("merge", "name"),
}

# Server-side apply keys lists by `x-kubernetes-list-map-keys`, which for a few lists has more
# keys than the strategic merge key; a missing key field takes its default (protocol "TCP").
_APPLY_KEYS: dict[tuple[str, str], tuple[tuple[str, object], ...]] = {
    ("V1Container", "ports"): (("containerPort", None), ("protocol", "TCP")),
    ("V1EphemeralContainer", "ports"): (("containerPort", None), ("protocol", "TCP")),
    ("V1ServiceSpec", "ports"): (("port", None), ("protocol", "TCP")),
    ("V1PodSpec", "topologySpreadConstraints"): (("topologyKey", None),
                                                 ("whenUnsatisfiable", None)),
}

# Structs marked `+structType=atomic`: server-side apply owns them as one value.
_ATOMIC_STRUCTS = frozenset({"V1LabelSelector"})

# apiVersion -> kind -> generated model class. Custom resources are absent on purpose: they
# have no strategic merge metadata, and a real API server answers 415 for such patches.
KIND_MODELS: dict[str, dict[str, str]] = {
    "v1": {k: f"V1{k}" for k in (
        "Namespace", "Pod", "Service", "Endpoints", "ServiceAccount", "ConfigMap", "Secret",
        "Node", "PersistentVolume", "PersistentVolumeClaim", "ReplicationController",
        "LimitRange", "ResourceQuota", "PodTemplate")} | {"Event": "CoreV1Event"},
    "events.k8s.io/v1": {"Event": "EventsV1Event"},
    "apps/v1": {k: f"V1{k}" for k in (
        "Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "ControllerRevision")},
    "batch/v1": {"Job": "V1Job", "CronJob": "V1CronJob"},
    "networking.k8s.io/v1": {k: f"V1{k}" for k in ("Ingress", "IngressClass", "NetworkPolicy")},
    "discovery.k8s.io/v1": {"EndpointSlice": "V1EndpointSlice"},
    "apiextensions.k8s.io/v1": {"CustomResourceDefinition": "V1CustomResourceDefinition"},
    "rbac.authorization.k8s.io/v1": {k: f"V1{k}" for k in (
        "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")},
    "coordination.k8s.io/v1": {"Lease": "V1Lease"},
    "policy/v1": {"PodDisruptionBudget": "V1PodDisruptionBudget"},
    "autoscaling/v2": {"HorizontalPodAutoscaler": "V2HorizontalPodAutoscaler"},
    "admissionregistration.k8s.io/v1": {
        "MutatingWebhookConfiguration": "V1MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration": "V1ValidatingWebhookConfiguration"},
}


@dataclass(frozen=True)
class TypeRef:
    """The shape of a JSON value: a struct (a generated model), a list, a map, a scalar, any
    JSON, or the root of a custom resource (typed metadata, free-form otherwise)."""

    kind: Literal["struct", "list", "map", "scalar", "any", "custom"]
    model: str | None = None  # for "struct"
    item: TypeRef | None = None  # element type for "list" and "map"

    @property
    def atomic(self) -> bool:
        return self.kind == "struct" and self.model in _ATOMIC_STRUCTS


ANY = TypeRef("any")
_SCALARS = frozenset({"str", "int", "float", "bool", "datetime", "date"})


@dataclass(frozen=True)
class FieldMeta:
    """A field's type and patch metadata."""

    type: TypeRef
    strategies: frozenset[str] = frozenset()
    merge_key: str | None = None
    apply_keys: tuple[tuple[str, object], ...] = ()  # list-map keys with defaults for SSA

    @property
    def list_mode(self) -> Literal["keyed", "set", "atomic"]:
        """How a list field merges: by key, as a set of primitives, or replaced whole."""
        if self.type.kind != "list" or "merge" not in self.strategies:
            return "atomic"
        if self.merge_key:
            return "keyed"
        return "set" if self.type.item is not None and self.type.item.kind == "scalar" else "atomic"


UNTYPED = FieldMeta(ANY)


def model_for(api_version: str, kind: str) -> str | None:
    """The generated model class name for a built-in kind, or None (custom resources)."""
    return KIND_MODELS.get(api_version, {}).get(kind)


def root_type(api_version: str, kind: str) -> TypeRef:
    model = model_for(api_version, kind)
    return TypeRef("struct", model) if model else TypeRef("custom")


_GENERIC = re.compile(r"^(List|Dict)\[(?:str, )?(.*)\]$")


@cache
def _parse(type_name: str) -> TypeRef:
    match = _GENERIC.match(type_name)
    if match:
        container = "list" if match.group(1) == "List" else "map"
        return TypeRef(container, item=_parse(match.group(2)))
    if type_name in _SCALARS:
        return TypeRef("scalar")
    if client_models.is_model(type_name):
        return TypeRef("struct", type_name)
    return ANY  # "object": free-form JSON (RawExtension, JSONSchemaProps.default, ...)


@cache
def _struct_fields(model: str) -> dict[str, str]:
    return {field.json_name: field.type_name for field in client_models.fields(model)}


def child(parent: TypeRef, key: str) -> FieldMeta:
    """The metadata of `key` inside a value of type `parent` (UNTYPED when unknown)."""
    if parent.kind == "map" and parent.item is not None:
        return FieldMeta(parent.item)
    if parent.kind == "custom":
        return FieldMeta(TypeRef("struct", "V1ObjectMeta")) if key == "metadata" else UNTYPED
    if parent.kind != "struct" or parent.model is None:
        return UNTYPED
    type_name = _struct_fields(parent.model).get(key)
    if type_name is None:
        return UNTYPED
    strategy, merge_key = PATCH_META.get((parent.model, key), ("", None))
    apply_keys = _APPLY_KEYS.get((parent.model, key)) or (((merge_key, None),) if merge_key else ())
    return FieldMeta(_parse(type_name), frozenset(filter(None, strategy.split(","))), merge_key,
                     apply_keys)
