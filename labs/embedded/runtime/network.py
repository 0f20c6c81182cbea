"""A pod's network on the shared loopback: which ports its processes listen on, and the proxy
its processes send requests through.

Every pod shares 127.0.0.1, so each container port gets a host port (annotation
`meshlab.dev/host-ports`, listed in Endpoints). A pod with a mesh proxy (Istio's `istio-proxy`
container, or Linkerd's `linkerd-proxy` native sidecar) is in *capture mode*: there is no
iptables, so the sidecar's inbound listener takes the host port and the app moves to a second,
internal port (`meshlab.dev/app-ports`); the sidecar also gets an
admin and an outbound HTTP-proxy port (`meshlab.dev/proxy-ports`). The control plane reads all
three annotations to write the sidecar's configuration, so they are written before any container
starts. Apps reach services by name through an HTTP proxy: their sidecar's outbound listener in
a meshed pod, the node forwarder (standing in for kube-proxy) otherwise. A gateway pod (its
`istio-proxy` runs `proxy router`) has no app to capture: its Envoy listens on the host ports
of its own declared ports, and learns it is a `router` from its environment. The sidecar's pod
ports 15020 (agent), 15021 (health) and 15090 (Envoy's Prometheus stats) get host ports like
declared container ports: on a real cluster they answer on the pod's IP (the kubelet probes
15021, Prometheus scrapes 15020), and the sidecar's Envoy listens on them.

A pod's `localhost` is a *port map*, not a network namespace. On a real cluster the containers
of a pod share a network namespace, so `curl localhost:15000/clusters` in any container reaches
the sidecar's admin, `localhost:<containerPort>` the app, and any other port is refused. Here
every container gets the pod's map {port: host port} (`PodPorts.localhost`) in its environment,
with the loopback ports its programs dial as they are (its HTTP proxy): `pilot-agent request`
and the other built-in programs dial through it (labs/embedded/apps/localhost.py), curl through
the same map written as `connect-to` lines in `$HOME/.curlrc` (read on every run; `no_proxy`
sends localhost direct), and every other program `kubectl exec` runs (a Python script, wget,
bash's /dev/tcp, nc) through an LD_PRELOAD shim around connect(2) (pod_loopback.py): a port of
the map goes to its host port, any other loopback port is refused. The shim misses statically
linked programs and raw syscalls (Go binaries, io_uring), and is off where it cannot be built
(not Linux, no `cc`: the exec'd environment says why in `MESHLAB_POD_LOCALHOST_SHIM`); curl and
the built-in programs still see the map there. A namespace per `kubectl exec` (unshare a netns,
forward its loopback ports to the host ports) was considered and not chosen: every service call
of the exec'd command (fortio load, curl through the sidecar) would then cross a user-space
forwarder, costing CPU on a 2-core machine and changing the measured latencies the labs show
(the shim only changes the address a connection is opened to); it needs user namespaces, absent
on macOS (a supported platform) and on some locked-down hosts; and a grading run already puts
the whole cluster in one namespace.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from labs.istio_names import SIDECAR_CONTAINER

from ..apps import localhost
from ..workload import (
    ADMIN_PORT,
    ADMIN_PORT_ENV,
    APP_PORTS,
    HOST_PORTS,
    HOST_PORTS_ENV,
    LINKERD_OUTBOUND_PORT,
    OUTBOUND_PORT_ENV,
    POD_PORTS,
    PROXY_PORTS,
    PROXY_TYPE_ENV,
    SERVICE_CLUSTER_ENV,
    app_ports,
    has_mesh_proxy,
    has_sidecar,
    host_ports,
    is_mesh_proxy,
    proxy_ports,
    proxy_type,
    workload_name,
)
from .ports import PortAllocator
from .probes import probe_ports

Obj = dict[str, Any]
NO_PROXY = "localhost,127.0.0.1,::1"
# curl then tunnels (CONNECT host:port) through the node forwarder instead of sending the
# request to it: a plaintext client meets a STRICT mTLS server exactly as in a real mesh
CURLRC = "proxytunnel\n"


def listen_ports(container: Obj) -> list[int]:
    """TCP container ports to serve: the declared ones plus any a probe targets, plus the
    sidecar's pod ports for the sidecar."""
    declared = [int(p["containerPort"]) for p in container.get("ports") or []
                if p.get("protocol", "TCP") == "TCP" and "containerPort" in p]
    sidecar = list(POD_PORTS) if is_sidecar(container) else []
    return list(dict.fromkeys(declared + probe_ports(container) + sidecar))


def is_sidecar(container: Obj) -> bool:
    return container.get("name") == SIDECAR_CONTAINER


@dataclass
class PodPorts:
    """The ports allocated to one pod, by container port."""

    meshed: bool
    host: dict[int, int] = field(default_factory=dict)
    app: dict[int, int] = field(default_factory=dict)  # capture mode: where the app listens
    proxy: dict[str, int] = field(default_factory=dict)  # capture mode: {"admin", "outbound"}
    # capture mode: the proxy's ports on the pod's localhost -> their key in `proxy`
    local_proxy: dict[int, str] = field(default_factory=dict)

    def annotations(self) -> dict[str, str]:
        def dump(ports: Mapping[Any, int]) -> str:
            return json.dumps({str(k): v for k, v in ports.items()})
        out = {HOST_PORTS: dump(self.host)}
        if self.meshed:
            out[APP_PORTS] = dump(self.app)
            out[PROXY_PORTS] = dump(self.proxy)
        return out

    def localhost(self) -> dict[int, int]:
        """The pod's `localhost`: port -> the host port that answers it. The app directly on
        its own port (in a real pod loopback traffic bypasses the sidecar's capture), the
        sidecar's pod ports and its admin on 15000 (Istio), or the proxy's outbound listener on
        4140 (Linkerd; its admin 4191 is a declared port)."""
        local = {**self.host, **self.app}
        local.update({port: self.proxy[key] for port, key in self.local_proxy.items()})
        return local

    def allocated(self) -> list[int]:
        return [*self.host.values(), *self.app.values(), *self.proxy.values()]

    def bind_ports(self, container: Obj) -> dict[int, int]:
        """Container port -> the port its process listens on (and its probes check): the app
        port in capture mode, except for the sidecar itself; the host port otherwise."""
        app = {} if is_mesh_proxy(container) else self.app
        return {port: app.get(port) or self.host[port] for port in listen_ports(container)}


