"""The Deployment side of a Canary (fluxcd/flagger v1.44.0 `pkg/canary/deployment_controller.go`,
`deployment_ready.go`, `util.go`): the `<target>-primary` copy, promotion, scaling, readiness.

ConfigMaps and Secrets the pod spec uses are tracked and copied by configs.py. Not emulated:
HPA/KEDA `autoscalerRef`, DaemonSet and Service targets.
"""

from __future__ import annotations

import copy
import datetime
import uuid
from typing import Any

from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.errors import ApiError

from . import spec
from .configs import ConfigError, ConfigRef, ConfigTracker
from .status import MANAGER, StatusWriter

Obj = dict[str, Any]
SELECTOR_LABELS = ("app", "name", "app.kubernetes.io/name")  # -selector-labels default
INCLUDE_LABEL_PREFIXES = ("",)  # -include-label-prefix default "": no label is copied
TOOLKIT_MARKER = "toolkit.fluxcd.io"
ID_ANNOTATION = "flagger-id"


class FlaggerError(Exception):
    """An error Flagger records as a Warning event; `retriable=False` makes it roll back."""

    def __init__(self, message: str, retriable: bool = True) -> None:
        super().__init__(message)
        self.retriable = retriable


def filter_metadata(values: dict[str, str] | None) -> dict[str, str]:
    """filterMetadata: labels or annotations without Flux's `toolkit.fluxcd.io` keys."""
    return {k: v for k, v in (values or {}).items() if TOOLKIT_MARKER not in k}


def _include_by_prefix(labels: dict[str, str] | None) -> dict[str, str]:
    return {k: v for k, v in filter_metadata(labels).items()
            if any(p == "*" or (p and k.startswith(p)) for p in INCLUDE_LABEL_PREFIXES)}


def _primary_labels(labels: dict[str, str] | None, value: str, label: str) -> dict[str, str]:
    """makePrimaryLabels."""
    result = {k: v for k, v in filter_metadata(labels).items() if k != label}
    result[label] = value
    return result


def _pod_annotations(annotations: dict[str, str] | None) -> dict[str, str]:
    """makeAnnotations: a fresh `flagger-id`, so every promotion rolls the primary's pods."""
    result = {k: v for k, v in filter_metadata(annotations).items() if k != ID_ANNOTATION}
    result[ID_ANNOTATION] = str(uuid.uuid4())
    return result


