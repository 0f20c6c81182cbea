"""SPDY/3.1, server side, as kubectl's port-forward speaks it.

Follows the framer of `github.com/moby/spdystream` (`spdy/read.go`, `spdy/write.go`,
`spdy/dictionary.go`) and its connection (`connection.go`), which client-go wraps in
`k8s.io/apimachinery/pkg/util/httpstream/spdy`. Frames: a control frame is
`1|version(15)|type(16)|flags(8)|length(24)|payload`, a data frame `0|stream id(31)|flags(8)|
length(24)|data`. Header blocks are zlib-compressed with the SPDY/3 dictionary, one compression
context per direction for the whole connection, each block ending in a sync flush.

Like spdystream (and so the kubelet), there is no flow control: WINDOW_UPDATE and SETTINGS are
read and ignored, and no window is enforced. The client opens every stream (odd ids); the server
accepts one with a SYN_REPLY or refuses it with RST_STREAM, answers PINGs, and ends with GOAWAY.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)
VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = (
    1, 2, 3, 4, 6, 7, 8, 9)
FLAG_FIN = 0x01
# RST_STREAM status codes (spdy/types.go RstStreamStatus)
PROTOCOL_ERROR, CANCEL = 1, 5
MAX_DATA = 32 * 1024  # bytes per DATA frame we send; the format allows 2**24 - 1

_WORDS = (
    "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset",
    "accept-encoding", "accept-language", "accept-ranges", "age", "allow", "authorization",
    "cache-control", "connection", "content-base", "content-encoding", "content-language",
    "content-length", "content-location", "content-md5", "content-range", "content-type", "date",
    "etag", "expect", "expires", "from", "host", "if-match", "if-modified-since", "if-none-match",
    "if-range", "if-unmodified-since", "last-modified", "location", "max-forwards", "pragma",
    "proxy-authenticate", "proxy-authorization", "range", "referer", "retry-after", "server",
    "te", "trailer", "transfer-encoding", "upgrade", "user-agent", "vary", "via", "warning",
    "www-authenticate", "method", "get", "status", "200 OK", "version", "HTTP/1.1", "url",
    "public", "set-cookie", "keep-alive", "origin",
)
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 "
    "Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 "
    "Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, "
    "Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.")
# The SPDY/3 header dictionary: length-prefixed words, then a run of text (spdy/dictionary.go).
DICTIONARY = b"".join(struct.pack(">I", len(w)) + w.encode()
                      for w in _WORDS) + _TAIL.encode()

Headers = dict[str, list[str]]


class SpdyError(Exception):
    """The peer sent something that is not SPDY/3.1: the connection cannot go on."""


@dataclass(frozen=True)
class ControlFrame:
    type: int
    flags: int
    payload: bytes


@dataclass(frozen=True)
class DataFrame:
    stream_id: int
    flags: int
    data: bytes


Frame = ControlFrame | DataFrame


class FrameParser:
    """Cuts a byte stream (which a WebSocket tunnel splits anywhere) into frames."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= 8:
            first, flags_length = struct.unpack_from(">II", self._buffer)
            length = flags_length & 0xFFFFFF
            if len(self._buffer) < 8 + length:
                break
            payload = bytes(self._buffer[8:8 + length])
            del self._buffer[:8 + length]
            flags = flags_length >> 24
            if first & 0x80000000:
                version = (first >> 16) & 0x7FFF
                if version != VERSION:
                    raise SpdyError(f"unsupported SPDY version {version} (this server speaks 3)")
                frames.append(ControlFrame(first & 0xFFFF, flags, payload))
            else:
                frames.append(DataFrame(first & 0x7FFFFFFF, flags, payload))
        return frames


class HeaderCodec:
    """The two zlib contexts of a connection: one to inflate what the peer sends, one to
    deflate what we send (Go's `zlib.NewWriterLevelDict(..., BestCompression, dictionary)`)."""

    def __init__(self) -> None:
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._deflate = zlib.compressobj(zlib.Z_BEST_COMPRESSION, zdict=DICTIONARY)

    def decode(self, block: bytes) -> Headers:
        try:
            raw = self._inflate.decompress(block)
        except zlib.error as exc:
            raise SpdyError(f"bad compressed header block: {exc}") from None
        try:
            (count,), offset = struct.unpack_from(">I", raw), 4
            headers: Headers = {}
            for _ in range(count):
                (size,) = struct.unpack_from(">I", raw, offset)
                name = raw[offset + 4:offset + 4 + size].decode("latin-1").lower()
                offset += 4 + size
                (size,) = struct.unpack_from(">I", raw, offset)
                value = raw[offset + 4:offset + 4 + size].decode("latin-1")
                offset += 4 + size
                headers.setdefault(name, []).extend(value.split("\0"))
        except struct.error:
            raise SpdyError("truncated header block") from None
        return headers

    def encode(self, headers: Headers) -> bytes:
        raw = bytearray(struct.pack(">I", len(headers)))
        for name, values in headers.items():
            key, value = name.lower().encode("latin-1"), "\0".join(values).encode("latin-1")
            raw += struct.pack(">I", len(key)) + key + struct.pack(">I", len(value)) + value
        return self._deflate.compress(bytes(raw)) + self._deflate.flush(zlib.Z_SYNC_FLUSH)


def control(frame_type: int, payload: bytes, flags: int = 0) -> bytes:
    return struct.pack(">HHI", 0x8000 | VERSION, frame_type, flags << 24 | len(payload)) + payload


