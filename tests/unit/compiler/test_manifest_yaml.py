"""Manifest files read as PyYAML's safe loader reads them, including the YAML features manifests rarely use."""

from __future__ import annotations

import pytest
import yaml

from dpumesh.errors import InputError
from dpumesh.state.load import load_manifest_dir

CASES = {
    "anchors and merge keys": "a: &x {b: 1, c: [1, 2]}\nd: *x\ne:\n  <<: *x\n  f: 3\n",
    "scalar types": (
        "t: 2024-01-01T00:00:00Z\nday: 2024-01-01\nhex: 0x1F\noct: 0o17\nf: 1.5e3\nn: ~\nempty:\nb: yes\n"
        "B: True\ninf: .inf\ns: !!str 12\nbin: !!binary aGVsbG8=\nold: 010\nsep: 1_000\nsexa: 190:20:30\n"
    ),
    "collection tags": "set: !!set {a, b}\nom: !!omap [a: 1, b: 2]\npairs: !!pairs [a: 1, a: 2]\n",
    "documents": "---\n---\na: 1\n...\n--- {b: [1, 2]}\n",
    "repeated key": "{a: 1, a: 2}\n",
    "quoted words": "a: 'true'\nb: \"1\"\nc: true\nd: '~'\n",
}


@pytest.mark.parametrize("text", CASES.values(), ids=CASES.keys())
def test_documents_are_what_the_safe_loader_gives(tmp_path, text):
    (tmp_path / "objects.yaml").write_text(text)
    expected = [d for d in yaml.safe_load_all(text) if d is not None]
    loaded = load_manifest_dir(tmp_path)
    assert [{k: v for k, v in d.items() if k != "_source"} for d in loaded] == expected


def test_an_alias_is_one_shared_object(tmp_path):
    (tmp_path / "objects.yaml").write_text("kind: X\nlabels: &l {app: a}\nselector: *l\n")
    [obj] = load_manifest_dir(tmp_path)
    assert obj["labels"] is obj["selector"]


@pytest.mark.parametrize("text", ["k: !!map [1]\n", "k: !custom bar\n", "a: [1\n", "? [1, 2]\n: x\n"])
def test_what_the_safe_loader_refuses_is_an_input_error(tmp_path, text):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(yaml.YAMLError):
        list(yaml.safe_load_all(text))
    with pytest.raises(InputError, match=r"bad\.yaml"):
        load_manifest_dir(tmp_path)