def owner_reference(cd: Obj) -> Obj:
    """metav1.NewControllerRef(canary, flagger.app/v1beta1 Canary)."""
    return {"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "name": cd["metadata"]["name"], "uid": cd["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": True}


class DeploymentTarget:
    """canary.DeploymentController over the embedded API."""

    def __init__(self, api: ObjectApi, status: StatusWriter) -> None:
        self.api = api
        rt = api.registry.lookup("apps", "v1", "deployments")
        assert rt is not None
        self.deployments = rt
        self.status = status
        self.configs = ConfigTracker(api)

    def get(self, namespace: str, name: str) -> Obj:
        dep = self.api.find(self.deployments, namespace, name)
        if dep is None:
            raise FlaggerError(f"deployment {name}.{namespace} get query error: "
                               f'deployments.apps "{name}" not found')
        return dep

    def target(self, cd: Obj) -> Obj:
        return self.get(cd["metadata"]["namespace"], spec.target_name(cd))

    def primary(self, cd: Obj) -> Obj:
        return self.get(cd["metadata"]["namespace"], f"{spec.target_name(cd)}-primary")

    @staticmethod
    def selector_label(dep: Obj) -> tuple[str, str]:
        """getSelectorLabel: the first of the selector labels the target's selector has."""
        match = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        for label in SELECTOR_LABELS:
            if label in match:
                return label, str(match[label])
        meta = dep["metadata"]
        raise FlaggerError(f"deployment {meta['name']}.{meta['namespace']} spec.selector."
                           f"matchLabels must contain one of [{' '.join(SELECTOR_LABELS)}]")

    def metadata(self, cd: Obj) -> tuple[str, str, dict[str, int]]:
        """GetMetadata: (selector label, its value, the ports `service.portDiscovery` adds)."""
        target = self.target(cd)
        try:
            label, value = self.selector_label(target)
        except FlaggerError as err:
            raise FlaggerError(f"getSelectorLabel failed: {err}") from None
        service = cd["spec"].get("service") or {}
        ports = _discovered_ports(service, target["spec"]["template"].get("spec") or {}) \
            if service.get("portDiscovery") else {}
        return label, value, ports

    def _configs(self, cd: Obj, target: Obj) -> dict[str, ConfigRef]:
        try:
            return self.configs.target_configs(target["spec"]["template"].get("spec") or {},
                                               cd["metadata"]["namespace"])
        except ConfigError as err:
            raise FlaggerError(f"GetTargetConfigs failed: {err}") from None

    def _primary_pod_spec(self, cd: Obj, target: Obj) -> Obj:
        """The target's pod spec using `-primary` copies of its configs (written first)."""
        refs = self._configs(cd, target)
        try:
            self.configs.create_primary_configs(cd, refs, owner_reference(cd))
        except ConfigError as err:
            raise FlaggerError(f"CreatePrimaryConfigs failed: {err}") from None
        return self.configs.apply_primary_configs(
            target["spec"]["template"].get("spec") or {}, refs)

    def sync_status(self, cd: Obj, phase: str, *, canary_weight: int = 0,
                    failed_checks: int = 0, iterations: int = 0) -> None:
        """SyncStatus: the status with the target template's hash and tracked configs."""
        target = self.target(cd)
        try:
            tracked = {k: r.checksum for k, r in self._configs(cd, target).items()}
        except FlaggerError as err:
            raise FlaggerError(f"GetConfigRefs failed: {err}") from None
        self.status.sync(cd, phase, spec.compute_hash(target["spec"]["template"]), tracked,
                         canary_weight=canary_weight, failed_checks=failed_checks,
                         iterations=iterations)

    def have_dependencies_changed(self, cd: Obj) -> bool:
        """HaveDependenciesChanged: a tracked ConfigMap/Secret added, removed or changed."""
        refs = self._configs(cd, self.target(cd))
        return self.configs.changed(refs, (cd.get("status") or {}).get("trackedConfigs"))

    def initialize(self, cd: Obj) -> None:
        """Initialize: create the primary if missing; while initializing, wait for it."""
        try:
            self._create_primary(cd)
        except FlaggerError as err:
            raise FlaggerError(f"createPrimaryDeployment failed: {err}") from None
        phase = (cd.get("status") or {}).get("phase", "")
        if phase in ("", "Initializing") and not spec.skip_analysis(cd):
            self.is_primary_ready(cd)

    def _create_primary(self, cd: Obj) -> None:
        namespace = cd["metadata"]["namespace"]
        primary_name = f"{spec.target_name(cd)}-primary"
        if self.api.find(self.deployments, namespace, primary_name) is not None:
            return
        target = self.target(cd)
        label, value = self.selector_label(target)
        primary_value = f"{value}-primary"
        source = target["spec"]
        template = source["template"]
        replicas = int(source.get("replicas") or 0) or 1
        body: Obj = {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": primary_name, "namespace": namespace,
                         "labels": _primary_labels(_include_by_prefix(
                             target["metadata"].get("labels")), primary_value, label),
                         "annotations": filter_metadata(
                             target["metadata"].get("annotations")),
                         "ownerReferences": [owner_reference(cd)]},
            "spec": {"replicas": replicas,
                     "selector": {"matchLabels": {label: primary_value}},
                     "template": {"metadata": {
                         "labels": _primary_labels((template.get("metadata") or {}).get(
                             "labels"), primary_value, label),
                         "annotations": _pod_annotations((template.get("metadata") or {}).get(
                             "annotations"))},
                         "spec": self._primary_pod_spec(cd, target)}},
        }
        for field in ("progressDeadlineSeconds", "minReadySeconds", "revisionHistoryLimit",
                      "strategy"):
            if field in source:
                body["spec"][field] = copy.deepcopy(source[field])
        try:
            self.api.create(self.deployments, namespace, body, manager=MANAGER)
        except ApiError as err:
            raise FlaggerError(f"creating deployment {primary_name}.{namespace} failed: "
                               f"{err.message}") from None

    def promote(self, cd: Obj) -> None:
        """Promote: the target's pod spec, strategy and replicas onto the primary."""
        namespace = cd["metadata"]["namespace"]
        target = self.target(cd)
        label, value = self.selector_label(target)
        primary_value = f"{value}-primary"
        primary = self.primary(cd)
        source, template = target["spec"], target["spec"]["template"]
        new = copy.deepcopy(primary)
        for field in ("progressDeadlineSeconds", "minReadySeconds", "revisionHistoryLimit",
                      "strategy", "replicas"):
            if field in source:
                new["spec"][field] = copy.deepcopy(source[field])
            else:
                new["spec"].pop(field, None)
        new["spec"]["template"] = {
            "metadata": {"labels": _primary_labels((template.get("metadata") or {}).get(
                "labels"), primary_value, label),
                "annotations": _pod_annotations((template.get("metadata") or {}).get(
                    "annotations"))},
            "spec": self._primary_pod_spec(cd, target)}
        new["metadata"]["annotations"] = _include_by_prefix(
            target["metadata"].get("annotations"))
        new["metadata"]["labels"] = _primary_labels(
            _include_by_prefix(target["metadata"].get("labels")), primary_value, label)
        try:
            self.api.update(self.deployments, namespace, new["metadata"]["name"], new,
                            manager=MANAGER)
        except ApiError as err:
            raise FlaggerError(f"updating deployment {new['metadata']['name']}.{namespace} "
                               f"template spec failed: {err.message}") from None

    def has_target_changed(self, cd: Obj) -> bool:
        """hasSpecChanged: a template hash that is neither applied nor (a manual rollback)
        the promoted one."""
        status = cd.get("status") or {}
        if not status.get("lastAppliedSpec"):
            return True
        new_hash = spec.compute_hash(self.target(cd)["spec"]["template"])
        if status.get("lastPromotedSpec") == new_hash:
            return False
        return bool(status.get("lastAppliedSpec") != new_hash)

    def _scale(self, cd: Obj, replicas: int, failure: str) -> None:
        dep = self.target(cd)
        meta = dep["metadata"]
        try:
            self.api.patch(self.deployments, meta["namespace"], meta["name"],
                           "application/merge-patch+json",
                           f'{{"spec":{{"replicas": {replicas}}}}}'.encode(),
                           field_manager=MANAGER)
        except ApiError as err:
            raise FlaggerError(f"{failure}: {err.message}") from None

    def scale_to_zero(self, cd: Obj) -> None:
        ns = cd["metadata"]["namespace"]
        self._scale(cd, 0, f"deployment {spec.target_name(cd)}.{ns} patch query error")

    def scale_from_zero(self, cd: Obj) -> None:
        """ScaleFromZero: the target's replicas if set, else the primary's, else 1."""
        dep = self.target(cd)
        replicas = int(dep["spec"].get("replicas") or 0)
        if replicas <= 0:
            replicas = int(self.primary(cd)["spec"].get("replicas") or 0) or 1
        ns = cd["metadata"]["namespace"]
        self._scale(cd, replicas, f"scaling up {spec.target_name(cd)}.{ns} to {replicas} "
                                  "failed")

    def is_primary_ready(self, cd: Obj) -> None:
        """IsPrimaryReady; raises FlaggerError (non-retriable when stuck)."""
        primary = self.primary(cd)
        name = f"{primary['metadata']['name']}.{cd['metadata']['namespace']}"
        try:
            _deployment_ready(primary, spec.progress_deadline(cd),
                              spec.ready_threshold(cd, "primary"))
        except FlaggerError as err:
            raise FlaggerError(f"{name} not ready: {err}", err.retriable) from None
        # (Upstream's "primary deployment is scaled to zero" check compares two pointers and
        # never fires; it is left out.)

    def is_canary_ready(self, cd: Obj) -> None:
        target = self.target(cd)
        try:
            _deployment_ready(target, spec.progress_deadline(cd),
                              spec.ready_threshold(cd, "canary"))
        except FlaggerError as err:
            raise FlaggerError(f"canary deployment {spec.target_key(cd)} not ready: {err}",
                               err.retriable) from None


