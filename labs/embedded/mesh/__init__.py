"""The embedded Istio mesh: a control plane that programs real Envoy sidecars from the cluster's
objects (controlplane.py), the builders of their configuration (xds/), the mesh CA, sidecar
injection, the node forwarder, and telemetry (telemetry.py, prometheus.py). What it shares with
the runtime (pod annotations, the sidecar's environment, pod folders) is labs/embedded/workload.py.
"""
