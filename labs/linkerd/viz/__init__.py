"""`linkerd viz`: the viz extension's commands on the embedded cluster (linkerd/linkerd2
`viz/cmd/`). install/uninstall print manifests; stat, edges, routes and authz read linkerd-viz's
real Prometheus, which scrapes every proxy's `/metrics` (labs/embedded/mesh/prometheus.py); tap
and top read the proxies' per-request lines the daemon's telemetry server streams."""
