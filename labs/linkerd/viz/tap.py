"""`linkerd viz tap`: a live stream of the requests a resource's proxies handle.

linkerd2-proxy streams tap events to the viz tap server; here each linkerd-proxy (an Envoy)
writes one JSON line per request (labs/embedded/mesh/linkerd/xds.py) and the daemon's telemetry
server streams the lines of the tapped pods (`/proxies/tap`, labs/embedded/mesh/telemetry.py).
Each request prints upstream's three events with linkerd/linkerd2 `viz/cmd/tap.go`
`renderTapEvent` formats (`req id=…`, `rsp id=…` with the latency since the request,
`end id=…` with the duration since the response began, `proxy=in `/`proxy=out`, `tls=true` or
the reason there is none; `-o wide` appends the peers' metadata as `renderTapEventWide`, e.g.
`dst_pod=web-… dst_tls=true`, golden `viz/cmd/testdata/tap_busy_output_wide.golden`).
Emulation limits, said here and in `--help`: the three events of a request print together once
it has completed (Envoy logs a request at its end); `id=<base>:<stream>` numbers the tapped pods
and their requests; addresses are the loopback host ports every pod of the embedded cluster
listens on; the metadata is what the emulation knows of a peer (namespace, pod, owner, service
account, tls), no route labels; timings are Envoy's milliseconds in µs; `-o json` prints each
event as `renderTapEventJSON` does, with no headers or trailers (the access log has none). The
stream runs until Ctrl-C or until the cluster stops.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from labs.cluster import ClusterRef
from labs.embedded.workload import host_ports, pod_dir_name
from labs.linkerd.kube import Kube
from labs.linkerd.viz.prom import VizError
from labs.linkerd.viz.resources import Resource, objects, pods_of

Obj = dict[str, Any]
CONNECT_TIMEOUT_S = 10.0
OWNER_LABEL_PREFIX = "linkerd.io/proxy-"  # linkerd.io/proxy-deployment: web -> deployment
GRPC_CODES = ("OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
              "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
              "Aborted", "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss",
              "Unauthenticated")  # google.golang.org/grpc/codes Code.String()


@dataclass
class Filters:
    """tap's request filters (`--to`, `--method`, `--path` prefix, `--max-rps`)."""

    to_ports: set[int] | None = None
    method: str = ""
    path: str = ""
    max_rps: float = 100.0
    _second: int = 0
    _count: int = 0

    def matches(self, line: Obj) -> bool:
        if self.method and line.get("method") != self.method:
            return False
        if self.path and not str(line.get("path") or "").startswith(self.path):
            return False
        if self.to_ports is not None:
            if line.get("direction") != "outbound":
                return False
            if _port(line.get("upstream_host")) not in self.to_ports:
                return False
        return self._admit()

    def _admit(self) -> bool:
        """At most `max_rps` requests a second, as the tap server limits them."""
        second = int(time.monotonic())
        if second != self._second:
            self._second, self._count = second, 0
        self._count += 1
        return self._count <= self.max_rps


def _port(address: object) -> int | None:
    text = str(address or "")
    _, _, port = text.rpartition(":")
    return int(port) if port.isdigit() else None


@dataclass
class Peers:
    """Which pod listens on which host port, to name a request's peers (`-o wide`)."""

    by_port: dict[int, Obj] = field(default_factory=dict)
    by_dir: dict[str, Obj] = field(default_factory=dict)

    @classmethod
    def of(cls, pods: list[Obj]) -> Peers:
        peers = cls()
        for pod in pods:
            peers.by_dir[pod_dir_name(pod)] = pod
            for port in host_ports(pod).values():
                peers.by_port[port] = pod
        return peers


def meta_labels(pod: Obj | None) -> dict[str, str]:
    """A peer's tap metadata: namespace, pod, its owner (`deployment`...) and service account,
    as the destination controller labels endpoints."""
    if pod is None:
        return {}
    meta = pod["metadata"]
    labels = {"namespace": meta.get("namespace", ""), "pod": meta["name"],
              "serviceaccount": (pod.get("spec") or {}).get("serviceAccountName") or "default"}
    for key, value in (meta.get("labels") or {}).items():
        if key.startswith(OWNER_LABEL_PREFIX):
            labels[key.removeprefix(OWNER_LABEL_PREFIX)] = value
    return labels


