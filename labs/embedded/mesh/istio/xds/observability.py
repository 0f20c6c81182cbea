"""Access logs and tracing of the sidecars: what `kubectl logs -c istio-proxy`, the metrics and the
traces are made of.

Each HTTP connection manager of a sidecar writes one JSON object per request to `telemetry.log`
next to the proxy's xDS directory, always: the telemetry collector tails it to compute Istio's
metrics (what Istio's stats filter does in its proxies). Istio's default text line goes to stdout
(the container log a learner reads) when the mesh config or the Telemetry API turns access
logging on, and spans go to the daemon's Zipkin-compatible collector through the `zipkin` cluster
at the sampling percentage they set (xds/telemetry_api.py).
"""

from __future__ import annotations

from ....workload import TELEMETRY_LOG, workload_name
from ...kube_state import Obj, pod_spiffe_id
from ...proxyfiles import ProxyFiles
from .telemetry_api import Side

FILE_LOG = "envoy.access_loggers.file"
FILE_LOG_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
ZIPKIN_CLUSTER = "zipkin"

# Istio's default text access log format (pilot/pkg/model/telemetry_logging.go, 1.9 onwards).
ISTIO_TEXT_FORMAT = (
    "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" "
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "
    "\"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "
    "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" "
    "\"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% "
    "%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% "
    "%REQUESTED_SERVER_NAME% %ROUTE_NAME%\n")

# One JSON object per request for the telemetry collector; a value Envoy does not have is null.
# `connection_security` is the downstream TLS version: an inbound request over mTLS has one, a
# plaintext one null. Measured with Envoy 1.40 (bench/mesh.py, bench/envoy_pair.py): this line
# costs 8-10 us of Envoy CPU per hop; keeping only the fields the telemetry server reads saved
# under 2 us, within the noise, and labs.cluster's `sidecar_access_log` promises the rest.
TELEMETRY_FIELDS = {
    "start_time": "%START_TIME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "authority": "%REQ(:AUTHORITY)%",
    "content_type": "%REQ(CONTENT-TYPE)%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "duration": "%DURATION%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "upstream_cluster": "%UPSTREAM_CLUSTER_RAW%",
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_peer_uri_san": "%UPSTREAM_PEER_URI_SAN%",
    "upstream_tls_version": "%UPSTREAM_TLS_VERSION%",
    "downstream_peer_uri_san": "%DOWNSTREAM_PEER_URI_SAN%",
    "connection_security": "%DOWNSTREAM_TLS_VERSION%",
    "route_name": "%ROUTE_NAME%",
    # What the RBAC filters decided (enforced and shadow policy ids and results), for
    # labs.authz: e.g. {"enforced_effective_policy_id": "ns[foo]-policy[allow]-rule[0]", ...}.
    "rbac": "%DYNAMIC_METADATA(envoy.filters.http.rbac)%",
}


CEL_FILTER = "envoy.access_loggers.extension_filters.cel"
CEL_FILTER_TYPE = ("type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3"
                   ".ExpressionFilter")


def stdout_access_log(expression: str | None = None) -> Obj:
    """Istio's default text access log to the proxy's stdout; `expression` (a Telemetry
    `accessLogging.filter.expression`) keeps only the requests it holds for, through Envoy's CEL
    filter as istiod configures it."""
    log: Obj = {"name": FILE_LOG, "typed_config": {
        "@type": FILE_LOG_TYPE, "path": "/dev/stdout",
        "log_format": {"text_format_source": {"inline_string": ISTIO_TEXT_FORMAT}}}}
    if expression:
        log["filter"] = {"extension_filter": {"name": CEL_FILTER, "typed_config": {
            "@type": CEL_FILTER_TYPE, "expression": expression}}}
    return log


def telemetry_access_log(files: ProxyFiles, pod: Obj, direction: str) -> Obj:
    """The JSON access log the collector reads; `direction` is "inbound" or "outbound", and the
    proxy's own identity is written in so each line stands on its own."""
    meta = pod["metadata"]
    fields = {**TELEMETRY_FIELDS, "direction": direction, "pod": meta["name"],
              "namespace": meta.get("namespace", ""), "workload": workload_name(pod),
              "principal": pod_spiffe_id(pod)}
    return {"name": FILE_LOG, "typed_config": {
        "@type": FILE_LOG_TYPE, "path": str(files.xds_dir.parent / TELEMETRY_LOG),
        "log_format": {"json_format": fields}}}


def sidecar_access_logs(files: ProxyFiles, pod: Obj, direction: str, side: Side) -> list[Obj]:
    """The telemetry JSON log, always (the metrics need it), and the learner's text log when
    `side` has access logging on."""
    text = [stdout_access_log(side.log_filter)] if side.access_log else []
    return [*text, telemetry_access_log(files, pod, direction)]


def tracing_config(side: Side, collector: bool) -> Obj:
    """The HCM keyword arguments for tracing: none without a collector or with span reporting
    off, else `tracing(side.sampling)`."""
    if not collector or side.sampling is None:
        return {}
    return {"tracing": tracing(side.sampling)}


def tracing(sampling: float) -> Obj:
    """HCM tracing: `sampling` % of requests without a sampling decision traced (a request with
    `x-b3-sampled` keeps its caller's decision), spans sent as Zipkin v2 JSON to the `zipkin`
    cluster. Client and overall sampling stay at 100 %, as istiod's configureSampling sets them
    (pilot/pkg/networking/core/tracing.go). Unsampled requests cost too (measured with Envoy
    1.40: 8-13 us of Envoy CPU per hop at 1 %, the same at 0 %): Envoy's Zipkin tracer starts a
    span and adds the B3 headers to every request, which is how the decision propagates."""
    return {
        "provider": {"name": "envoy.tracers.zipkin", "typed_config": {
            "@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
            "collector_cluster": ZIPKIN_CLUSTER,
            "collector_endpoint": "/api/v2/spans",
            "collector_endpoint_version": "HTTP_JSON",
            "shared_span_context": False,
        }},
        "random_sampling": {"value": sampling},
    }


def telemetry_clusters(telemetry_port: int) -> list[Obj]:
    """The clusters the sidecar listeners refer to: `zipkin`, the daemon's span collector."""
    return [{
        "name": ZIPKIN_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": ZIPKIN_CLUSTER, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {
                "address": "127.0.0.1", "port_value": telemetry_port}}}}]}]},
    }]
