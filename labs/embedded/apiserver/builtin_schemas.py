"""OpenAPI v3 structural schemas for the built-in kinds the embedded API server serves.

The schemas are derived from the `kubernetes` Python client's generated models (one class per
API type, each with `openapi_types`, `attribute_map` and pydantic field metadata; read through
the table `client_models` generates from them), so they track the Kubernetes release the client
was generated from without a copy of the OpenAPI document.

What the models do not carry is added here by hand, from the Kubernetes API reference:
- `enum`s for the fields a learner mistypes most (imagePullPolicy, restartPolicy, Service type,
  protocol, strategy types, pathType ...), worded as the real server's "Unsupported value" lists;
- which string fields are `resource.Quantity` (accept `cpu: 1` and `cpu: 0.5` as well as "500m");
- `x-kubernetes-int-or-string` for IntOrString fields (the models type them as `object`).

Required fields come from the models (pydantic's `is_required()`), except booleans (Go decodes a
missing bool to false, the real server never says "Required value" for one) and anything under
a top-level `status` (the real server ignores client-sent status of the main resource).
Each struct carries its Go type name (`x-go-type: v1.PodSpec`) for the decoder's messages.
The only recursive type reachable from these kinds, JSONSchemaProps, is emitted once under the
root's `definitions` and referenced with `$ref: "#/definitions/<Model>"`, so every schema
stays acyclic and JSON-serialisable.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from . import client_models
from .decode import GO_TYPE, go_type_name

Schema = dict[str, Any]

# (apiVersion, kind) -> generated model class name.
KINDS: dict[tuple[str, str], str] = {
    ("v1", "Namespace"): "V1Namespace",
    ("v1", "Node"): "V1Node",
    ("v1", "Pod"): "V1Pod",
    ("v1", "Service"): "V1Service",
    ("v1", "Endpoints"): "V1Endpoints",
    ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Secret"): "V1Secret",
    ("v1", "Event"): "CoreV1Event",
    ("v1", "Binding"): "V1Binding",
    ("events.k8s.io/v1", "Event"): "EventsV1Event",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("apps/v1", "ReplicaSet"): "V1ReplicaSet",
    ("apps/v1", "StatefulSet"): "V1StatefulSet",
    ("apps/v1", "DaemonSet"): "V1DaemonSet",
    ("networking.k8s.io/v1", "Ingress"): "V1Ingress",
    ("networking.k8s.io/v1", "IngressClass"): "V1IngressClass",
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): "V1CustomResourceDefinition",
    ("batch/v1", "Job"): "V1Job",
    ("batch/v1", "CronJob"): "V1CronJob",
    ("coordination.k8s.io/v1", "Lease"): "V1Lease",
    ("autoscaling/v1", "Scale"): "V1Scale",
    ("discovery.k8s.io/v1", "EndpointSlice"): "V1EndpointSlice",
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): "V1ClusterRole",
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "V1ClusterRoleBinding",
    ("rbac.authorization.k8s.io/v1", "Role"): "V1Role",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "V1RoleBinding",
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview"): "V1SelfSubjectAccessReview",
    ("authorization.k8s.io/v1", "SelfSubjectRulesReview"): "V1SelfSubjectRulesReview",
}

_PROTOCOLS = ["SCTP", "TCP", "UDP"]
_PULL_POLICIES = ["Always", "IfNotPresent", "Never"]
_TRAFFIC_POLICIES = ["Cluster", "Local"]
_UPDATE_STRATEGIES = ["OnDelete", "RollingUpdate"]

# (model, python attribute) -> allowed values, in the order the real server lists them.
ENUMS: dict[tuple[str, str], list[str]] = {
    ("V1Container", "image_pull_policy"): _PULL_POLICIES,
    ("V1EphemeralContainer", "image_pull_policy"): _PULL_POLICIES,
    ("V1Container", "termination_message_policy"): ["FallbackToLogsOnError", "File"],
    ("V1PodSpec", "restart_policy"): ["Always", "OnFailure", "Never"],
    ("V1PodSpec", "dns_policy"): ["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"],
    ("V1ContainerPort", "protocol"): _PROTOCOLS,
    ("V1ServicePort", "protocol"): _PROTOCOLS,
    ("CoreV1EndpointPort", "protocol"): _PROTOCOLS,
    ("DiscoveryV1EndpointPort", "protocol"): _PROTOCOLS,
    ("V1ServiceSpec", "type"): ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
    ("V1ServiceSpec", "session_affinity"): ["ClientIP", "None"],
    ("V1ServiceSpec", "external_traffic_policy"): _TRAFFIC_POLICIES,
    ("V1ServiceSpec", "internal_traffic_policy"): _TRAFFIC_POLICIES,
    ("V1ServiceSpec", "ip_family_policy"): ["PreferDualStack", "RequireDualStack", "SingleStack"],
    ("V1HTTPGetAction", "scheme"): ["HTTP", "HTTPS"],
    ("V1DeploymentStrategy", "type"): ["Recreate", "RollingUpdate"],
    ("V1DaemonSetUpdateStrategy", "type"): _UPDATE_STRATEGIES,
    ("V1StatefulSetUpdateStrategy", "type"): _UPDATE_STRATEGIES,
    ("V1StatefulSetSpec", "pod_management_policy"): ["OrderedReady", "Parallel"],
    ("V1HTTPIngressPath", "path_type"): ["Exact", "ImplementationSpecific", "Prefix"],
    ("V1JobSpec", "completion_mode"): ["Indexed", "NonIndexed"],
    ("V1CronJobSpec", "concurrency_policy"): ["Allow", "Forbid", "Replace"],
    ("V1EndpointSlice", "address_type"): ["FQDN", "IPv4", "IPv6"],
    ("V1CustomResourceDefinitionSpec", "scope"): ["Cluster", "Namespaced"],
}

# (model, python attribute) of resource.Quantity values (the models type them as strings).
QUANTITIES: frozenset[tuple[str, str]] = frozenset(
    {
        ("V1ResourceRequirements", "limits"),
        ("V1ResourceRequirements", "requests"),
        ("V1VolumeResourceRequirements", "limits"),
        ("V1VolumeResourceRequirements", "requests"),
        ("V1PodSpec", "overhead"),
        ("V1EmptyDirVolumeSource", "size_limit"),
        ("V1ContainerStatus", "allocated_resources"),
        ("V1PodStatus", "allocated_resources"),
        ("V1PersistentVolumeClaimStatus", "allocated_resources"),
        ("V1PersistentVolumeClaimStatus", "capacity"),
        ("V1NodeAllocatableMappedResources", "quantity"),
    }
)

_QUANTITY: Schema = {"oneOf": [{"type": "string"}, {"type": "number"}]}
_INT_OR_STRING: Schema = {"x-kubernetes-int-or-string": True}
_FREE_FORM: Schema = {"x-kubernetes-preserve-unknown-fields": True}
_SCALARS: dict[str, Schema] = {
    "str": {"type": "string"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "datetime": {"type": "string", "format": "date-time"},
    "date": {"type": "string", "format": "date"},
    "bytes": {"type": "string", "format": "byte"},
    "object": _FREE_FORM,
}
_LIST = re.compile(r"^List\[(.*)\]$")
_DICT = re.compile(r"^Dict\[str, (.*)\]$")


def builtin_schema(api_version: str, kind: str) -> Schema | None:
    """The structural schema of a built-in kind, or None when the kind is not built in."""
    model = KINDS.get((api_version, kind))
    return _root_schema(model) if model else None


@functools.cache
def object_meta_schema() -> Schema:
    """ObjectMeta, the schema every resource's `metadata` is checked against."""
    return _Builder().model("V1ObjectMeta", required=True)


