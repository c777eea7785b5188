"""Compiling several nodes of one state shares the node-independent work."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from dpumesh.compiler import MeshSettings, compile_node
from dpumesh.state import load_state

STATES = Path(__file__).parent / "states"


def test_nodes_compiled_from_one_state_equal_nodes_compiled_alone():
    """The node-independent work is shared between the nodes of one state; it must not leak between them."""
    shared_state = load_state(STATES / "features")
    together = {node: compile_node(shared_state, MeshSettings(), node).files for node in ("node-1", "node-2")}
    for node in ("node-1", "node-2"):
        assert compile_node(load_state(STATES / "features"), MeshSettings(), node).files == together[node]
    assert together["node-1"]["envoy/lds.yaml"] != together["node-2"]["envoy/lds.yaml"]


def test_nodes_with_other_proxy_roots_share_one_build_and_keep_their_own_paths():
    """Where a SoC keeps its files is named only by its bootstrap: hosts with other roots share the cached build,
    and each bootstrap still names its own root. A setting the shared parts use (a mark) gets its own build."""
    state = load_state(STATES / "features")
    soc_a = MeshSettings(proxy=MeshSettings().proxy.under("/srv/a/proxy"))
    soc_b = MeshSettings(proxy=MeshSettings().proxy.under("/srv/b/proxy"))
    first, second = compile_node(state, soc_a, "node-1"), compile_node(state, soc_b, "node-1")
    assert [key for key in state.derived if key[0] == "checked"] == [("checked", soc_a.shared_key())]
    assert first.files["envoy/lds.yaml"] == second.files["envoy/lds.yaml"]
    assert first.files["envoy/cds.yaml"] == second.files["envoy/cds.yaml"]
    assert b"/srv/a/proxy/current/envoy/lds.yaml" in first.files["envoy/bootstrap.yaml"]
    assert b"/srv/b/proxy/current/envoy/lds.yaml" in second.files["envoy/bootstrap.yaml"]
    assert b"/srv/a/" not in second.files["envoy/bootstrap.yaml"]
    alone = compile_node(load_state(STATES / "features"), soc_b, "node-1")
    assert alone.files == second.files

    marked = MeshSettings(proxy=replace(soc_a.proxy, capture_mark=7))
    assert marked.shared_key() != soc_a.shared_key()
    assert compile_node(state, marked, "node-1").files["envoy/cds.yaml"] != first.files["envoy/cds.yaml"]
    assert len([key for key in state.derived if key[0] == "checked"]) == 2
