"""`kubectl port-forward`: the kubelet's port-forward protocol (portforward.k8s.io) over SPDY/3.1.

kubectl ≥ 1.31 tunnels the SPDY connection through a WebSocket (subprotocol
`SPDY/3.1+portforward.k8s.io`, KEP-4006; client-go `tools/portforward/tunneling_dialer.go`, each
WebSocket binary message a piece of the SPDY byte stream) and falls back to a plain
`Upgrade: SPDY/3.1` with `X-Stream-Protocol-Version: portforward.k8s.io`; both are served.
Per forwarded connection the client opens an `error` and a `data` stream carrying `port` and
`requestID` headers; the pair is forwarded to the pod's localhost:PORT and any failure is
written, as text, on the error stream. Stream checks, pairing and messages follow
`pkg/kubelet/cri/streaming/portforward/httpstream.go`; dialing and copying follow containerd's
`pkg/cri/server/sandbox_portforward_linux.go`.

A pod here shares the host's loopback, so "localhost:PORT in the pod" is looked up in the pod's
`localhost` port map (labs/embedded/apps/localhost.py): the app's own port in a meshed pod
(port-forward bypasses the sidecar, as it bypasses iptables capture in a real pod), the host
port otherwise, and the sidecar's ports such as its Envoy admin on 15000.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiohttp import WSMsgType, web

from ..apiserver.errors import ApiError
from .spdy import Session, SpdyError, Stream

log = logging.getLogger(__name__)
PROTOCOL = "portforward.k8s.io"
TUNNEL_PROTOCOL = f"SPDY/3.1+{PROTOCOL}"  # constants.WebsocketsSPDYTunnelingPrefix + protocol
SPDY_UPGRADE = "SPDY/3.1"
DRAIN_WAIT = 1.0  # containerd waits this long for the other direction once one has ended
CHUNK = 32 * 1024
# v1.StreamType, v1.PortHeader, v1.PortForwardRequestIDHeader
STREAM_TYPE, PORT, REQUEST_ID = "streamType", "port", "requestID"
ERROR, DATA = "error", "data"


def sandbox_id(pod: dict) -> str:
    """A stable 64-hex id standing for the pod sandbox that containerd names in its errors."""
    return hashlib.sha256(pod["metadata"]["uid"].encode()).hexdigest()


def check_stream(stream: Stream) -> str | None:
    """kubelet's `httpStreamReceived`: a valid port and stream type, or why not."""
    port = stream.header(PORT)
    if not port:
        return f'"{PORT}" header is required'
    if not port.isdigit() or int(port) > 65535:
        return f'unable to parse "{port}" as a port'
    if int(port) < 1:
        return f'port "{port}" must be > 0'
    kind = stream.header(STREAM_TYPE)
    if not kind:
        return f'"{STREAM_TYPE}" header is required'
    if kind not in (ERROR, DATA):
        return f'invalid stream type "{kind}"'
    return None


def _go_errno(exc: OSError) -> str:
    """Go's wording of a dial error's errno (lower-case, like syscall.Errno.Error)."""
    return os.strerror(exc.errno).lower() if exc.errno else str(exc)


@dataclass
class _Pair:
    request_id: str
    data: Stream | None = None
    error: Stream | None = None


