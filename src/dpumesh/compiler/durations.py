"""Istio duration strings ("1.5s", "300ms", "1m") to Envoy's protobuf duration form."""

from __future__ import annotations

import functools
import re

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 0.000001, "µs": 0.000001, "ns": 1e-9}
_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")


def parse_duration(value: object) -> float | None:
    """Seconds, or None when `value` is not a Go/protobuf duration string."""
    if not isinstance(value, str) or not value:
        return None
    return _parse(value)


@functools.lru_cache(maxsize=4096)
def _parse(value: str) -> float | None:
    """Read once per distinct string: a state repeats a few timeouts thousands of times."""
    pos, total = 0, 0.0
    for match in _PART.finditer(value):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return total if pos == len(value) else None


def envoy_duration(seconds: float) -> str:
    text = f"{seconds:.9f}".rstrip("0").rstrip(".")
    return f"{text}s"
