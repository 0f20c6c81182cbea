"""Istio's Telemetry API (`telemetry.istio.io/v1` Telemetry) and the mesh config's telemetry
settings, resolved per proxy into what its listeners do: trace sampling and the text access log.

Which Telemetry resources apply follows istiod (istio/istio pilot/pkg/model/telemetry.go,
`applicableTelemetries`): the oldest one without selector in the root namespace (mesh-wide), then
the oldest one without selector in the proxy's namespace, then every one in that namespace whose
`selector.matchLabels` match the pod, oldest first; later ones override earlier ones field by
field. `match.mode` picks the side: CLIENT is the sidecar's outbound listener (and a gateway's,
`workloadMode`), SERVER its inbound listeners.

- tracing: `randomSamplingPercentage` and `disableSpanReporting` are emulated. Without any
  Telemetry tracing, the mesh config decides (`enableTracing`, `defaultConfig.tracing.sampling`,
  PILOT_TRACE_SAMPLING's 1 %: see meshconfig.trace_sampling). Spans always go to the embedded
  Zipkin collector, whichever provider is named.
- accessLogging: `disabled` and `providers` are emulated for the text access log of
  `kubectl logs -c istio-proxy` (provider `envoy`, Istio's built-in file provider on stdout).
  Without a Telemetry entry that names `envoy` (itself or through the mesh config's
  `defaultProviders.accessLogging`), `meshConfig.accessLogFile` decides, as in istiod
  (`mergeLogs`: an entry naming no provider configures nothing). `filter.expression`
  is passed to Envoy's CEL access log filter, as istiod does.
- metrics: Istio's standard metrics are always reported; `metrics` (overrides, providers,
  reportingInterval) is not emulated and reported so (`telemetry_unsupported_fields`).

Istio's metrics here are computed from a JSON log line per request that every sidecar writes
regardless of these settings (xds/observability.py), so turning access logging off never stops
`istio_requests_total`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...kube_state import Obj
from ..meshconfig import access_log_enabled, trace_sampling, tracing_enabled
from ..state import MeshState

OUTBOUND, INBOUND = "outbound", "inbound"
# Telemetry `match.mode` -> the listener directions it covers (CLIENT_AND_SERVER when unset).
MODES = {"CLIENT": (OUTBOUND,), "SERVER": (INBOUND,), "CLIENT_AND_SERVER": (OUTBOUND, INBOUND)}
ENVOY_PROVIDER = "envoy"  # Istio's built-in file access log provider (/dev/stdout)
TARGET_REFS = ("targetRef", "targetRefs")
TRACING_FIELDS = {"match", "providers", "randomSamplingPercentage", "disableSpanReporting"}
ACCESS_LOG_FIELDS = {"match", "providers", "disabled", "filter"}


@dataclass(frozen=True)
class Side:
    """What one direction of a proxy does: trace sampling % (None: no tracing), the text access
    log on or off, and its CEL filter."""

    sampling: float | None
    access_log: bool
    log_filter: str | None = None


@dataclass(frozen=True)
class TelemetrySettings:
    """A proxy's telemetry, per listener direction (`outbound`, `inbound`)."""

    sides: dict[str, Side] = field(default_factory=dict)

    def side(self, direction: str) -> Side:
        return self.sides[direction]


def _age_key(obj: Obj) -> tuple[str, str]:
    meta = obj["metadata"]
    return (meta.get("creationTimestamp") or "", meta["name"])


def _match_labels(obj: Obj) -> dict[str, str]:
    return ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}


def applicable(state: MeshState, pod: Obj) -> list[Obj]:
    """The Telemetry resources for `pod`, least specific first (see the module docstring)."""
    namespace = pod["metadata"].get("namespace", "")
    labels = pod["metadata"].get("labels") or {}
    live = sorted((t for t in state.telemetries if not t["metadata"].get("deletionTimestamp")),
                  key=_age_key)

    def namespace_wide(ns: str) -> list[Obj]:
        found = [t for t in live if t["metadata"].get("namespace", "") == ns
                 and not _match_labels(t) and not any(k in (t.get("spec") or {})
                                                      for k in TARGET_REFS)]
        return found[:1]

    chosen = namespace_wide(state.root_namespace)
    if namespace != state.root_namespace:
        chosen += namespace_wide(namespace)
    chosen += [t for t in live if t["metadata"].get("namespace", "") == namespace
               and (selector := _match_labels(t))
               and all(labels.get(k) == v for k, v in selector.items())]
    return chosen


