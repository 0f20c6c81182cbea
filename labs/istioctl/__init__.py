"""The `istioctl` command of the embedded backend: the subcommands the course uses (version,
proxy-status, proxy-config, analyze, x describe, dashboard) with upstream's output layouts, read
from the cluster's API and the sidecars' real Envoy admin API. On any other cluster `istioctl`
hands over to the real binary (`labs.istioctl.handover`)."""
