"""RE2 checks: Envoy matches regexes with RE2, which has no look-around or backreferences."""

from __future__ import annotations

import re

_UNSUPPORTED = [
    (re.compile(r"\(\?[=!]"), "look-ahead is not supported by RE2"),
    (re.compile(r"\(\?<[=!]"), "look-behind is not supported by RE2"),
    (re.compile(r"\\[1-9]"), "backreferences are not supported by RE2"),
    (re.compile(r"\(\?P=\w+\)"), "named backreferences are not supported by RE2"),
    (re.compile(r"[*+?}]\+"), "possessive quantifiers are not supported by RE2"),
    (re.compile(r"\(\?>"), "atomic groups are not supported by RE2"),
]


def re2_problem(pattern: object) -> str | None:
    """Why `pattern` is not a valid RE2 regex, or None."""
    if not isinstance(pattern, str):
        return f"{pattern!r} is not a string"
    for rx, why in _UNSUPPORTED:
        if rx.search(pattern):
            return f"{pattern!r}: {why}"
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"{pattern!r} is not a valid regex: {exc}"
    return None
