"""The embedded meshes. This package holds the data-plane machinery every mesh shares — running
real Envoys (envoy.py) and the node forwarder (forwarder.py), writing their file-based xDS
(writer.py, proxyfiles.py), the mesh CA and its TLS sockets (ca.py, tls.py), the Kubernetes
objects every control plane reads (kube_state.py), telemetry (telemetry.py, prometheus.py) — and,
one package each, the control planes built on it: Istio (istio/) and Linkerd (linkerd/).
What the meshes share with the runtime (pod annotations, the sidecar's environment, pod folders)
is labs/embedded/workload.py.
"""
