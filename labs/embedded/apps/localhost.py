"""The pod's `localhost`, as a program running in a pod reaches it.

Every pod shares the host's 127.0.0.1, so a pod's own ports (its containers' ports, its sidecar's
15000/15020/15021/15090) sit at host ports the runtime allocated. The runtime gives each container
the pod's map {port: host port} in `MESHLAB_POD_LOCALHOST` (and curl the same map as `connect-to`
lines, see labs/embedded/runtime/network.py, which also says why this is a port map and not a
network namespace); programs that take a URL dial `localhost:PORT` through `dial_port`. Under
`kubectl exec` the pod-loopback shim (labs/embedded/runtime/pod_loopback.py) maps connections
for every other program too, and lets the host ports `dial_port` returns through unchanged.
Stdlib only: the programs that import it start in tens of milliseconds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

LOCALHOST_ENV = "MESHLAB_POD_LOCALHOST"
# JSON array of the loopback ports a pod's programs dial as they are (its HTTP proxy), read by
# the pod-loopback shim (labs/embedded/runtime/pod_loopback.c), which refuses the others
DIRECT_ENV = "MESHLAB_POD_LOCALHOST_DIRECT"
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


class NotInPod(LookupError):
    """The environment carries no pod `localhost` map: the program runs outside a pod."""


def encode(local: Mapping[int, int]) -> str:
    """The environment value for `local` ({port: host port})."""
    return json.dumps({str(port): host for port, host in sorted(local.items())})


def pod_localhost(env: Mapping[str, str]) -> dict[int, int]:
    """The pod's {port: host port}; NotInPod when the runtime did not set it (or garbled)."""
    raw = env.get(LOCALHOST_ENV)
    if raw is None:
        raise NotInPod(f"{LOCALHOST_ENV} is not set: run this inside a pod of the embedded "
                       "cluster, e.g. `kubectl exec POD -c CONTAINER -- COMMAND`")
    try:
        return {int(port): int(host) for port, host in json.loads(raw).items()}
    except (ValueError, TypeError, AttributeError):
        raise NotInPod(f"{LOCALHOST_ENV}={raw!r} is not a JSON object of port -> host port; "
                       "the embedded cluster's runtime sets it: recreate the pod") from None


def dial_port(host: str, port: int, env: Mapping[str, str]) -> int | None:
    """Where `host:port` really is when `host` names the pod's loopback: the host port behind
    it, or None when nothing in the pod listens on `port` (a real pod refuses the connection).
    Other hosts are not the pod's: `port` unchanged."""
    if host.lower() not in LOOPBACK_HOSTS:
        return port
    return pod_localhost(env).get(port)