def wide(line: str, src: dict[str, str], dst: dict[str, str]) -> str:
    """renderTapEventWide: the event, then `src_*`, `dst_*` and route labels, each group
    sorted and joined by spaces (empty groups leave their separator)."""
    groups = [sorted(f"{side}_{k}={v}" for k, v in labels.items())
              for side, labels in (("src", src), ("dst", dst))]
    return " ".join([line, *(" ".join(g) for g in groups), ""])


def _tls(line: Obj) -> str:
    if line.get("tls"):
        return "true"
    return "no_tls_from_remote" if line.get("direction") == "inbound" else "no_identity"


def _us(ms: object) -> int:
    try:
        return int(float(str(ms)) * 1000)
    except ValueError:
        return 0


def _addresses(line: Obj) -> tuple[str, str]:
    """The request's source and destination as `host:port`."""
    inbound = line.get("direction") == "inbound"
    dst = line.get("local") if inbound else line.get("upstream_host")
    return str(line.get("src") or ""), str(dst or "")


def peer_labels(line: Obj, peers: Peers) -> tuple[dict[str, str], dict[str, str]]:
    """The source's and destination's metadata, as the tap server labels them: an inbound
    request's source is known by its TLS status only, its destination is the tapped pod."""
    tls = _tls(line)
    own = meta_labels(peers.by_dir.get(str(line.get("pod_dir"))))
    if line.get("direction") == "inbound":
        return {"tls": tls}, own
    return own, {**meta_labels(peers.by_port.get(_port(_addresses(line)[1]) or -1)), "tls": tls}


def render(line: Obj, base: int, stream: int, peers: Peers | None) -> list[str]:
    """The req/rsp/end lines of one request."""
    inbound = line.get("direction") == "inbound"
    src, dst = _addresses(line)
    flow = f"proxy={'in ' if inbound else 'out'} src={src} dst={dst} tls={_tls(line)}"
    ident = f"id={base}:{stream} {flow}"
    status = int(line.get("response_code") or 0)
    grpc = line.get("grpc_status")
    end = f"end {ident} "
    if grpc not in (None, ""):
        code = int(grpc)
        end += f"grpc-status={GRPC_CODES[code] if code < len(GRPC_CODES) else f'Code({code})'} "
    end += (f"duration={_us(line.get('response_tx'))}µs "
            f"response-length={line.get('bytes_sent') or 0}B")
    events = [f"req {ident} :method={line.get('method') or ''} "
              f":authority={line.get('host') or ''} :path={line.get('path') or ''}",
              f"rsp {ident} :status={status} latency={_us(line.get('latency'))}µs", end]
    if peers is None:
        return events
    src_labels, dst_labels = peer_labels(line, peers)
    return [wide(event, src_labels, dst_labels) for event in events]


def render_json(line: Obj, base: int, stream: int, peers: Peers) -> list[str]:
    """renderTapEventJSON (viz/cmd/tap.go, golden `viz/cmd/testdata/tap_busy_output_json.golden`):
    each of the request's three events as an indented `tapEvent` (the emulation records no
    headers or trailers: `null`; the scheme is the plaintext `HTTP` the app sees)."""
    src, dst = _addresses(line)
    src_labels, dst_labels = peer_labels(line, peers)
    head: Obj = {"source": _endpoint(src, src_labels), "destination": _endpoint(dst, dst_labels),
                 "routeMeta": None,
                 "proxyDirection": "INBOUND" if line.get("direction") == "inbound"
                 else "OUTBOUND"}
    ident = {"base": base, "stream": stream}
    grpc = line.get("grpc_status")
    events = [
        {**head, "requestInitEvent": {
            "id": ident, "method": line.get("method") or "", "scheme": "HTTP",
            "authority": line.get("host") or "", "path": line.get("path") or "",
            "headers": None}},
        {**head, "responseInitEvent": {
            "id": ident, "sinceRequestInit": _go_duration(_us(line.get("latency"))),
            "httpStatus": int(line.get("response_code") or 0), "headers": None}},
        {**head, "responseEndEvent": {
            "id": ident, "sinceRequestInit": _go_duration(_us(line.get("duration"))),
            "sinceResponseInit": _go_duration(_us(line.get("response_tx"))),
            "responseBytes": int(line.get("bytes_sent") or 0), "trailers": None,
            "grpcStatusCode": int(grpc) if grpc not in (None, "") else 0}},
    ]
    return [go_marshal_indent(event) for event in events]


