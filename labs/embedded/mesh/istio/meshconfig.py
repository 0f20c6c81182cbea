"""Istio's mesh config: ConfigMap `istio` in `istio-system`, key `mesh` (YAML), where istiod reads
it and where Istio's tasks edit it (`kubectl edit configmap istio -n istio-system`).

The embedded mesh reads from it `extensionProviders` (the ext-authz providers that CUSTOM
AuthorizationPolicies name), the trace sampling percentage (`defaultConfig.tracing.sampling`),
`enableTracing` and the access log (`accessLogFile`, `defaultProviders.accessLogging`); the
Telemetry API (xds/telemetry_api.py) overrides the last two per namespace and workload. The
ConfigMap is created with the course's installation's content when it is missing, so the tasks'
`kubectl edit` works as on a real installation.
"""

from __future__ import annotations

import copy
import functools
import logging
from typing import Any

import yaml

from ...apiserver.api import ObjectApi
from ...apiserver.errors import ApiError

log = logging.getLogger(__name__)
Obj = dict[str, Any]
MESH_CONFIGMAP = ("istio-system", "istio")
MESH_KEY = "mesh"
# What `istioctl install` (default profile) writes into the `mesh` key, plus `accessLogFile`:
# the default profile leaves it empty (no access log; istio/istio pkg/config/mesh/mesh.go,
# DefaultMeshConfig), the course installs Istio as Istio's "Envoy Access Logs" task does
# (`istioctl install --set meshConfig.accessLogFile=/dev/stdout`) because its labs read
# `kubectl logs <pod> -c istio-proxy`.
DEFAULT_MESH = """\
accessLogFile: /dev/stdout
defaultConfig:
  discoveryAddress: istiod.istio-system.svc:15012
defaultProviders:
  metrics:
  - prometheus
enablePrometheusMerge: true
rootNamespace: istio-system
trustDomain: cluster.local
"""


# DEFAULT_MESH as meshlab wrote it before the access log became a mesh-config setting (then
# always on): a cluster still holding it is upgraded to DEFAULT_MESH, so its access log stays.
# A mesh config the learner edited is never rewritten.
EARLIER_DEFAULT_MESHES = (DEFAULT_MESH.replace("accessLogFile: /dev/stdout\n", ""),)


def default_mesh_config() -> Obj:
    """The mesh config of a fresh installation (`DEFAULT_MESH`), parsed."""
    return dict(yaml.safe_load(DEFAULT_MESH))


@functools.lru_cache(maxsize=4)
def _load_yaml(text: str) -> Any:
    """Parsed once per text: every control-plane pass reads the mesh config, and parsing it
    each time was a sixth of a pass while Bookinfo was being applied."""
    return yaml.safe_load(text)


def parse_mesh_config(configmap: Obj | None) -> tuple[Obj, str | None]:
    """(mesh config, error): the parsed `mesh` key (the installation's default while the
    ConfigMap does not exist yet); an empty config and a message saying what to fix when it is
    not a YAML mapping."""
    if configmap is None:
        return default_mesh_config(), None
    text = (configmap.get("data") or {}).get(MESH_KEY) or ""
    try:
        mesh = copy.deepcopy(_load_yaml(text)) or {}
    except yaml.YAMLError as err:
        return {}, (f"ConfigMap istio-system/istio key `mesh` is not valid YAML ({err}); fix it "
                    "with `kubectl edit configmap istio -n istio-system`")
    if not isinstance(mesh, dict):
        return {}, ("ConfigMap istio-system/istio key `mesh` must be a YAML mapping (e.g. "
                    "`extensionProviders: [...]`); fix it with `kubectl edit configmap istio "
                    "-n istio-system`")
    return mesh, None


# The sampling percentage istiod uses when the mesh config sets none: PILOT_TRACE_SAMPLING's
# default (istio/istio pilot/pkg/features/telemetry.go).
DEFAULT_TRACE_SAMPLING = 1.0


def trace_sampling(mesh: Obj) -> float:
    """The mesh-wide random sampling percentage, as istiod's proxyConfigSamplingValue
    (pilot/pkg/networking/core/tracing.go): `defaultConfig.tracing.sampling` when set and not 0,
    with a value above 100 read as 1; else PILOT_TRACE_SAMPLING's default, 1 %."""
    tracing = ((mesh.get("defaultConfig") or {}).get("tracing") or {})
    try:
        sampling = float(tracing.get("sampling") or 0.0)
    except (TypeError, ValueError):
        return DEFAULT_TRACE_SAMPLING
    if sampling == 0.0:
        return DEFAULT_TRACE_SAMPLING
    return DEFAULT_TRACE_SAMPLING if sampling > 100.0 or sampling < 0.0 else sampling


def tracing_enabled(mesh: Obj) -> bool:
    """`enableTracing`, true unless set false (pkg/config/mesh/mesh.go, DefaultMeshConfig)."""
    return mesh.get("enableTracing") is not False


def access_log_enabled(mesh: Obj) -> bool:
    """Whether sidecars write the text access log before any Telemetry resource says otherwise:
    `accessLogFile` set, or default access-log providers named (`defaultProviders`)."""
    providers = (mesh.get("defaultProviders") or {}).get("accessLogging") or []
    return bool(mesh.get("accessLogFile")) or bool(providers)


def extension_providers(mesh: Obj) -> dict[str, Obj]:
    """`extensionProviders` by name (the first of a duplicated name wins, as istiod keeps one)."""
    providers: dict[str, Obj] = {}
    for item in mesh.get("extensionProviders") or []:
        if isinstance(item, dict) and item.get("name") and item["name"] not in providers:
            providers[str(item["name"])] = item
    return providers


def ensure_mesh_configmap(api: ObjectApi) -> bool:
    """Create ConfigMap istio-system/istio with Istio's default mesh config when it is missing
    (and istio-system exists); True when it was created."""
    rt = api.registry.lookup("", "v1", "configmaps")
    ns_rt = api.registry.lookup("", "v1", "namespaces")
    assert rt is not None and ns_rt is not None
    namespace, name = MESH_CONFIGMAP
    if api.find(ns_rt, "", namespace) is None or api.find(rt, namespace, name) is not None:
        return False
    body = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app": "istiod", "release": "istio"}},
            "data": {MESH_KEY: DEFAULT_MESH}}
    try:
        api.create(rt, namespace, body, validate=False)
    except ApiError as err:  # created meanwhile, or istio-system is terminating
        log.debug("mesh config not created: %s", err.message)
        return False
    return True


def upgrade_earlier_default(api: ObjectApi) -> bool:
    """At start-up only (a learner may later write that same text on purpose): a mesh config
    an earlier meshlab wrote and nobody edited becomes today's default; True when it did."""
    rt = api.registry.lookup("", "v1", "configmaps")
    assert rt is not None
    namespace, name = MESH_CONFIGMAP
    existing = api.find(rt, namespace, name)
    if existing is None or (existing.get("data") or {}).get(MESH_KEY) not in (
            EARLIER_DEFAULT_MESHES):
        return False
    try:
        api.update(rt, namespace, name,
                   {**existing, "data": {**existing["data"], MESH_KEY: DEFAULT_MESH}})
    except ApiError as err:  # changed meanwhile: the newer content wins
        log.debug("mesh config not upgraded: %s", err.message)
        return False
    return True
