"""Name the cluster object and field behind a value Envoy refused.

Envoy's refusals quote the offending piece ("invalid escape sequence: \\Z",
"invalid repetition size: {1001}") but know nothing of Istio objects. The
fields of the cluster state whose string holds that piece are what the user
has to fix.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from dpumesh.state.model import ClusterState

_PIECE = re.compile(r":\s*(\S+)\s*$")


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")


def rejected_fields(state: ClusterState, message: str) -> list[str]:
    """`Kind ns/name: spec.field = 'value'` for each Istio field holding the piece Envoy's message ends with."""
    found = _PIECE.search(message.strip())
    if not found:
        return []
    piece = found.group(1)
    hits = [
        (obj, path, text)
        for kind in sorted(state.istio)
        for obj in state.istio[kind]
        for path, text in _strings(obj.spec, "spec")
        if piece in text
    ]
    regex_hits = [h for h in hits if "regex" in h[1].lower()]  # Envoy's own parsing refuses regexes most
    return [f"{obj.kind} {obj.meta.key}: {path} = {text!r}" for obj, path, text in (regex_hits or hits)]