class PortForwarder:
    """The port-forward side of one SPDY session to one pod."""

    def __init__(self, pod: dict, localhost: Mapping[int, int]) -> None:
        """`localhost`: the pod's port -> the host port that answers it."""
        self.pod = pod
        self.localhost = localhost
        self.sandbox = sandbox_id(pod)
        self._pairs: dict[str, _Pair] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def accepted(self, stream: Stream) -> None:
        """httpStreamHandler.run: pair the streams of a request; forward once both are in."""
        request_id = stream.header(REQUEST_ID) or self._legacy_request_id(stream)
        pair = self._pairs.setdefault(request_id, _Pair(request_id))
        slot = "error" if stream.header(STREAM_TYPE) == ERROR else "data"
        if getattr(pair, slot) is not None:
            message = (f"error processing stream for request {request_id}: "
                       f"{slot} stream already assigned")
            log.warning("port-forward: %s", message)
            if pair.error is not None:
                self._spawn(pair.error.write(message.encode()))
            return
        setattr(pair, slot, stream)
        if pair.data is not None and pair.error is not None:
            del self._pairs[request_id]
            self._spawn(self._forward(pair.data, pair.error))

    @staticmethod
    def _legacy_request_id(stream: Stream) -> str:
        """Clients older than request ids: error stream N and data stream N+2 belong together."""
        return str(stream.id if stream.header(STREAM_TYPE) == ERROR else stream.id - 2)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _forward(self, data: Stream, error: Stream) -> None:
        port = int(data.header(PORT))
        try:
            try:
                reader, writer = await self._dial(port)
            except OSError as exc:
                message = (f"error forwarding port {port} to pod {self.sandbox}, uid : "
                           f'failed to execute portforward in network namespace "host": {exc}')
                log.info("port-forward: %s", message)
                await error.write(message.encode())
                return
            try:
                await _copy_both_ways(data, reader, writer)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        except ConnectionError:
            return  # the client went away
        finally:
            data.session.forget(data)
            data.session.forget(error)
            with contextlib.suppress(ConnectionError):
                await data.close()
                await error.close()

    async def _dial(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """containerd's dial: localhost over IPv4, then IPv6; both errors when neither works."""
        target = self.localhost.get(port)
        errors = []
        for family, host, shown in (("tcp4", "127.0.0.1", "127.0.0.1"), ("tcp6", "::1", "[::1]")):
            try:
                if target is None:  # nothing of this pod listens there
                    raise ConnectionRefusedError(errno.ECONNREFUSED, "connection refused")
                return await asyncio.open_connection(host, target)
            except OSError as exc:
                errors.append(f"dial {family} {shown}:{port}: connect: {_go_errno(exc)}")
        raise OSError(f'failed to connect to localhost:{port} inside namespace "{self.sandbox}", '
                      f"IPv4: {errors[0]} IPv6 {errors[1]} ")


async def _copy_both_ways(stream: Stream, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
    """Copy until one direction ends, then give the other `DRAIN_WAIT` to finish (containerd)."""

    async def to_pod() -> None:
        while chunk := await stream.read():
            writer.write(chunk)
            await writer.drain()

    async def to_client() -> None:
        while chunk := await reader.read(CHUNK):
            await stream.write(chunk)

    tasks = {asyncio.create_task(to_pod()), asyncio.create_task(to_client())}
    try:
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if pending:
            await asyncio.wait(pending, timeout=DRAIN_WAIT)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, ConnectionError):
            raise result


async def _serve(forwarder: PortForwarder, read: Callable[[], Awaitable[bytes]],
                 write: Callable[[bytes], Awaitable[None]]) -> None:
    pod = forwarder.pod
    session = Session(read, write, check_stream, forwarder.accepted)
    try:
        await session.serve()
    except SpdyError as exc:
        log.warning("port-forward to %s: %s", pod["metadata"]["name"], exc)
    except ConnectionError:
        pass
    finally:
        await forwarder.stop()
        await session.close()


async def portforward_stream(request: web.Request, forwarder: PortForwarder
                             ) -> web.StreamResponse:
    """Serve a port-forward request: SPDY in a WebSocket, or a plain SPDY/3.1 upgrade."""
    if request.headers.get("Upgrade", "").lower() == SPDY_UPGRADE.lower():
        return await _spdy_upgrade(request, forwarder)
    ws = web.WebSocketResponse(protocols=(TUNNEL_PROTOCOL,), max_msg_size=0, autoping=True)
    ready = ws.can_prepare(request)
    if not ready.ok or ready.protocol is None:
        raise ApiError(400, "BadRequest", "unable to upgrade connection: port-forward needs a "
                       f"WebSocket upgrade with subprotocol {TUNNEL_PROTOCOL} or an "
                       f"`Upgrade: {SPDY_UPGRADE}` request (kubectl port-forward does both)")
    await ws.prepare(request)

    async def read() -> bytes:
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                if msg.data:
                    return bytes(msg.data)
            elif msg.type == WSMsgType.TEXT:  # tunneling_connection.go: binary messages only
                raise SpdyError("invalid message type received (text) in the SPDY tunnel")
        return b""

    try:
        await _serve(forwarder, read, ws.send_bytes)
    finally:
        await ws.close()
    return ws


async def _spdy_upgrade(request: web.Request, forwarder: PortForwarder) -> web.StreamResponse:
    """httpstream.Handshake + spdy.NewResponseUpgrader: answer 101, then speak SPDY on the
    raw connection."""
    offered = [p.strip() for p in request.headers.getall("X-Stream-Protocol-Version", [])
               for p in p.split(",")]
    if offered and PROTOCOL not in offered:
        raise ApiError(403, "Forbidden", f"unable to upgrade: unable to negotiate protocol: "
                       f"client supports {offered}, server supports [{PROTOCOL}]")
    response = web.StreamResponse(status=101, headers={
        "Connection": "Upgrade", "Upgrade": SPDY_UPGRADE,
        **({"X-Stream-Protocol-Version": PROTOCOL} if offered else {})})
    await response.prepare(request)
    transport = request.transport
    if transport is None:
        return response
    incoming: asyncio.Queue[bytes] = asyncio.Queue()
    request.protocol.set_parser(_RawFeed(incoming))  # type: ignore[arg-type]
    try:
        await _serve(forwarder, incoming.get, response.write)
    finally:
        transport.close()
    return response


class _RawFeed:
    """Stands in for aiohttp's payload parser on an upgraded connection: hands on raw bytes."""

    def __init__(self, queue: asyncio.Queue[bytes]) -> None:
        self._queue = queue

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if data:
            self._queue.put_nowait(bytes(data))
        return False, b""

    def feed_eof(self) -> None:
        self._queue.put_nowait(b"")
