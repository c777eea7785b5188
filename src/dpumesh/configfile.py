"""Reading and writing Envoy resource files.

The compiler writes `lds.yaml` / `cds.yaml` as compact JSON, which is also YAML
(Envoy and any YAML reader load it): a node's config reaches tens of
megabytes and JSON is written and read by C code, YAML by Python. The readable
view of a bundle is `describe.txt`.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import yaml

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def compact_json(value: Any) -> bytes:
    """Compact JSON, keys in insertion order: what every Envoy resource file is written with.

    orjson encodes the config's tens of megabytes about four times faster than the standard library and gives
    the same bytes for ASCII text; other text is written as UTF-8 rather than \\u escapes, which every JSON
    reader accepts.
    """
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        # Keys other than strings (as json.dumps writes them): an option that makes every encoding slower.
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


def dump_resources(data: Any) -> bytes:
    return compact_json(data) + b"\n"


def report_item(value: Any) -> str:
    """One line of a `dump_report` report."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()


def dump_report(data: dict[str, Any], encoded: dict[str, list[str]] | None = None) -> bytes:
    """A JSON report one item per line: readable and diffable, and written by the C encoder even when large.

    Each top-level key is one line, except lists and mappings of lists, whose items get a line each.
    `encoded` gives the lines (`report_item`) of some lists' items, when the caller has them already.
    """
    compact = {"separators": (",", ":"), "sort_keys": True}
    lines = []
    keys = sorted(data)
    for i, key in enumerate(keys):
        value = data[key]
        end = "," if i < len(keys) - 1 else ""
        if isinstance(value, list) and value:
            items = encoded[key] if encoded and key in encoded else [report_item(item) for item in value]
            lines += [f"{json.dumps(key)}:[", *[f"  {x}," for x in items[:-1]], f"  {items[-1]}", f"]{end}"]
        else:
            lines.append(f"{json.dumps(key)}:{json.dumps(value, **compact)}{end}")
    return ("{\n" + "\n".join(lines) + "\n}\n").encode()


def load_config(data: bytes | str) -> Any:
    """A config file's content, JSON or YAML."""
    text = data.decode() if isinstance(data, bytes) else data
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass  # YAML flow mapping, not JSON
    return yaml.load(text, Loader=_LOADER)