SIDECAR_CONTAINERS = ("istio-proxy", "envoy")  # util.go `sidecars`, left out of discovery


def _discovered_ports(service: Obj, pod_spec: Obj) -> dict[str, int]:
    """getPorts: every container port but the service's own (its targetPort, or its port
    when no targetPort is set), named after the port or `tcp-<container>-<index>`."""
    target = service.get("targetPort")
    ports: dict[str, int] = {}
    for container in pod_spec.get("containers") or []:
        if container.get("name") in SIDECAR_CONTAINERS:
            continue
        for index, port in enumerate(container.get("ports") or []):
            number = int(port.get("containerPort", 0))
            if target in (None, 0, "0"):
                if number == int(service.get("port", 0)):
                    continue
            elif (isinstance(target, int) and number == target) or \
                    (isinstance(target, str) and port.get("name") == target):
                continue
            ports[port.get("name") or f"tcp-{container.get('name')}-{index}"] = number
    return ports


def _condition(status: Obj, kind: str) -> Obj | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)


def _deployment_ready(dep: Obj, deadline_s: int, ready_threshold: int) -> None:
    """isDeploymentReady, in upstream's order of checks."""
    status = dep.get("status") or {}
    if int(dep["metadata"].get("generation", 0)) > int(status.get("observedGeneration", 0)):
        raise FlaggerError("waiting for rollout to finish: observed deployment generation "
                           "less than desired generation")
    retriable = True
    progress = _condition(status, "Progressing")
    if progress is not None:
        available = _condition(status, "Available")
        if available is not None and available.get("status") == "False" and \
                available.get("reason") == "MinimumReplicasUnavailable":
            since = _parse_time(available.get("lastUpdateTime"))
            if since is not None:
                age = (datetime.datetime.now(datetime.UTC) - since).total_seconds()
                retriable = age <= deadline_s
    updated = int(status.get("updatedReplicas", 0))
    threshold_updated = int(updated * ready_threshold / 100)
    replicas = dep["spec"].get("replicas")
    if progress is not None and progress.get("reason") == "ProgressDeadlineExceeded":
        raise FlaggerError(f'deployment "{dep["metadata"]["name"]}" exceeded its progress '
                           "deadline", retriable=False)
    if replicas is not None and updated < int(replicas):
        raise FlaggerError(f"waiting for rollout to finish: {updated} out of {replicas} new "
                           "replicas have been updated", retriable)
    if int(status.get("replicas", 0)) > updated:
        raise FlaggerError(f"waiting for rollout to finish: "
                           f"{int(status.get('replicas', 0)) - updated} old replicas are "
                           "pending termination", retriable)
    if int(status.get("availableReplicas", 0)) < threshold_updated:
        raise FlaggerError(f"waiting for rollout to finish: "
                           f"{int(status.get('availableReplicas', 0))} of {threshold_updated} "
                           f"(readyThreshold {ready_threshold}%) updated replicas are "
                           "available", retriable)


def _parse_time(value: object) -> datetime.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
