"""Durations as Istio, Kubernetes and the Go tools write them: Go/protobuf durations in objects
(`1.5s`, `100ms`, `1m30s`), read by the embedded mesh and by the checks alike; Go's
time.ParseDuration and Duration.String() for the CLIs and twins that take and print them
(Flagger, linkerd, fortio, hey); and ages as kubectl's AGE column and istioctl's SYNCED print
them (5m12s, 3h, 12d). Kept free of other imports: forked twins import it."""

from __future__ import annotations

import re

# Go's time.ParseDuration, part by part: a number and a unit (src/time/format.go, unitMap).
_GO_PART = re.compile(r"(\d+\.?\d*|\.\d+)([a-zµμ]*)")
_UNIT_NS = {"ns": 1.0, "us": 1e3, "µs": 1e3, "μs": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9,
            "h": 3600e9}


class DurationError(ValueError):
    """Not a duration; the message names the field and shows how to write one."""


def go_duration_seconds(value: object, where: str) -> float:
    """A Go/protobuf duration in an object (`10s`, `1.5s`, `100ms`, `1m30s`) in seconds;
    `where` names the field in the error."""
    text = str(value).strip()
    try:
        if text[:1] in "+-":
            raise ValueError("signed")
        return parse_go_duration(text)
    except ValueError:
        raise DurationError(f"{where}: {value!r} is not a duration; write it like 10s, 500ms "
                            f"or 1m30s") from None


def parse_go_duration(text: str, unit: str = "s") -> float:
    """Go's time.ParseDuration, in `unit` (`s` by default, `us` for Jaeger's microseconds): a
    sign, `0`, fractions, ns to h; ValueError with Go's message on anything it refuses."""
    body = text[1:] if text[:1] in "+-" else text
    sign = -1.0 if text.startswith("-") else 1.0
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f'time: invalid duration "{text}"')
    total, position = 0.0, 0
    while position < len(body):
        part = _GO_PART.match(body, position)
        if part is None:
            raise ValueError(f'time: invalid duration "{text}"')
        number, part_unit = part.groups()
        if not part_unit:
            raise ValueError(f'time: missing unit in duration "{text}"')
        if part_unit not in _UNIT_NS:
            raise ValueError(f'time: unknown unit "{part_unit}" in duration "{text}"')
        total += float(number) * _UNIT_NS[part_unit]
        position = part.end()
    return sign * total / _UNIT_NS[unit]


def go_duration_text(seconds: float) -> str:
    """Go's Duration.String(): `1.2s`, `500ms`, `65.360704ms`, `1m30s`, `0s`."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _trim(ns / size) + unit
    hours, ns = divmod(ns, 3_600_000_000_000)
    minutes, ns = divmod(ns, 60_000_000_000)
    out = f"{hours}h" if hours else ""
    out += f"{minutes}m" if hours or minutes else ""
    return sign + out + _trim(ns / 1e9) + "s"


def _trim(value: float) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".")


def human_duration(seconds: float) -> str:
    """`duration.HumanDuration` (k8s.io/apimachinery/pkg/util/duration/duration.go)."""
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    whole = int(seconds)
    if whole < 120:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 10:
        return f"{minutes}m{whole % 60}s" if whole % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    years, days = hours // (24 * 365), (hours // 24) % 365
    if hours < 24 * 365 * 8:
        return f"{years}y{days}d" if days else f"{years}y"
    return f"{years}y"
