"""`compile_sidecar`: one pod's own sidecar config, the baseline the benchmarks compare the shared proxy with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.compiled import Compiled, pod_ip

from dpumesh.bundle import validate_with_envoy, write_tree
from dpumesh.compiler import MeshSettings, compile_node, compile_sidecar
from dpumesh.errors import DpumeshError
from dpumesh.state import load_state

STATES = Path(__file__).parent / "states"


def _source_ips(compiled: Compiled) -> set[str]:
    return {ip for ips in compiled.source_classes().values() for ip in ips}


def test_a_sidecar_config_serves_its_pod_alone():
    state = load_state(STATES / "features")
    shared = Compiled(compile_node(state, MeshSettings(), "node-1"), state)
    local = sorted(ip for ip in _source_ips(shared))
    assert len(local) > 1, "the fixture needs several meshed pods on node-1"
    pod = next(p for p in state.pods if p.node == "node-1" and p.meshed)
    sidecar = Compiled(compile_sidecar(state, MeshSettings(), pod.meta.key), state)
    assert _source_ips(sidecar) == {pod_ip(sidecar, pod.meta.key)}
    steering = json.loads(sidecar.bundle.files["steering.json"])
    assert [p["ip"] for p in steering["pods"]] == [pod.ip]
    assert sidecar.bundle.stats["local_pods"] == 1 and sidecar.bundle.stats["classes"] == 1


def test_the_sidecars_of_a_node_together_need_the_clusters_of_its_shared_proxy():
    state = load_state(STATES / "features")
    shared = Compiled(compile_node(state, MeshSettings(), "node-1"), state)
    union: set[str] = set()
    for pod in [p for p in state.pods if p.node == "node-1" and p.meshed]:
        union |= set(Compiled(compile_sidecar(state, MeshSettings(), pod.meta.key), state).cluster_names())
    assert len(union) > 5
    assert union == set(shared.cluster_names())


@pytest.mark.envoy
def test_a_sidecar_config_passes_envoy_validate(tmp_path):
    state = load_state(STATES / "features")
    mesh = MeshSettings()
    for pod in [p for p in state.pods if p.meshed][:3]:
        bundle = compile_sidecar(state, mesh, pod.meta.key)
        target = tmp_path / pod.meta.key.replace("/", "_")
        assert write_tree(target, bundle.files, lambda staged: validate_with_envoy(staged, mesh.proxy.config_dir))


def test_unknown_or_unmeshed_pods_have_no_sidecar():
    state = load_state(STATES / "features")
    with pytest.raises(DpumeshError, match="not in the cluster state"):
        compile_sidecar(state, MeshSettings(), "nowhere/nobody")
    plain = next((p for p in state.pods if not p.meshed), None)
    assert plain is not None, "the fixture needs a pod outside the mesh"
    with pytest.raises(DpumeshError, match="not in the mesh"):
        compile_sidecar(state, MeshSettings(), plain.meta.key)
