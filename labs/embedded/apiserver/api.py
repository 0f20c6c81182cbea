"""The API server's semantics, independent of HTTP.

`ObjectApi` is what both the HTTP handlers and the in-process controllers and runtime call, so a
controller's write goes through the same validation, defaulting, resourceVersion checks and watch
events as a learner's `kubectl apply`.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from . import crd_types, decode, patch, validation
from .builtin_schemas import builtin_schema
from .defaults import apply_defaults
from .errors import (
    ApiError,
    FieldCause,
    already_exists,
    bad_request,
    conflict,
    invalid,
    not_found,
    unsupported_media_type,
)
from .objects import (
    DNS1123_LABEL,
    DNS1123_SUBDOMAIN,
    new_uid,
    now,
    random_suffix,
)
from .resources import ResourceRegistry, ResourceType
from .schema_defaults import apply_schema_defaults
from .selectors import field_matcher, label_matcher
from .service_addresses import ServiceAddresses
from .store import Store

Obj = dict[str, Any]

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH)
CRDS = "apiextensions.k8s.io/customresourcedefinitions"  # their storage key

# Field selectors each kind supports beyond metadata.name / metadata.namespace.
EXTRA_FIELD_LABELS: dict[str, frozenset[str]] = {
    "/pods": frozenset({"spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
                        "spec.serviceAccountName", "status.phase", "status.podIP"}),
    "/events": frozenset({"involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                          "involvedObject.uid", "involvedObject.apiVersion",
                          "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason",
                          "reportingComponent", "source", "type"}),
    "/secrets": frozenset({"type"}),
    "/namespaces": frozenset({"status.phase"}),
    "apps/replicasets": frozenset({"status.replicas"}),
}

# Names that must be DNS-1123 labels rather than subdomains.
LABEL_NAMED = {"/namespaces", "/services"}


@dataclass
class Result:
    """An object written, plus the warnings to send back (`Warning:` headers)."""

    object: Obj
    warnings: list[str] = field(default_factory=list)


def _spec_part(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _decode_patch_body(patch_type: str, body: bytes) -> Any:
    try:
        if patch_type == APPLY_PATCH:
            return yaml.safe_load(body.decode("utf-8"))
        return json.loads(body)
    except (ValueError, yaml.YAMLError) as exc:
        raise bad_request(f"error decoding patch: {exc}") from None


def scale_patch(scale: Obj, patch_type: str, body: bytes) -> Any:
    """Patch a `Scale` document; strategic merge and apply act as a merge on a Scale."""
    patch_type = patch_type.split(";")[0].strip()
    if patch_type not in PATCH_TYPES:
        raise unsupported_media_type(f"the patch content type {patch_type!r} is not supported "
                                     f"on scale: use one of {', '.join(PATCH_TYPES)}")
    document = _decode_patch_body(patch_type, body)
    if patch_type == JSON_PATCH:
        return patch.json_patch(scale, document)
    return patch.merge_patch(scale, document)


def merge_string_data(secret: Obj) -> None:
    """A Secret's `stringData` is write-only: kube-apiserver merges it into `data` (base64,
    overriding keys of the same name) and never stores or returns it."""
    string_data = secret.pop("stringData", None)
    if isinstance(string_data, dict) and string_data:
        data = secret.get("data") or {}
        data.update({key: base64.b64encode(str(value).encode()).decode()
                     for key, value in string_data.items()})
        secret["data"] = data


class ObjectApi:
    """Create, read, update, patch, delete and list objects with Kubernetes semantics."""

    def __init__(self, store: Store, registry: ResourceRegistry) -> None:
        self.store = store
        self.registry = registry
        self._service_addresses = ServiceAddresses(store.list("/services"))
        self.after_write: list[Callable[[ResourceType, str, Obj | None], None]] = []
        # Mutating admission on create (e.g. sidecar injection): may change the object or raise
        # an ApiError to reject it; runs before defaulting and schema validation.
        self.mutating_admission: list[Callable[[ResourceType, Obj], None]] = []
        # Validating webhooks (e.g. istiod's validation.istio.io): raise ApiError to refuse.
        self.validating_admission: list[Callable[[ResourceType, Obj], None]] = []
        # (group, plural, version) -> openAPIV3Schema, read from the CRD on first use: the
        # registry does not keep the decoded schemas (~2 MB for the course's CRDs, most of
        # which no lab writes a resource of)
        self._crd_schemas: dict[tuple[str, str, str], Obj | None] = {}
        for crd in store.list(CRDS):
            self._register_crd(crd)

    # -- reads -------------------------------------------------------------------------------
    def get(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        obj = self.store.get(rt.key, namespace if rt.namespaced else "", name)
        if obj is None:
            raise not_found(rt.plural, name, rt.group)
        return self._as_version(rt, obj)

    def find(self, rt: ResourceType, namespace: str, name: str) -> Obj | None:
        obj = self.store.get(rt.key, namespace if rt.namespaced else "", name)
        return self._as_version(rt, obj) if obj is not None else None

    def list(
        self,
        rt: ResourceType,
        namespace: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[Obj], str]:
        matches = self.matcher(rt, label_selector, field_selector)
        items = [
            self._as_version(rt, obj)
            for obj in self.store.list(rt.key, namespace if rt.namespaced else None)
            if matches(obj)
        ]
        return items, str(self.store.rv)

    def matcher(
        self, rt: ResourceType, label_selector: str | None, field_selector: str | None
    ) -> Callable[[Obj], bool]:
        labels = label_matcher(label_selector)
        supported = frozenset({"metadata.name", "metadata.namespace"}) | EXTRA_FIELD_LABELS.get(
            rt.key, frozenset()
        )
        fields = field_matcher(field_selector, supported)
        return lambda obj: labels(obj) and fields(obj)

    @staticmethod
    def _as_version(rt: ResourceType, obj: Obj) -> Obj:
        """Objects are stored once per group; a read names the version asked for (CRDs with
        several served versions use conversion strategy None, which does exactly this)."""
        obj["apiVersion"] = rt.api_version
        obj["kind"] = rt.kind
        return obj

    # -- create ------------------------------------------------------------------------------
    def create(
        self,
        rt: ResourceType,
        namespace: str,
        obj: Any,
        *,
        dry_run: bool = False,
        field_validation: str = "Strict",
        manager: str | None = None,
        validate: bool = True,
        packaged: bool = False,
    ) -> Result:
        """Create `obj`; `manager` (the client's fieldManager) is recorded in managedFields.

        `validate=False` skips the schema check, for objects the cluster itself ships (its
        namespaces, node, course CRDs), so starting a cluster needs no schema; `packaged=True`
        also skips decoding into the kind's type, for objects shipped in decoded form (the
        course CRDs: decoding them built the CRD schema, a fifth of a second of every first
        `meshlab up`).
        """
        obj = self._check_body(rt, obj, packaged=packaged)
        meta = obj["metadata"]
        namespace = self._namespace_for(rt, namespace, meta)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = f"{meta['generateName']}{random_suffix()}"
        name = meta.get("name", "")
        self._validate_name(rt, name)  # (before the hooks, so each may rely on a name)
        for admit in self.mutating_admission:
            admit(rt, obj)
        warnings = self._validate(rt, obj, field_validation) if validate else []
        meta = obj["metadata"]  # pruning of unknown fields may have replaced it
        if rt.namespaced:
            self._require_namespace_open(namespace)
        if self.store.get(rt.key, namespace, name) is not None:
            raise already_exists(rt.plural, name, rt.group)
        for key in ("resourceVersion", "uid", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(key, None)
        meta.update(uid=new_uid(), creationTimestamp=now())
        if "spec" in obj or rt.kind in ("Deployment", "ReplicaSet", "Pod", "Service"):
            meta["generation"] = 1
        if "status" in rt.subresources and rt.custom:
            obj.pop("status", None)
        if rt.kind in ("Deployment", "ReplicaSet"):
            obj.pop("status", None)
        apply_defaults(rt.group, rt.kind, obj)
        self._admit(rt, obj, None, dry_run)
        if manager:
            obj = patch.track_update(None, obj, manager, rt.api_version, rt.kind)
        if dry_run:
            obj["metadata"]["resourceVersion"] = str(self.store.rv)
            return Result(obj, warnings)
        stored = self.store.put(rt.key, obj)
        self._after_write(rt, stored["metadata"].get("namespace", ""), stored)
        return Result(self._as_version(rt, stored), warnings)

    def decode(self, rt: ResourceType, obj: Any, field_validation: str) -> Result:
        """`obj` decoded and checked against its schema without being written, for the kinds
        that are only ever answered (access reviews)."""
        obj = self._check_body(rt, obj)
        return Result(obj, self._validate(rt, obj, field_validation))

    def _check_body(self, rt: ResourceType, obj: Any, patch: tuple[str, Any] | None = None,
                    *, packaged: bool = False) -> Obj:
        """`obj` decoded into the kind's type, the first step of every write (`patch`: the
        patch type and document when `obj` is a patch's result, which words errors apart;
        `packaged`: only the type meta is checked)."""
        if not isinstance(obj, dict):
            raise bad_request(
                f"the body of a {rt.kind} must be a JSON/YAML object, got {type(obj).__name__}")
        obj = {k: copy.deepcopy(v) for k, v in obj.items()
               if not (v is None and k in ("apiVersion", "kind", "metadata"))}
        try:
            decode.check_type_meta(obj)
            self._check_kind(rt, obj)
            if packaged:
                obj.setdefault("metadata", {})
                obj["apiVersion"] = rt.api_version
                return obj
            return self._decoded(rt, obj, patch)
        except decode.DecodeError as err:
            if patch is None:
                raise decode.body_error(rt.kind, rt.api_version, err) from None
            raise decode.patch_error(obj, patch[1], patch[0] == STRATEGIC_MERGE_PATCH,
                                     err) from None

    def _decoded(self, rt: ResourceType, obj: Obj, patch: tuple[str, Any] | None) -> Obj:
        """Built-in kinds through the Go decoder's rules (raising `DecodeError`); custom
        resources without their non-nullable nulls."""
        schema = self._schema(rt)
        if schema is not None:
            if rt.custom:
                obj = decode.prune_nulls(schema, obj)
            else:
                obj = decode.decode_builtin(schema, obj, unstructured=(
                    patch is not None and patch[0] == STRATEGIC_MERGE_PATCH))
        if not isinstance(obj.setdefault("metadata", {}), dict):
            raise invalid(rt.kind, "", [FieldCause(
                "metadata", "FieldValueTypeInvalid",
                f"Invalid value: metadata must be an object, got "
                f"{type(obj['metadata']).__name__}")], rt.group)
        obj["apiVersion"] = rt.api_version
        return obj

    def _check_kind(self, rt: ResourceType, obj: Obj) -> None:
        # A missing apiVersion or kind is the URL's (runtime/serializer/json gvkWithDefaults).
        api_version = obj.setdefault("apiVersion", rt.api_version) or rt.api_version
        kind = obj["kind"] = obj.get("kind") or rt.kind
        if kind != rt.kind or (api_version != rt.api_version
                               and self.registry.by_kind(str(api_version), rt.kind) is None):
            raise bad_request(
                f"the API version in the data ({api_version}) and kind ({kind}) do not match the "
                f"resource {rt.qualified} ({rt.api_version} {rt.kind}) named by the URL")

    def _namespace_for(self, rt: ResourceType, namespace: str, meta: Obj) -> str:
        if not rt.namespaced:
            meta.pop("namespace", None)
            return ""
        body_ns = meta.get("namespace")
        if body_ns and namespace and body_ns != namespace:
            raise bad_request(
                f"the namespace of the provided object ({body_ns}) does not match the namespace "
                f"sent on the request ({namespace})")
        namespace = namespace or body_ns or "default"
        meta["namespace"] = namespace
        return namespace

    def _validate_name(self, rt: ResourceType, name: str) -> None:
        if not name:
            raise invalid(rt.kind, "", [FieldCause(
                "metadata.name", "FieldValueRequired",
                "Required value: name or generateName is required")], rt.group)
        pattern, what = (
            (DNS1123_LABEL, "RFC 1123 label") if rt.key in LABEL_NAMED
            else (DNS1123_SUBDOMAIN, "RFC 1123 subdomain"))
        if not pattern.match(name) or len(name) > (63 if rt.key in LABEL_NAMED else 253):
            raise invalid(rt.kind, name, [FieldCause(
                "metadata.name", "FieldValueInvalid",
                f'Invalid value: "{name}": a lowercase {what} must consist of lower case '
                "alphanumeric characters, '-' or '.', and must start and end with an "
                "alphanumeric character (e.g. 'my-name')")], rt.group)

    def _require_namespace_open(self, namespace: str) -> None:
        ns = self.store.get("/namespaces", "", namespace)
        if ns is None:
            raise not_found("namespaces", namespace)
        if ns.get("metadata", {}).get("deletionTimestamp"):
            raise ApiError(
                403, "Forbidden",
                f"unable to create new content in namespace {namespace} because it is being "
                "terminated", {"name": namespace, "kind": "namespaces"})

    def _schema(self, rt: ResourceType) -> dict | None:
        if rt.custom:
            return self._custom_schema(rt)
        return builtin_schema(rt.api_version, rt.kind)

    def _custom_schema(self, rt: ResourceType) -> Obj | None:
        key = (rt.group, rt.plural, rt.version)
        if key not in self._crd_schemas:
            crd = self.store.get(CRDS, "", f"{rt.plural}.{rt.group}") or {}
            version = next((v for v in (crd.get("spec") or {}).get("versions") or []
                            if v.get("name") == rt.version), {})
            self._crd_schemas[key] = (version.get("schema") or {}).get("openAPIV3Schema")
        return self._crd_schemas[key]

    def _validate(self, rt: ResourceType, obj: Obj, field_validation: str) -> list[str]:
        """Schema check: type errors are 422; unknown fields follow `fieldValidation`."""
        schema = self._schema(rt)
        if schema is None:
            return []
        mode = field_validation or "Strict"
        if mode not in ("Strict", "Warn", "Ignore"):
            raise bad_request(
                f'fieldValidation "{mode}" is not supported: use Strict, Warn or Ignore')
        if rt.custom:
            apply_schema_defaults(schema, obj)
        report = validation.check(schema, obj)
        issues = report.issues
        unknown = [i for i in issues if i.kind == "unknown"]
        others = [i for i in issues if i.kind != "unknown"]
        name = obj.get("metadata", {}).get("name", "") if isinstance(obj, dict) else ""
        if others:
            raise invalid(rt.kind, name, validation.to_causes(others), rt.group)
        if unknown and mode == "Strict":
            raise validation.strict_decoding_error(rt.api_version, rt.kind, unknown)
        if unknown:
            pruned = validation.prune_unknown(schema, obj)
            obj.clear()
            obj.update(pruned)
        warnings = validation.unknown_field_warnings(unknown) if mode == "Warn" else []
        return warnings + [f"the embedded cluster did not evaluate the validation rule at {rule}"
                           for rule in report.unevaluated]

    # -- update ------------------------------------------------------------------------------
    def update(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        obj: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        field_validation: str = "Strict",
        manager: str | None = None,
        validate: bool = True,
        packaged: bool = False,
    ) -> Result:
        """Replace the object (PUT); `validate` and `packaged` as for `create`."""
        namespace = namespace if rt.namespaced else ""
        obj = self._check_body(rt, obj, packaged=packaged)
        meta = obj.setdefault("metadata", {})
        if meta.get("name") not in (None, name):
            raise bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the "
                f"URL ({name})")
        meta["name"] = name
        if rt.namespaced:
            meta["namespace"] = self._namespace_for(rt, namespace, meta)
        old = self.store.get(rt.key, namespace, name)
        if old is None:
            if subresource:
                raise not_found(rt.plural, name, rt.group)
            # PUT on a missing object creates it, as kube-apiserver allows for most kinds.
            return self.create(rt, namespace, obj, dry_run=dry_run,
                               field_validation=field_validation, manager=manager,
                               validate=validate, packaged=packaged)
        sent_rv = meta.get("resourceVersion")
        if sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
            raise conflict(rt.plural, name, "the object has been modified; please apply your "
                           "changes to the latest version and try again", rt.group)
        warnings = self._validate(rt, obj, field_validation) if validate else []
        new = self._merge_update(rt, old, obj, subresource)
        if manager:
            new = patch.track_update(old, new, manager, rt.api_version, rt.kind,
                                     subresource or "")
        if new == old:
            return Result(self._as_version(rt, old), warnings)
        self._admit(rt, new, old, dry_run)
        if dry_run:
            return Result(new, warnings)
        return Result(self._write(rt, new), warnings)

    def _merge_update(self, rt: ResourceType, old: Obj, obj: Obj, subresource: str | None) -> Obj:
        if subresource == "status":
            new = copy.deepcopy(old)
            if "status" in obj:
                new["status"] = obj["status"]
            else:
                new.pop("status", None)
            return new
        new = obj
        meta, old_meta = new["metadata"], old["metadata"]
        if "managedFields" not in meta and "managedFields" in old_meta:
            meta["managedFields"] = old_meta["managedFields"]
        for key in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                    "generation", "resourceVersion"):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        if meta.get("deletionTimestamp") and len(meta.get("finalizers") or []) > len(
                old_meta.get("finalizers") or []):
            raise ApiError(422, "Invalid", f"{rt.kind} \"{meta['name']}\" is being deleted: no "
                           "new finalizers can be added")
        if "status" in rt.subresources or rt.kind in ("Deployment", "ReplicaSet"):
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        apply_defaults(rt.group, rt.kind, new)
        if rt.key == "/services":
            new.setdefault("spec", {}).setdefault(
                "clusterIP", old.get("spec", {}).get("clusterIP"))
        if _spec_part(new) != _spec_part(old) and "generation" in old_meta:
            meta["generation"] = int(old_meta["generation"]) + 1
        return new

    def _write(self, rt: ResourceType, obj: Obj) -> Obj:
        """Store an update; an object being deleted goes once its last finalizer is gone."""
        meta = obj["metadata"]
        namespace = meta.get("namespace", "")
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and rt.key not in (
                "/namespaces", "/pods"):
            removed = self.store.remove(rt.key, namespace, meta["name"]) or obj
            self._after_write(rt, namespace, None, removed)
            return self._as_version(rt, removed)
        stored = self.store.put(rt.key, obj)
        self._after_write(rt, namespace, stored)
        return self._as_version(rt, stored)

    # -- patch -------------------------------------------------------------------------------
    def patch(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        patch_type: str,
        body: bytes,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        field_validation: str = "Strict",
        field_manager: str | None = None,
        force: bool = False,
    ) -> Result:
        patch_type = patch_type.split(";")[0].strip()
        if patch_type not in PATCH_TYPES:
            raise unsupported_media_type(
                f"the patch content type {patch_type!r} is not supported: use one of "
                f"{', '.join(PATCH_TYPES)}")
        if patch_type == STRATEGIC_MERGE_PATCH and (
                rt.custom or not patch.supports_strategic_merge(rt.api_version, rt.kind)):
            raise unsupported_media_type(
                f"the body of the request was in an unknown format - accepted media types "
                f"include: {JSON_PATCH}, {MERGE_PATCH}, {APPLY_PATCH} (strategic merge patch "
                f"is not supported for {rt.kind}; use --type merge)")
        document = _decode_patch_body(patch_type, body)
        namespace = namespace if rt.namespaced else ""
        current = self.store.get(rt.key, namespace, name)
        if patch_type == APPLY_PATCH:
            if not field_manager:
                raise bad_request("PATCH requests of type apply need a fieldManager query "
                                  "parameter (kubectl sets it; e.g. ?fieldManager=kubectl)")
            if not isinstance(document, dict):
                raise bad_request("an apply patch must be a YAML/JSON object")
            self._check_body(rt, document)  # typed before merging, as the real field manager
            if current is not None:
                current = self._as_version(rt, current)
            applied = patch.server_side_apply(current, document, field_manager, force,
                                              rt.api_version, rt.kind)
            if current is None:
                return self.create(rt, namespace, applied, dry_run=dry_run,
                                   field_validation=field_validation)
            applied.get("metadata", {}).pop("resourceVersion", None)
            return self.update(rt, namespace, name, applied, subresource=subresource,
                               dry_run=dry_run, field_validation=field_validation)
        if current is None:
            raise not_found(rt.plural, name, rt.group)
        current = self._as_version(rt, current)
        if patch_type == JSON_PATCH:
            patched = patch.json_patch(current, document)
        elif patch_type == MERGE_PATCH:
            patched = patch.merge_patch(current, document)
        else:
            if not isinstance(document, dict):
                raise bad_request("a strategic merge patch must be a JSON object")
            patched = patch.strategic_merge_patch(current, document, rt.api_version, rt.kind)
        if not isinstance(patched, dict):
            raise bad_request("the patch replaced the whole object with a non-object value")
        patched = self._check_body(rt, patched, (patch_type, document))
        sent_meta = document.get("metadata") if isinstance(document, dict) else None
        if not (isinstance(sent_meta, dict) and sent_meta.get("resourceVersion")):
            patched["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        return self.update(rt, namespace, name, patched, subresource=subresource,
                           dry_run=dry_run, field_validation=field_validation,
                           manager=field_manager)

    # -- delete ------------------------------------------------------------------------------
    def delete(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        *,
        propagation: str | None = None,
        grace_period: int | None = None,
        precondition_uid: str | None = None,
        precondition_rv: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        namespace = namespace if rt.namespaced else ""
        obj = self.store.get(rt.key, namespace, name)
        if obj is None:
            raise not_found(rt.plural, name, rt.group)
        meta = obj["metadata"]
        if precondition_uid and precondition_uid != meta.get("uid"):
            raise conflict(rt.plural, name, f"Precondition failed: UID in precondition: "
                           f"{precondition_uid}, UID in object meta: {meta.get('uid')}", rt.group)
        if precondition_rv and precondition_rv != meta.get("resourceVersion"):
            raise conflict(rt.plural, name, "Precondition failed: ResourceVersion in "
                           f"precondition: {precondition_rv}, ResourceVersion in object meta: "
                           f"{meta.get('resourceVersion')}", rt.group)
        if propagation not in (None, "", "Orphan", "Background", "Foreground"):
            raise bad_request(f'propagationPolicy "{propagation}" is not one of Orphan, '
                              "Background, Foreground")
        if dry_run:
            return self._as_version(rt, obj)
        if propagation == "Orphan":
            self._orphan_dependents(meta["uid"])
        elif propagation == "Foreground":
            for dep_rt, dep in self.dependents(meta["uid"]):
                dep_meta = dep["metadata"]
                self.delete(dep_rt, dep_meta.get("namespace", ""), dep_meta["name"],
                            propagation="Foreground", grace_period=grace_period)
        if self._needs_graceful_delete(rt, obj, grace_period):
            if not meta.get("deletionTimestamp"):
                meta["deletionTimestamp"] = now()
                meta["deletionGracePeriodSeconds"] = (
                    grace_period if grace_period is not None
                    else obj.get("spec", {}).get("terminationGracePeriodSeconds", 30)
                    if rt.key == "/pods" else 0)
                if rt.key == "/namespaces":
                    obj.setdefault("status", {})["phase"] = "Terminating"
                return self._as_version(rt, self.store.put(rt.key, obj))
            return self._as_version(rt, obj)
        removed = self.store.remove(rt.key, namespace, name) or obj
        self._after_write(rt, namespace, None, removed)
        return self._as_version(rt, removed)

    def _needs_graceful_delete(self, rt: ResourceType, obj: Obj, grace_period: int | None) -> bool:
        meta = obj["metadata"]
        if meta.get("finalizers"):
            return True
        if rt.key == "/namespaces":
            return True  # the namespace controller empties it, then removes it
        if rt.key == "/pods":
            running = obj.get("spec", {}).get("nodeName") and obj.get("status", {}).get(
                "phase") not in ("Succeeded", "Failed", "Pending")
            return bool(running) and grace_period != 0
        return False

    def finalize_namespace(self, name: str) -> None:
        """Remove a namespace whose contents are gone (called by the namespace controller)."""
        rt = self.registry.lookup("", "v1", "namespaces")
        assert rt is not None
        removed = self.store.remove(rt.key, "", name)
        if removed is not None:
            self._after_write(rt, "", None, removed)

    def dependents(self, owner_uid: str) -> list[tuple[ResourceType, Obj]]:
        """Objects with an ownerReference to `owner_uid`, any kind."""
        found = []
        for key in self.store.resource_keys():
            rt = self.registry.by_key(key)
            if rt is None:
                continue
            for obj in self.store.list(key):
                refs = obj["metadata"].get("ownerReferences") or []
                if any(ref.get("uid") == owner_uid for ref in refs):
                    found.append((rt, obj))
        return found

    def _orphan_dependents(self, owner_uid: str) -> None:
        for rt, dep in self.dependents(owner_uid):
            refs = [r for r in dep["metadata"].get("ownerReferences") or []
                    if r.get("uid") != owner_uid]
            dep["metadata"]["ownerReferences"] = refs
            if not refs:
                del dep["metadata"]["ownerReferences"]
            self._write(rt, dep)

    # -- admission & hooks -------------------------------------------------------------------
    def _admit(self, rt: ResourceType, obj: Obj, old: Obj | None, dry_run: bool) -> None:
        """Kind-specific checks and allocations a real API server does on write."""
        if rt.key == "/services":
            self._service_addresses.admit(obj, old, commit=not dry_run)
        if rt.key == "/secrets":
            merge_string_data(obj)
        if rt.key == CRDS:
            crd_types.check_crd(obj)
        for validate in self.validating_admission:
            validate(rt, obj)

    def _after_write(self, rt: ResourceType, namespace: str, obj: Obj | None,
                     removed: Obj | None = None) -> None:
        if rt.key == CRDS:
            if obj is not None:
                self._register_crd(obj)
            elif removed is not None:
                self._unregister_crd(removed)
        if rt.key == "/services" and removed is not None:
            self._service_addresses.release(removed)
        for hook in self.after_write:
            hook(rt, namespace, obj)

    def _register_crd(self, crd: Obj) -> None:
        self._forget_schemas(crd)
        for rt in crd_types.resource_types(crd):
            self.registry.add(rt)
        status = crd_types.established_status(crd)
        if crd.get("status") != status:
            crd["status"] = status
            self.store.put(CRDS, crd)

    def _forget_schemas(self, crd: Obj) -> None:
        spec = crd.get("spec", {})
        group, plural = spec.get("group", ""), spec.get("names", {}).get("plural", "")
        for key in [k for k in self._crd_schemas if k[:2] == (group, plural)]:
            del self._crd_schemas[key]

    def _unregister_crd(self, crd: Obj) -> None:
        self._forget_schemas(crd)
        spec = crd.get("spec", {})
        group, plural = spec.get("group", ""), spec.get("names", {}).get("plural", "")
        self.registry.remove_group_resource(group, plural)
        self.store.drop_resource(f"{group}/{plural}")

    # -- events ------------------------------------------------------------------------------
    def record_event(self, involved: Obj, event_type: str, reason: str, message: str,
                     component: str = "meshlab") -> None:
        """Write a core/v1 Event about `involved`, as controllers do (shown by describe)."""
        meta = involved.get("metadata", {})
        namespace = meta.get("namespace") or "default"
        rt = self.registry.lookup("", "v1", "events")
        assert rt is not None
        if self.store.get("/namespaces", "", namespace) is None:
            return
        stamp = now()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta.get('name', 'object')}.{time.time_ns():x}",
                         "namespace": namespace},
            "involvedObject": {"apiVersion": involved.get("apiVersion"),
                               "kind": involved.get("kind"), "name": meta.get("name"),
                               "namespace": meta.get("namespace"), "uid": meta.get("uid"),
                               "resourceVersion": meta.get("resourceVersion")},
            "reason": reason,
            "message": message,
            "type": event_type,
            "source": {"component": component},
            "reportingComponent": component,
            "reportingInstance": component,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "action": reason,
        }
        # An event about an object in a namespace being deleted is not worth failing for.
        with contextlib.suppress(ApiError):
            self.create(rt, namespace, event, field_validation="Ignore")