def _directions(entry: Obj) -> tuple[str, ...]:
    mode = (entry.get("match") or {}).get("mode") or "CLIENT_AND_SERVER"
    return MODES.get(str(mode), MODES["CLIENT_AND_SERVER"])


def telemetry_settings(state: MeshState, pod: Obj) -> TelemetrySettings:
    """Trace sampling and text access log of each direction of `pod`'s proxy."""
    mesh = state.mesh_config
    # Without Telemetry tracing, `enableTracing` decides; with it, only disableSpanReporting
    # (istiod's configureTracing: a Telemetry tracing config wins over the mesh flag).
    disabled = dict.fromkeys((OUTBOUND, INBOUND), not tracing_enabled(mesh))
    percent: dict[str, float | None] = dict.fromkeys((OUTBOUND, INBOUND))
    logging = dict.fromkeys((OUTBOUND, INBOUND), access_log_enabled(mesh))
    filters: dict[str, str | None] = dict.fromkeys((OUTBOUND, INBOUND))
    traced_by_telemetry: set[str] = set()
    for telemetry in applicable(state, pod):
        spec = telemetry.get("spec") or {}
        for entry in spec.get("tracing") or []:
            for direction in _directions(entry):
                if direction not in traced_by_telemetry:
                    traced_by_telemetry.add(direction)
                    disabled[direction] = False
                if entry.get("disableSpanReporting") is not None:
                    disabled[direction] = bool(entry["disableSpanReporting"])
                if entry.get("randomSamplingPercentage") is not None:
                    percent[direction] = min(100.0, max(
                        0.0, float(entry["randomSamplingPercentage"])))
        for entry in spec.get("accessLogging") or []:
            # An entry without providers means the mesh's default providers; with none of
            # those either it configures nothing and accessLogFile still decides (mergeLogs).
            providers = [p.get("name") for p in entry.get("providers") or []] or (
                (mesh.get("defaultProviders") or {}).get("accessLogging") or [])
            if ENVOY_PROVIDER not in providers:
                continue  # another provider: not the container log (reported as not emulated)
            for direction in _directions(entry):
                logging[direction] = entry.get("disabled") is not True
                filters[direction] = ((entry.get("filter") or {}).get("expression")
                                      if logging[direction] else None)
    sampling = {d: None if disabled[d] else percent[d] if percent[d] is not None
                else trace_sampling(mesh) for d in (OUTBOUND, INBOUND)}
    return TelemetrySettings({d: Side(sampling[d], logging[d], filters[d])
                              for d in (OUTBOUND, INBOUND)})


def telemetry_unsupported_fields(obj: Obj) -> list[str]:
    """Field paths of a Telemetry resource the embedded mesh does not emulate."""
    spec = obj.get("spec") or {}
    out = [f"spec.{key} (the resource applies to no sidecar)" for key in TARGET_REFS
           if spec.get(key)]
    if spec.get("metrics"):
        out.append("spec.metrics (Istio's standard metrics are always reported, unchanged)")
    for i, entry in enumerate(spec.get("tracing") or []):
        out += [f"spec.tracing[{i}].{key}" for key in sorted(entry or {})
                if key not in TRACING_FIELDS]
        if (entry or {}).get("providers"):
            out.append(f"spec.tracing[{i}].providers (spans always go to the embedded Zipkin "
                       "collector)")
    for i, entry in enumerate(spec.get("accessLogging") or []):
        out += [f"spec.accessLogging[{i}].{key}" for key in sorted(entry or {})
                if key not in ACCESS_LOG_FIELDS]
        out += [f"spec.accessLogging[{i}].providers[{j}] {p.get('name')!r} (only the "
                f"built-in {ENVOY_PROVIDER!r} provider, the proxy's stdout, is emulated)"
                for j, p in enumerate((entry or {}).get("providers") or [])
                if p.get("name") != ENVOY_PROVIDER]
    return out
