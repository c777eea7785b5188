"""Compiling several nodes of one state shares the node-independent work."""

from __future__ import annotations

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
