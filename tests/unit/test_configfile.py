"""The encoder every Envoy resource and report is written with."""

from __future__ import annotations

import json

from dpumesh.configfile import compact_json


def test_compact_json_writes_what_the_standard_library_writes_for_ascii():
    value = {"b": [1, 2.5, True, None], "a": {"nested": 'x\\y "quoted"'}, "regex": "team\\-001|team\\-002"}
    assert compact_json(value) == json.dumps(value, separators=(",", ":")).encode()


def test_compact_json_writes_keys_that_are_not_strings_as_the_standard_library_does():
    value = {8080: {"ports": {1: "one"}}, "name": "x"}
    assert compact_json(value) == json.dumps(value, separators=(",", ":")).encode()
