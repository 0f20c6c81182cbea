"""Reading a `flagger.app/v1beta1` Canary as Flagger's accessors do (fluxcd/flagger v1.44.0
`pkg/apis/flagger/v1beta1/canary.go`): defaults, the clamped analysis interval, the step
weights (`pkg/controller/scheduler.go` maxWeight/nextStepWeight) and the spec hash.

A Canary is kept as the API server's dict; these functions are the one place its defaults live.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from labs.duration import parse_go_duration

Obj = dict[str, Any]

ANALYSIS_INTERVAL_S = 60.0  # AnalysisInterval
MIN_ANALYSIS_INTERVAL_S = 10.0  # GetAnalysisInterval clamps anything shorter
PROGRESS_DEADLINE_S = 600  # ProgressDeadlineSeconds
METRIC_INTERVAL = "1m"  # MetricInterval
READY_THRESHOLD = 100  # PrimaryReadyThreshold / CanaryReadyThreshold
TOTAL_WEIGHT = 100
# Test-only knob: a Canary annotated with this (a Go duration, e.g. "2s") ticks at that interval
# even below Flagger's 10 s floor. Off unless the annotation is set; no lab or manifest sets it.
TEST_INTERVAL_ANNOTATION = "meshlab.dev/test-only-analysis-interval"

def analysis(cd: Obj) -> Obj:
    """`spec.analysis` (or the legacy `spec.canaryAnalysis`), {} when absent."""
    spec = cd.get("spec") or {}
    return spec.get("analysis") or spec.get("canaryAnalysis") or {}


def skip_analysis(cd: Obj) -> bool:
    spec = cd.get("spec") or {}
    if not spec.get("analysis") and not spec.get("canaryAnalysis"):
        return True
    return bool(spec.get("skipAnalysis"))


def analysis_interval(cd: Obj) -> float:
    """GetAnalysisInterval: default 60 s, unparsable → default, below 10 s → 10 s (unless the
    test-only annotation says otherwise)."""
    override = ((cd.get("metadata") or {}).get("annotations") or {}).get(
        TEST_INTERVAL_ANNOTATION)
    if override:
        try:
            return max(parse_go_duration(override), 0.5)
        except ValueError:
            pass
    text = analysis(cd).get("interval") or ""
    try:
        interval = parse_go_duration(text) if text else ANALYSIS_INTERVAL_S
    except ValueError:
        return ANALYSIS_INTERVAL_S
    return max(interval, MIN_ANALYSIS_INTERVAL_S)


def threshold(cd: Obj) -> int:
    value = int(analysis(cd).get("threshold") or 0)
    return value if value > 0 else 1


def progress_deadline(cd: Obj) -> int:
    value = (cd.get("spec") or {}).get("progressDeadlineSeconds")
    return PROGRESS_DEADLINE_S if value is None else int(value)


def ready_threshold(cd: Obj, which: str) -> int:
    """`primaryReadyThreshold` / `canaryReadyThreshold` (percent, default 100)."""
    value = analysis(cd).get(f"{which}ReadyThreshold")
    return READY_THRESHOLD if value is None else int(value)


def max_weight(cd: Obj) -> int:
    steps = analysis(cd).get("stepWeights") or []
    if steps:
        return min(TOTAL_WEIGHT, int(steps[-1]))
    return int(analysis(cd).get("maxWeight") or 0) or TOTAL_WEIGHT


def next_step_weight(cd: Obj, canary_weight: int) -> int:
    """nextStepWeight: `stepWeight`, or the distance to the next of `stepWeights`."""
    step = int(analysis(cd).get("stepWeight") or 0)
    steps = [int(s) for s in analysis(cd).get("stepWeights") or []]
    if step > 0 or not steps:
        return step
    max_step = TOTAL_WEIGHT - canary_weight
    if max_step == 0:
        return 1
    if canary_weight == 0:
        return min(max_step, steps[0])
    for current, following in itertools.pairwise(steps):
        if current == canary_weight:
            return min(max_step, following - canary_weight)
    return max_step


AB_TESTING, BLUE_GREEN, CANARY = "ab-testing", "blue-green", "canary"


def strategy(cd: Obj) -> str:
    """DeploymentStrategy: match + iterations → A/B, iterations → blue/green, else canary."""
    iterations = int(analysis(cd).get("iterations") or 0)
    if analysis(cd).get("match") and iterations > 0:
        return AB_TESTING
    return BLUE_GREEN if iterations > 0 else CANARY


def service_names(cd: Obj) -> tuple[str, str, str]:
    """GetServiceNames: apex (`service.name` or the target's name), `-primary`, `-canary`."""
    spec = cd.get("spec") or {}
    apex = (spec.get("service") or {}).get("name") or target_name(cd)
    return apex, f"{apex}-primary", f"{apex}-canary"


def target_name(cd: Obj) -> str:
    """`spec.targetRef.name`; "" when unset (the schema does not require a spec: the
    scheduler refuses such a Canary with a Warning)."""
    return str(((cd.get("spec") or {}).get("targetRef") or {}).get("name") or "")


def key(cd: Obj) -> str:
    """`<name>.<namespace>`, how every Flagger message names a Canary."""
    return f"{cd['metadata']['name']}.{cd['metadata']['namespace']}"


def target_key(cd: Obj) -> str:
    return f"{target_name(cd)}.{cd['metadata']['namespace']}"


_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery/pkg/util/rand


def compute_hash(value: Any) -> str:
    """ComputeHash: FNV-32a of the value, printed in decimal, then rand.SafeEncodeString.

    Upstream hashes go-spew's dump of the Go struct; here the canonical JSON of the object is
    hashed, so the strings differ from a real Flagger's while behaving alike (equal specs, equal
    hashes)."""
    data = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    digest = 0x811C9DC5
    for byte in data:
        digest = ((digest ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(_SAFE_ALPHABET[ord(c) % len(_SAFE_ALPHABET)] for c in str(digest))
