"""The node forwarder's listener: what stands in for kube-proxy for pods without a sidecar.

Their `curl` (with `proxytunnel` in its `.curlrc`) sends `CONNECT host:port`; the forwarder
tunnels the raw TCP stream to an endpoint of that Service, so a plaintext client talking to a
STRICT sidecar fails exactly as in a real mesh (connection closed, curl `000`). Other clients
using `http_proxy` send absolute-form requests, routed by authority at L7 with a plaintext
upstream. The route configuration `forwarder` (a CONNECT route and a plain route per Service
port, no mesh policy) and its plaintext clusters come from `build_outbound(state, None, None)`,
which shares the host and domain rules of the sidecars' outbound routes.
"""

from __future__ import annotations

from ...kube_state import Obj
from ...proxyfiles import ProxyFiles
from ..state import MeshState
from .clusters import build_outbound
from .listeners import http_connection_manager, rds, router, socket_address
from .observability import stdout_access_log

ROUTE_CONFIG = "forwarder"


def build_forwarder(state: MeshState, port: int, files: ProxyFiles) -> list[Obj]:
    """The forwarder's listener on 127.0.0.1:`port`, accepting CONNECT and absolute-form requests
    and routing both through the `forwarder` route configuration in `files.rds`. The listener
    does not depend on `state` (the routes do); the parameter keeps the builders uniform."""
    hcm = http_connection_manager(
        "forwarder", rds(ROUTE_CONFIG, files), [router()],
        http_protocol_options={"allow_absolute_url": True},
        upgrade_configs=[{"upgrade_type": "CONNECT"}],
        access_log=[stdout_access_log()])
    return [{"name": "forwarder", "address": socket_address(port),
             "filter_chains": [{"filters": [hcm]}]}]


def build_forwarder_routes(state: MeshState) -> list[Obj]:
    """The `forwarder` route configuration the listener above reads through RDS."""
    return build_outbound(state, None, None)[1]
