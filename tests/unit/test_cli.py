"""The dpumesh command: compile writes a complete, validated bundle once; images lists what to mirror."""

from __future__ import annotations

import json
from pathlib import Path

from dpumesh.cli import main

STATE = Path(__file__).parent / "compiler" / "states" / "basic"


def test_compile_writes_a_validated_bundle_and_is_idempotent(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["compile", "--state", str(STATE), "--node", "node-1", "--out", str(out)]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "written" in first
    manifest = json.loads((out / "MANIFEST.json").read_text())
    for rel in manifest["files"]:
        assert (out / rel).is_file(), rel
    assert main(args) == 0
    assert "unchanged" in capsys.readouterr().out


def test_compile_all_nodes_writes_one_directory_per_node(tmp_path, capsys):
    assert main(["compile", "--state", str(STATE), "--all-nodes", "--out", str(tmp_path), "--no-validate"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node-1", "node-2"]


def test_unknown_mesh_setting_is_refused(tmp_path, capsys):
    bad = tmp_path / "mesh.yaml"
    bad.write_text("trust_domian: example.org\n")
    code = main(
        ["compile", "--state", str(STATE), "--node", "node-1", "--out", str(tmp_path / "o"), "--mesh-config", str(bad)]
    )
    assert code == 1
    assert "unknown mesh settings ['trust_domian']" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_images_lists_what_to_pull_and_where_it_goes(capsys):
    assert main(["images", "--format", "refs"]) == 0
    refs = capsys.readouterr().out.split()
    assert any(r.endswith("multus-cni:v4.2.2-thick") for r in refs)
    assert main(["images", "--mirror", "mirror.example:5000"]) == 0
    table = capsys.readouterr().out.splitlines()
    multus = next(line for line in table if "multus-cni" in line)
    assert multus.split()[-1].startswith("mirror.example:5000/")


def test_compile_all_nodes_replaces_no_directory_when_envoy_refuses_one_node(tmp_path, capsys, monkeypatch):
    """Envoy checks every node before any directory is replaced: one refused node leaves them all as they were."""
    args = ["compile", "--state", str(STATE), "--all-nodes", "--out", str(tmp_path)]
    assert main(args) == 0
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    capsys.readouterr()

    import dpumesh.bundle
    import dpumesh.compiler

    real = dpumesh.compiler.compile_node

    def refused_on_node_2(state, mesh, node, only_pod=""):
        bundle = real(state, mesh, node, only_pod)
        if node == "node-2":  # a listener Envoy refuses: a port out of range
            lds = bundle.files["envoy/lds.yaml"].replace(b'"port_value":15006', b'"port_value":99999', 1)
            assert lds != bundle.files["envoy/lds.yaml"]
            bundle.files["envoy/lds.yaml"] = lds
        bundle.files["extra.txt"] = b"a change on every node\n"
        return bundle

    monkeypatch.setattr(dpumesh.compiler, "compile_node", refused_on_node_2)
    assert main(args) != 0
    err = capsys.readouterr().err
    assert "node-2: Envoy rejected the config" in err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # node-1 untouched too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node-1", "node-2"]  # no staging left behind
