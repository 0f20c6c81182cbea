"""Flagger (fluxcd/flagger v1.44.0) in the embedded cluster: the `flagger.app/v1beta1` Canary
controller, as `kubectl apply -k kustomize/istio` installs it (`-mesh-provider=istio`,
`-metrics-server=http://prometheus.istio-system:9090`); a Canary's `spec.provider` picks
`gatewayapi:v1beta1` or `linkerd` (SMI TrafficSplit) instead.

It drives meshes only through the objects upstream's routers write and reads metrics from
Prometheus over HTTP: it imports nothing of labs/embedded/mesh (tests/test_layering.py).
Test-only knob: the annotation `meshlab.dev/test-only-analysis-interval` (spec.py) lets a
Canary tick faster than Flagger's 10 s floor; nothing sets it but tests/test_flagger.py.

Modules: controller (jobs per Canary), scheduler (one tick), deployment (primary/canary
workloads), routers (Services and mesh routes), analysis + metrics (PromQL checks), hooks +
webhooks (gates), events, status, spec (defaults), resolve (Service URLs → host ports).
"""

from .controller import FlaggerController

__all__ = ["FlaggerController"]
