"""Istio's default text access log line (what `kubectl logs <pod> -c istio-proxy` prints), read
back into Envoy's field names, so every backend's sidecar log reaches the helpers in one shape.

The format is istiod's (pilot/pkg/model/telemetry_logging.go, 1.9 onwards):

    [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE%
    %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS%
    "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
    %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
    "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% ...
"""

from __future__ import annotations

import re
from typing import Any

_LINE = re.compile(
    r'^\[(?P<start_time>[^\]]*)\] "(?P<method>\S+) (?P<path>\S+) (?P<protocol>[^"]*)" '
    r"(?P<response_code>\d+) (?P<response_flags>\S+) (?P<response_code_details>\S+) \S+ "
    r'"[^"]*" (?P<bytes_received>\d+) (?P<bytes_sent>\d+) (?P<duration>\d+) \S+ "[^"]*" '
    r'"[^"]*" "(?P<request_id>[^"]*)" "(?P<authority>[^"]*)" "(?P<upstream_host>[^"]*)" '
    r"(?P<upstream_cluster>\S+)")
_NUMBERS = ("response_code", "bytes_received", "bytes_sent", "duration")


def parse_text_line(line: str) -> dict[str, Any] | None:
    """One line's fields under the names of Envoy's JSON access log ("-", Envoy's empty value,
    becomes None), plus `direction` read from the upstream cluster (`inbound|...` or not);
    None for a line that is not an access log entry (Envoy's own messages)."""
    found = _LINE.match(line)
    if found is None:
        return None
    entry: dict[str, Any] = {key: (None if value == "-" else value)
                             for key, value in found.groupdict().items()}
    for key in _NUMBERS:
        entry[key] = int(entry[key])
    entry["direction"] = ("inbound" if str(entry["upstream_cluster"]).startswith("inbound|")
                          else "outbound")
    return entry