def _endpoint(address: str, labels: dict[str, str]) -> Obj:
    host, _, port = address.rpartition(":")
    return {"ip": host.strip("[]"), "port": int(port) if port.isdigit() else 0,
            "metadata": labels or None}


def _go_duration(us: int) -> Obj:
    """A protobuf Duration as Go's encoding/json writes the struct: zero fields left out."""
    seconds, micros = divmod(us, 1_000_000)
    return {**({"seconds": seconds} if seconds else {}),
            **({"nanos": micros * 1000} if micros else {})}


def go_marshal_indent(value: Obj) -> str:
    """json.MarshalIndent(value, "", "  "): map keys sorted, and <, > and & escaped."""
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def meshed_pods(kube: Kube, resource: Resource, control_plane_ns: str,
                every: list[Obj] | None = None) -> list[Obj]:
    """The resource's running meshed pods (`every`: the cluster's pods, when already listed)."""
    every = kube.items("pods", None) if every is None else every
    found = [p for obj in objects(kube, resource, False)
             for p in pods_of(resource.kind, obj, every)]
    return [p for p in found if (p.get("status") or {}).get("phase") == "Running"
            and (p["metadata"].get("labels") or {}).get("linkerd.io/control-plane-ns")
            == control_plane_ns]


def stream_lines(ref: ClusterRef, pods: list[Obj]) -> Iterator[Obj]:
    """The tapped pods' request lines, as the telemetry server streams them."""
    ports = ref.embedded.paths.read_endpoint() if ref.embedded is not None else None
    if not ports or "telemetry" not in ports:
        raise VizError("the embedded cluster's telemetry server is not running: is the "
                       "cluster up (`meshlab status`)?")
    query = urllib.parse.urlencode({"pods": ",".join(pod_dir_name(p) for p in pods)})
    url = f"http://127.0.0.1:{ports['telemetry']}/proxies/tap?{query}"
    try:
        response = urllib.request.urlopen(url, timeout=CONNECT_TIMEOUT_S)
    except (OSError, urllib.error.URLError) as err:
        raise VizError(f"could not open the tap stream ({err})") from None
    with response:
        for raw in response:
            if raw.strip():
                yield json.loads(raw)


def tapped_pods(kube: Kube, resource: Resource, control_plane_ns: str, every: list[Obj]
                ) -> list[Obj]:
    """What tap and top stream from: the resource's meshed pods; VizError when there are none."""
    pods = meshed_pods(kube, resource, control_plane_ns, every)
    if not pods:
        name = f"{resource.kind}/{resource.name}" if resource.name else resource.kind
        raise VizError(f"no meshed pods found for {name} in namespace {resource.namespace}")
    return pods


def tap(ref: ClusterRef, kube: Kube, resource: Resource, filters: Filters, output: str,
        control_plane_ns: str, out: TextIO = sys.stdout) -> int:
    """Stream the tapped pods' requests in tap's `output` format: "" (default), wide, json."""
    every = kube.items("pods", None)
    pods = tapped_pods(kube, resource, control_plane_ns, every)
    peers = Peers.of(every) if output else None
    bases = {pod_dir_name(p): index for index, p in enumerate(pods)}
    streams = dict.fromkeys(bases, 0)
    try:
        for line in stream_lines(ref, pods):
            if not filters.matches(line):
                continue
            pod_dir = str(line.get("pod_dir"))
            base, stream = bases.get(pod_dir, 0), streams.get(pod_dir, 0)
            texts = (render_json(line, base, stream, peers) if output == "json" and peers
                     else render(line, base, stream, peers))
            for text in texts:
                out.write(text + "\n")
            streams[pod_dir] = streams.get(pod_dir, 0) + 1
            out.flush()
    except KeyboardInterrupt:  # Ctrl-C ends a tap, quietly
        pass
    except BrokenPipeError:  # `| head`: the reader is gone, as Go's tap exits on EPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