@functools.cache
def _root_schema(model: str) -> Schema:
    builder = _Builder()
    schema = dict(builder.model(model, required=True, status_root=True))
    if builder.definitions:
        schema["definitions"] = dict(builder.definitions)
    return schema


class _Builder:
    """Turns generated model classes into schema dicts, one dict per (model, mode)."""

    def __init__(self) -> None:
        self.memo: dict[tuple[str, bool], Schema] = {}
        self.in_progress: set[tuple[str, bool]] = set()
        self.definitions: dict[str, Schema] = {}
        self.recursive: set[str] = set()

    def model(self, name: str, *, required: bool, status_root: bool = False) -> Schema:
        key = (name, required)
        if key in self.memo:
            return self.memo[key]
        definition = _definition_name(name, required)
        if key in self.in_progress:
            # Recursion (JSONSchemaProps): refer to the definition filled in below.
            self.recursive.add(definition)
            return {"$ref": f"#/definitions/{definition}"}
        self.in_progress.add(key)
        properties: dict[str, Schema] = {}
        required_names: list[str] = []
        for field in client_models.fields(name):
            in_status = status_root and field.json_name == "status"
            properties[field.json_name] = self.attribute(
                name, field, required=required and not in_status
            )
            if required and field.type_name != "bool" and field.required:
                required_names.append(field.json_name)
        schema: Schema = {"type": "object", "properties": properties,
                          GO_TYPE: go_type_name(name)}
        if required_names:
            schema["required"] = required_names
        self.in_progress.discard(key)
        self.memo[key] = schema
        if definition in self.recursive:
            self.definitions[definition] = schema
        return schema

    def attribute(self, model: str, field: client_models.Field, *, required: bool) -> Schema:
        if (model, field.attr) in QUANTITIES:
            return self._shape(field.type_name, lambda _: _QUANTITY, required=required)
        if field.type_name == "object" and field.int_or_string:
            return _INT_OR_STRING
        schema = self.type(field.type_name, required=required)
        enum = ENUMS.get((model, field.attr))
        return {**schema, "enum": enum} if enum else schema

    def type(self, type_name: str, *, required: bool) -> Schema:
        return self._shape(type_name, lambda leaf: self._leaf(leaf, required), required=required)

    def _shape(self, type_name: str, leaf: Any, *, required: bool) -> Schema:
        if match := _LIST.match(type_name):
            return {"type": "array", "items": self._shape(match[1], leaf, required=required)}
        if match := _DICT.match(type_name):
            return {
                "type": "object",
                "additionalProperties": self._shape(match[1], leaf, required=required),
            }
        return leaf(type_name)

    def _leaf(self, type_name: str, required: bool) -> Schema:
        if type_name in _SCALARS:
            return _SCALARS[type_name]
        return self.model(type_name, required=required)


def _definition_name(model: str, required: bool) -> str:
    return model if required else f"{model}.status"
