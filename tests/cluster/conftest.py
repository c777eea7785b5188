"""The real-cluster suite: applies both Kubernetes stages to the API server in DPUMESH_TEST_KUBECONFIG.

Use a disposable cluster: a bare kube-apiserver + etcd (no nodes) is enough, and a real
cluster will get multus, the SR-IOV DaemonSets and the istio-dpu components.
Without DPUMESH_TEST_KUBECONFIG every test here is skipped, and the run says so loudly.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

KUBECONFIG = os.environ.get("DPUMESH_TEST_KUBECONFIG", "")
BANNER = (
    "SKIPPED: the real-cluster suite did NOT run - DPUMESH_TEST_KUBECONFIG is not set. "
    "Point it at a disposable API server (a bare kube-apiserver + etcd is enough)."
)


def pytest_report_header(config):
    return [f"dpumesh cluster suite: {'API server from ' + KUBECONFIG if KUBECONFIG else BANNER}"]


def pytest_collection_modifyitems(config, items):
    if KUBECONFIG:
        return
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(Path(__file__).resolve().parent):
            item.add_marker(pytest.mark.skip(reason=BANNER))


def pytest_terminal_summary(terminalreporter):
    if not KUBECONFIG:
        terminalreporter.write_sep("!", BANNER, red=True, bold=True)


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    if not Path(KUBECONFIG).is_file():
        pytest.fail(f"DPUMESH_TEST_KUBECONFIG={KUBECONFIG} is not a file")
    return KUBECONFIG
