"""ztunnel's access log, written by Envoy in ztunnel's role: the `connection complete` lines of
`kubectl logs -n istio-system ds/ztunnel`.

Layout (istio/ztunnel `src/telemetry.rs`, `src/proxy/metrics.rs`): `<RFC 3339 time>\\t<level>\\t
access\\tconnection complete\\t<field=value ...>`, the fields in upstream's order `src.addr
src.workload src.namespace src.identity dst.addr dst.hbone_addr dst.service dst.workload
dst.namespace dst.identity direction bytes_sent bytes_recv duration`, an `error` last on a
failed connection, which is then logged at `error` level. The documented examples
(istio.io `ambient/usage/verify-mtls-enabled`, `ambient/usage/troubleshoot-ztunnel`):

    2024-08-21T15:32:05.754291Z	info	access	connection complete	src.addr=10.42.0.9:33772
    src.workload="curl-7656cf8794-6lsm4" src.namespace="default"
    src.identity="spiffe://cluster.local/ns/default/sa/curl" dst.addr=10.42.0.5:15008
    dst.hbone_addr=10.42.0.5:9080 dst.service="details.default.svc.cluster.local"
    dst.workload="details-v1-857849f66-ft8wx" dst.namespace="default"
    dst.identity="spiffe://cluster.local/ns/default/sa/bookinfo-details" direction="outbound"
    bytes_sent=84 bytes_recv=358 duration="15ms"

(one line in the log). `bytes_sent` is what the client sent, on both sides. A connection the
destination's policy refuses is logged by the destination with `error="connection closed due to
policy rejection: <reason>"` (`src/proxy.rs`: `explicitly denied by: <ns>/<name>`, `allow
policies exist, but none allowed`), and by the source with `error="http status: 401
Unauthorized"` (the CONNECT's answer). Envoy cannot derive those texts, so each is a separate
log entry selected by a CEL filter on what Envoy knows (the RBAC policy that matched, the tunnel's
answer); the lines are otherwise Envoy's own (`%EMIT_TIME%`, byte counts, duration). Other
failures at the source (no HBONE listener, a certificate refused) carry Envoy's response code
details as their `error`, not ztunnel's texts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..xds.observability import CEL_FILTER, CEL_FILTER_TYPE, FILE_LOG, FILE_LOG_TYPE
from .hbone import SOURCE_HEADER, SOURCE_NAMESPACE_HEADER
from .l4_policy import Obj, ZtunnelPolicy

TIME = "%EMIT_TIME(%Y-%m-%dT%H:%M:%S.%6fZ)%"
POLICY_REJECTION = "connection closed due to policy rejection: "
DENIED_DETAIL = "rbac_access_denied_matched_policy["


@dataclass(frozen=True)
class Workload:
    """One end of a connection as ztunnel names it."""

    name: str  # the pod
    namespace: str
    identity: str  # its SPIFFE ID
    service: str = ""  # the Service FQDN a connection to it was addressed to


def _entry(path: Path, level: str, fields: str, expression: str, error: str = "") -> Obj:
    line = f"{TIME}\t{level}\taccess\tconnection complete\t{fields}"
    if error:
        line += f' error="{error}"'
    return {"name": FILE_LOG, "filter": {"extension_filter": {
        "name": CEL_FILTER, "typed_config": {"@type": CEL_FILTER_TYPE,
                                             "expression": expression}}},
            "typed_config": {"@type": FILE_LOG_TYPE, "path": str(path),
                             "log_format": {"text_format_source": {
                                 "inline_string": line + "\n"}}}}


def _quoted(value: str) -> str:
    return f'"{value}"'


def outbound_logs(path: Path, source: Workload, destination: Workload,
                  hbone_addr: str) -> list[Obj]:
    """The source side's entries of a `hbone.capture_listener`: its connections, completed or
    failed (a CONNECT answered 401: the destination's policy refused it)."""
    fields = " ".join([
        "src.addr=%DOWNSTREAM_REMOTE_ADDRESS%", f"src.workload={_quoted(source.name)}",
        f"src.namespace={_quoted(source.namespace)}",
        f"src.identity={_quoted(source.identity)}", "dst.addr=%UPSTREAM_HOST%",
        f"dst.hbone_addr={hbone_addr}", f"dst.service={_quoted(destination.service)}",
        f"dst.workload={_quoted(destination.name)}",
        f"dst.namespace={_quoted(destination.namespace)}",
        f"dst.identity={_quoted(destination.identity)}", 'direction="outbound"',
        "bytes_sent=%BYTES_RECEIVED%", "bytes_recv=%BYTES_SENT%", 'duration="%DURATION%ms"'])
    return [
        _entry(path, "info", fields, "response.code == 200"),
        _entry(path, "error", fields, "response.code == 401", "http status: 401 Unauthorized"),
        _entry(path, "error", fields, "response.code != 200 && response.code != 401",
               "%RESPONSE_CODE_DETAILS%"),
    ]


def inbound_logs(path: Path, destination: Workload, policies: list[ZtunnelPolicy]) -> list[Obj]:
    """The destination side's entries of a `hbone.terminate_listener`: accepted CONNECTs, and
    one entry per way `policies` (the workload's, from l4_policy) can refuse one."""
    fields = " ".join([
        "src.addr=%DOWNSTREAM_REMOTE_ADDRESS%", f"src.workload=\"%REQ({SOURCE_HEADER})%\"",
        f"src.namespace=\"%REQ({SOURCE_NAMESPACE_HEADER})%\"",
        'src.identity="%DOWNSTREAM_PEER_URI_SAN%"', "dst.addr=%UPSTREAM_HOST%",
        'dst.hbone_addr="%REQ(:AUTHORITY)%"', f"dst.service={_quoted(destination.service)}",
        f"dst.workload={_quoted(destination.name)}",
        f"dst.namespace={_quoted(destination.namespace)}",
        f"dst.identity={_quoted(destination.identity)}", 'direction="inbound"',
        "bytes_sent=%BYTES_RECEIVED%", "bytes_recv=%BYTES_SENT%", 'duration="%DURATION%ms"'])
    entries = [_entry(path, "info", fields, "response.code != 401")]
    for policy in policies:
        if policy.action == "DENY":
            name = f"{policy.namespace}/{policy.name}"
            entries.append(_entry(
                path, "error", fields,
                f"response.code_details.startsWith('{DENIED_DETAIL}{name}#')",
                f"{POLICY_REJECTION}explicitly denied by: {name}"))
    entries.append(_entry(path, "error", fields,
                          f"response.code_details == '{DENIED_DETAIL}none]'",
                          f"{POLICY_REJECTION}allow policies exist, but none allowed"))
    return entries
