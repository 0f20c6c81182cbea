"""Istio's ambient data plane on the embedded cluster, Envoy playing ztunnel (issue 14).

Built so far, each tested with real Envoys and measured in bench/mesh.py:
- hbone.py: HBONE between a captured workload's ztunnel and the destination's (HTTP/2 CONNECT
  over mutual TLS with the workloads' SPIFFE certificates), the destination answering 401 when
  its policy refuses;
- l4_policy.py: AuthorizationPolicy as istiod converts it for ztunnel (L4 attributes only; HTTP
  ones fail safe) and the `ZtunnelAccepted` condition's texts, compiled to RBAC per route;
- access_log.py: ztunnel's `connection complete` lines.

Not built yet: capture (the `istio.io/dataplane-mode` labels, the pod annotation
`ambient.istio.io/redirection`, a per-pod capture port on the node's Envoy so pods join and
leave without a restart), the ztunnel DaemonSet and its logs, waypoints, `istioctl ztunnel-config`
and `istioctl waypoint`. Until then no cluster object programs these builders.
"""