def allocate(pod: Obj, containers: list[Obj], allocator: PortAllocator) -> PodPorts:
    """Ports for `containers` of `pod`, the ones a previous daemon gave it when still free."""
    previous = {HOST_PORTS: host_ports(pod), APP_PORTS: app_ports(pod),
                PROXY_PORTS: proxy_ports(pod)}

    def take(annotation: str, key: object) -> int:
        return allocator.allocate(previous[annotation].get(str(key)))

    ports = PodPorts(meshed=has_mesh_proxy(pod))
    for container in containers:
        for port in listen_ports(container):
            if port in ports.host:
                continue
            ports.host[port] = take(HOST_PORTS, port)
            if ports.meshed and not is_mesh_proxy(container):
                ports.app[port] = take(APP_PORTS, port)
    if ports.meshed:
        ports.proxy = {key: take(PROXY_PORTS, key) for key in ("admin", "outbound")}
        ports.local_proxy = ({ADMIN_PORT: "admin"} if has_sidecar(pod)
                             else {LINKERD_OUTBOUND_PORT: "outbound"})
    return ports


def proxy_env(url: str) -> dict[str, str]:
    """Both spellings: curl reads only the lower-case `http_proxy`, other tools either."""
    return {"http_proxy": url, "HTTP_PROXY": url, "no_proxy": NO_PROXY, "NO_PROXY": NO_PROXY}


def network_env(pod: Obj, ports: PodPorts, container: Obj,
                forwarder_port: int | None) -> dict[str, str]:
    """What a container (and `kubectl exec` in it) needs to reach services and its pod's
    `localhost` (the proxy's port dialed as it is: see pod_loopback.c), and, for the sidecar,
    to configure itself."""
    proxy = _proxy_port(ports, container, forwarder_port)
    local = {localhost.LOCALHOST_ENV: localhost.encode(ports.localhost()),
             localhost.DIRECT_ENV: json.dumps([] if proxy is None else [proxy])}
    if ports.meshed and is_mesh_proxy(container):
        return local | {ADMIN_PORT_ENV: str(ports.proxy["admin"]),
                        OUTBOUND_PORT_ENV: str(ports.proxy["outbound"]),
                        HOST_PORTS_ENV: ports.annotations()[HOST_PORTS],
                        PROXY_TYPE_ENV: proxy_type(container),
                        SERVICE_CLUSTER_ENV: (pod["metadata"].get("labels") or {}).get("app")
                        or workload_name(pod)}
    return local | ({} if proxy is None else proxy_env(f"http://127.0.0.1:{proxy}"))


def _proxy_port(ports: PodPorts, container: Obj, forwarder_port: int | None) -> int | None:
    """The HTTP proxy a container's programs reach services through: its sidecar's outbound
    listener in a meshed pod (none for the sidecar itself), else the node forwarder."""
    if ports.meshed:
        return None if is_mesh_proxy(container) else ports.proxy["outbound"]
    return forwarder_port


def curlrc(ports: PodPorts, forwarder_port: int | None) -> str:
    """curl's configuration in a container of the pod: `connect-to` for each port of the pod's
    `localhost` (by every name of the loopback), and, in a pod without a sidecar, the tunnel
    through the forwarder."""
    lines = [f'connect-to = "{name}:{port}:127.0.0.1:{host}"'
             for port, host in sorted(ports.localhost().items())
             for name in ("localhost", "127.0.0.1", "[::1]")]
    if not ports.meshed and forwarder_port is not None:
        lines.append(CURLRC.strip())
    return "".join(f"{line}\n" for line in lines)


def prepare_home(workdir: Path, ports: PodPorts, forwarder_port: int | None) -> None:
    """Write the container's `$HOME/.curlrc` (see `curlrc`), when there is something to say."""
    text = curlrc(ports, forwarder_port)
    if text:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / ".curlrc").write_text(text)


def write_shims(bin_dir: Path, commands: Mapping[str, list[str]]) -> dict[str, str]:
    """One small script per command an image provides (`fortio`, or `/usr/bin/fortio` as
    Istio's tasks type it), named after the command's base name. Returns the absolute paths
    the image has its commands at -> the script, for exec to translate (the host has no
    `/usr/bin/fortio`, and an image's own file would win over the host's anyway)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    aliases: dict[str, str] = {}
    for command, argv in commands.items():
        name = PurePosixPath(command).name
        if name in ("", ".", ".."):
            raise ValueError(f"app catalog command {command!r} has no usable name")
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec {shlex.join(argv)} "$@"\n')
        shim.chmod(0o755)
        if command.startswith("/"):
            aliases[command] = str(shim)
    return aliases
