from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from support.compiled import Compiled

from dpumesh.compiler import MeshSettings, compile_node
from dpumesh.state import build_state, load_state

STATES = Path(__file__).parent / "states"


@pytest.fixture
def compile_dir():
    def run(name: str, node: str = "node-1", **mesh: Any) -> Compiled:
        state = load_state(STATES / name)
        return Compiled(compile_node(state, MeshSettings(**mesh), node), state)

    return run


@pytest.fixture
def compile_docs():
    def run(text: str, node: str = "node-1", **mesh: Any) -> Compiled:
        base = yaml.safe_load_all((STATES / "basic" / "cluster.yaml").read_text())
        docs = [d for d in base if d] + [d for d in yaml.safe_load_all(text) if d]
        state = build_state(docs)
        return Compiled(compile_node(state, MeshSettings(**mesh), node), state)

    return run
