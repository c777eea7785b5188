"""Lab end-to-end tests: real network namespaces, nftables and Envoy. They need root."""

from __future__ import annotations

import os

import pytest

if os.geteuid() != 0:
    pytest.skip("lab tests need root (network namespaces, nftables, TPROXY)", allow_module_level=True)


@pytest.fixture(scope="session", autouse=True)
def lab_dir(tmp_path_factory: pytest.TempPathFactory):
    """A private lab directory; the lab is taken down at the end even when a test fails."""
    from dpumesh.lab import paths
    from dpumesh.lab.apply import lab_down

    running = paths.lab_dir()  # the lab `make lab` brought up (or the one DPUMESH_LAB_DIR names)
    if running.exists():
        # Its namespaces, fabric and proxy ports are the ones these tests create: they would fail one by one.
        pytest.fail(f"a lab is up ({running}); take it down first: make lab-down", pytrace=False)
    directory = tmp_path_factory.mktemp("lab")
    previous = os.environ.get("DPUMESH_LAB_DIR")
    os.environ["DPUMESH_LAB_DIR"] = str(directory)
    lab_down()
    try:
        yield directory
    finally:
        lab_down()
        if previous is None:
            os.environ.pop("DPUMESH_LAB_DIR", None)
        else:
            os.environ["DPUMESH_LAB_DIR"] = previous
