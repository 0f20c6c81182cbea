"""Istio field values converted to Envoy's: durations, percentages, RE2 regexes.

Each converter raises `ConfigError` naming the field and the fix, so one bad object is reported
and skipped instead of breaking the configuration of every proxy.
"""

from __future__ import annotations

import re

from labs.duration import DurationError, go_duration_seconds

# Constructs Python accepts but RE2 (Envoy's regex engine) rejects.
_NOT_RE2 = re.compile(r"\(\?<?[=!]|\\[1-9]")


class ConfigError(ValueError):
    """An Istio object the mesh cannot translate; the message says where and how to fix it."""


def duration(value: object, where: str) -> str:
    """A Go/protobuf duration (`10s`, `1.5s`, `100ms`, `1m30s`) as Envoy's `<seconds>s`."""
    try:
        return seconds_text(go_duration_seconds(value, where))
    except DurationError as exc:
        raise ConfigError(str(exc)) from None


def seconds_text(seconds: float) -> str:
    whole = f"{seconds:.9f}".rstrip("0").rstrip(".")
    return f"{whole}s"


def percent(value: object, where: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {value!r} is not a number; write a percentage such "
                          f"as 50 or 0.5") from None
    if not 0 <= number <= 100:
        raise ConfigError(f"{where}: {number} is outside 0..100")
    return number


def fractional_percent(value: float) -> dict[str, object]:
    """Istio's translation of a percentage: parts per million keep fractions like 0.1 %."""
    return {"numerator": round(value * 10000), "denominator": "MILLION"}


def regex(value: object, where: str) -> str:
    """An RE2 pattern for Envoy's `safe_regex`, checked here so Envoy never rejects the file."""
    text = str(value)
    if _NOT_RE2.search(text):
        raise ConfigError(f"{where}: {text!r} uses lookaround or a backreference, which RE2 "
                          f"(Istio's and Envoy's regex engine) does not support")
    try:
        re.compile(text)
    except re.error as exc:
        raise ConfigError(f"{where}: {text!r} is not a valid regular expression ({exc})") from None
    return text


def integer(value: object, where: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{where}: {value!r} is not an integer")
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not an integer") from None
    if number < minimum:
        raise ConfigError(f"{where}: {number} is below the minimum {minimum}")
    return number


def istio_config_metadata(resource_path: str, obj: dict) -> dict:
    """Envoy metadata naming the Istio object a route or cluster came from, as istiod writes it
    (`istioctl proxy-config` and `labs.proxy` show it in their VIRTUAL SERVICE / DESTINATION
    RULE columns). `resource_path` is e.g. "virtual-service"."""
    meta = obj.get("metadata", {})
    path = (f"/apis/networking.istio.io/v1/namespaces/{meta.get('namespace', '')}/"
            f"{resource_path}/{meta.get('name', '')}")
    return {"filter_metadata": {"istio": {"config": path}}}
