"""Container log files in the CRI format the real kubelet reads: `<time> <stream> <P|F> <text>`.

The runtime writes the log itself from the child's pipes and stamps every line on arrival, which is
what makes `kubectl logs --timestamps` and `--since` exact. `F` ends a line; `P` is a piece of a
line that was too long for one record (or the last bytes before the process exited without a
newline).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

MAX_RECORD = 16 * 1024


def timestamp(ns: int | None = None) -> str:
    """RFC 3339 with nanoseconds, fixed width, so that timestamps also sort as strings."""
    ns = time.time_ns() if ns is None else ns
    seconds, fraction = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


def encode(stream: str, text: bytes, complete: bool, stamp: str | None = None) -> bytes:
    return b"%s %s %s %s\n" % ((stamp or timestamp()).encode(), stream.encode(),
                               b"F" if complete else b"P", text)


class LineSplitter:
    """Turns the bytes of one output stream into CRI records."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self._pending = b""

    def feed(self, data: bytes) -> bytes:
        self._pending += data
        out: list[bytes] = []
        stamp = timestamp()
        while True:
            newline = self._pending.find(b"\n")
            if newline < 0:
                break
            line, self._pending = self._pending[:newline], self._pending[newline + 1:]
            while len(line) > MAX_RECORD:
                out.append(encode(self.stream, line[:MAX_RECORD], False, stamp))
                line = line[MAX_RECORD:]
            out.append(encode(self.stream, line, True, stamp))
        while len(self._pending) > MAX_RECORD:
            out.append(encode(self.stream, self._pending[:MAX_RECORD], False, stamp))
            self._pending = self._pending[MAX_RECORD:]
        return b"".join(out)

    def flush(self) -> bytes:
        """The unterminated rest, when the stream ends."""
        rest, self._pending = self._pending, b""
        return encode(self.stream, rest, False) if rest else b""


@dataclass(frozen=True)
class Record:
    stamp: str
    stream: str
    text: bytes
    complete: bool


def parse(blob: bytes) -> tuple[list[Record], int]:
    """Records in `blob`, and how many bytes they used (a trailing partial write is left)."""
    records: list[Record] = []
    used = 0
    while True:
        end = blob.find(b"\n", used)
        if end < 0:
            return records, used
        parts = blob[used:end].split(b" ", 3)
        used = end + 1
        if len(parts) == 4:
            stamp, stream, tag, text = parts
            records.append(Record(stamp.decode(), stream.decode(), text, tag == b"F"))


def lines(records: Iterable[Record]) -> Iterator[list[Record]]:
    """Group records into lines: zero or more `P` records closed by an `F` (or the file's end)."""
    line: list[Record] = []
    for record in records:
        line.append(record)
        if record.complete:
            yield line
            line = []
    if line:
        yield line


class Renderer:
    """Turns records back into the text `kubectl logs` shows, optionally stamping each line."""

    def __init__(self, timestamps: bool) -> None:
        self.timestamps = timestamps
        self._line_start = True

    def render(self, records: Iterable[Record]) -> bytes:
        out: list[bytes] = []
        for record in records:
            if self._line_start and self.timestamps:
                out.append(record.stamp.encode() + b" ")
            out.append(record.text)
            if record.complete:
                out.append(b"\n")
            self._line_start = record.complete
        return b"".join(out)