def data_frame(stream_id: int, data: bytes, fin: bool = False) -> bytes:
    return struct.pack(">II", stream_id, (FLAG_FIN if fin else 0) << 24 | len(data)) + data


def rst_stream(stream_id: int, status: int) -> bytes:
    return control(RST_STREAM, struct.pack(">II", stream_id, status))


def goaway(last_stream_id: int) -> bytes:
    return control(GOAWAY, struct.pack(">II", last_stream_id, 0))


@dataclass
class Stream:
    """One client-opened stream: what the client sent (a queue, ending in b"" on FIN or reset)
    and a way to answer on it."""

    session: Session
    id: int
    headers: Headers
    _incoming: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    remote_closed: bool = False
    local_closed: bool = False

    def header(self, name: str) -> str:
        return (self.headers.get(name.lower()) or [""])[0]

    async def read(self) -> bytes:
        """The next chunk from the client; b"" once it has closed its side."""
        return await self._incoming.get()

    async def write(self, data: bytes) -> None:
        for start in range(0, len(data), MAX_DATA):
            if self.local_closed:
                return
            await self.session.send(data_frame(self.id, data[start:start + MAX_DATA]))

    async def close(self) -> None:
        """Half-close: an empty DATA frame with FIN, as spdystream's `Stream.Close`."""
        if not self.local_closed:
            self.local_closed = True
            await self.session.send(data_frame(self.id, b"", fin=True))

    def finish_remote(self) -> None:
        if not self.remote_closed:
            self.remote_closed = True
            self._incoming.put_nowait(b"")


StreamCheck = Callable[[Stream], str | None]
StreamHandler = Callable[[Stream], None]


class Session:
    """The server end of one SPDY connection over any byte transport.

    `check` vets a new stream's headers (an error text refuses it with RST_STREAM, as
    spdystream's `Reset` does); `accepted` gets each stream once its SYN_REPLY is sent."""

    def __init__(self, read: Callable[[], Awaitable[bytes]],
                 write: Callable[[bytes], Awaitable[None]],
                 check: StreamCheck, accepted: StreamHandler) -> None:
        self._read = read
        self._write = write
        self._check = check
        self._accepted = accepted
        self._codec = HeaderCodec()
        self._parser = FrameParser()
        self._send_lock = asyncio.Lock()
        self.streams: dict[int, Stream] = {}
        self._last_id = 0

    async def send(self, frame: bytes) -> None:
        async with self._send_lock:
            await self._write(frame)

    async def _send_headers(self, frame_type: int, stream_id: int, headers: Headers) -> None:
        async with self._send_lock:  # compress and send in one step: the zlib context is shared
            block = self._codec.encode(headers)
            await self._write(control(frame_type, struct.pack(">I", stream_id) + block))

    async def serve(self) -> None:
        """Read frames until the client says GOAWAY or goes away; then every stream ends."""
        try:
            while data := await self._read():
                for frame in self._parser.feed(data):
                    if not await self._handle(frame):
                        return
        finally:
            for stream in self.streams.values():
                stream.finish_remote()

    async def close(self) -> None:
        """GOAWAY naming the last stream we accepted (kubelet closes its side so)."""
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.send(goaway(self._last_id))

    async def _handle(self, frame: Frame) -> bool:
        if isinstance(frame, DataFrame):
            stream = self.streams.get(frame.stream_id)
            if stream is not None:
                if frame.data:
                    stream._incoming.put_nowait(frame.data)
                if frame.flags & FLAG_FIN:
                    stream.finish_remote()
            return True
        payload = frame.payload
        if frame.type == SYN_STREAM:
            await self._syn_stream(frame)
        elif frame.type == RST_STREAM:
            stream = self.streams.pop(_stream_id(payload), None)
            if stream is not None:
                stream.local_closed = True
                stream.finish_remote()
        elif frame.type == PING:
            await self.send(control(PING, payload[:4]))  # echo: the client's ids are odd
        elif frame.type == GOAWAY:
            return False
        elif frame.type == HEADERS:
            self._codec.decode(payload[4:])  # keeps the zlib context in step; nothing to do
        elif frame.type not in (SETTINGS, WINDOW_UPDATE, SYN_REPLY):
            raise SpdyError(f"unknown SPDY control frame type {frame.type}")
        return True

    async def _syn_stream(self, frame: ControlFrame) -> None:
        if len(frame.payload) < 10:
            raise SpdyError("SYN_STREAM frame too short")
        stream_id = _stream_id(frame.payload)
        headers = self._codec.decode(frame.payload[10:])
        if stream_id % 2 == 0 or stream_id <= self._last_id:
            await self.send(rst_stream(stream_id, PROTOCOL_ERROR))
            return
        self._last_id = stream_id
        stream = Stream(self, stream_id, headers)
        problem = self._check(stream)
        if problem is not None:
            log.warning("SPDY stream %d rejected: %s", stream_id, problem)
            await self.send(rst_stream(stream_id, CANCEL))
            return
        self.streams[stream_id] = stream
        await self._send_headers(SYN_REPLY, stream_id, {})
        if frame.flags & FLAG_FIN:
            stream.finish_remote()
        self._accepted(stream)

    def forget(self, stream: Stream) -> None:
        self.streams.pop(stream.id, None)


def _stream_id(payload: bytes) -> int:
    if len(payload) < 4:
        raise SpdyError("control frame too short for a stream id")
    return struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF
