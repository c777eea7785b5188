"""The synthetic cluster generator: deterministic, balanced, and valid compiler input."""

from __future__ import annotations

from collections import Counter

import pytest
import yaml

from benchmarks.generate import Sizes, generate, main, write_state
from dpumesh.bundle import validate_with_envoy, write_tree
from dpumesh.compiler import MeshSettings, compile_node, compile_sidecar
from dpumesh.state import build_state, load_state

# Three namespaces: one with a Sidecar scope, one with a PeerAuthentication, two with AuthorizationPolicies.
SMALL = Sizes(services=12, pods=16, nodes=2, virtual_services=6, destination_rules=5, namespaces=3, seed=7)


def _objects(files: dict[str, bytes]) -> list[dict]:
    return [doc for data in files.values() for doc in yaml.safe_load_all(data) if doc]


def test_same_seed_same_bytes_other_seed_other_cluster(tmp_path):
    write_state(SMALL, tmp_path / "a")
    flags = "--services 12 --pods 16 --nodes 2 --virtual-services 6 --destination-rules 5 --namespaces 3 --seed 7"
    main([*flags.split(), "--out", str(tmp_path / "b")])
    first = {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()}
    second = {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()}
    assert first == second == generate(SMALL)
    other = generate(Sizes(**{**SMALL.__dict__, "seed": 8}))
    assert other.keys() == first.keys() and other != first


def test_counts_and_balance():
    objects = _objects(generate(SMALL))
    kinds = Counter(o["kind"] for o in objects)
    assert kinds["Node"] == 2 and kinds["Service"] == 12 and kinds["Pod"] == 16
    assert kinds["VirtualService"] == 6 and kinds["DestinationRule"] == 5
    assert kinds["Sidecar"] == 1 and kinds["AuthorizationPolicy"] == 4
    assert kinds["PeerAuthentication"] == 2  # mesh-wide STRICT + one namespace PERMISSIVE
    per_node = Counter(o["spec"]["nodeName"] for o in objects if o["kind"] == "Pod")
    assert per_node == {"node-1": 8, "node-2": 8}
    ports = {p["name"] for o in objects if o["kind"] == "Service" for p in o["spec"]["ports"]}
    assert ports & {"http", "grpc", "tcp-db"} == {"http", "grpc", "tcp-db"}


def test_every_generated_pod_is_in_the_mesh(tmp_path):
    state = load_state(write_state(SMALL, tmp_path / "state"))
    assert len(state.pods) == 16 and all(p.meshed for p in state.pods)


def test_bad_sizes_are_refused_with_the_flag_named(capsys):
    with pytest.raises(SystemExit):
        main(["--services", "10", "--virtual-services", "11", "--out", "/nonexistent/never"])
    assert "--virtual-services (11) cannot exceed --services (10)" in capsys.readouterr().err


@pytest.mark.envoy
def test_a_small_cluster_compiles_and_passes_envoy_validate(tmp_path):
    state = build_state(_objects(generate(SMALL)))
    mesh = MeshSettings()
    bundle = compile_node(state, mesh, "node-1")
    assert bundle.stats["local_pods"] == 8
    assert write_tree(
        tmp_path / "node", bundle.files, lambda staged: validate_with_envoy(staged, mesh.proxy.config_dir)
    )
    pod = next(p for p in state.pods if p.node == "node-1")
    sidecar = compile_sidecar(state, mesh, pod.meta.key)
    check = lambda staged: validate_with_envoy(staged, mesh.proxy.config_dir)  # noqa: E731
    assert write_tree(tmp_path / "sidecar", sidecar.files, check)
