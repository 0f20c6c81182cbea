"""Istio on the embedded cluster: what istiod does — injection (injection.py), validation
(config_validation.py), the control plane that programs every sidecar and gateway Envoy from the
cluster's objects (controlplane.py, with the builders of their configuration in xds/), Ingress and
Gateway API translation, the statuses istiod writes — and what the `istio-proxy` container runs
(sidecar.py). It stands on the shared data-plane machinery one level up (labs/embedded/mesh/).
"""
