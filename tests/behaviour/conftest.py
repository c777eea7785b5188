"""Behaviour tests: the real Envoy with a compiled bundle, real nftables, real traffic between namespaces.

They need root (network namespaces, nftables, TPROXY); anything else missing is a failure, not a skip.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shared `support` package

from support.harness import MeshLab

STATES = Path(__file__).parent / "states"


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces, nftables and TPROXY")


@pytest.fixture(scope="session")
def outbound_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshLab]:
    """One node of tests/behaviour/states/outbound, mesh default ALLOW_ANY, shared by the outbound tests."""
    require_root()
    lab = MeshLab(tmp_path_factory.mktemp("outbound-lab"), STATES / "outbound")
    with lab:
        yield lab
