"""A node with most of the cluster's classes carries the outbound chains of all of them.

Those chains name classes, never pods, so nodes share one build. What a local pod gets must not
change: every route and chain a local pod can reach is the same as with chains built for the node's
own classes alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.compiled import Compiled

import dpumesh.compiler as compiler
from benchmarks.generate import Sizes, write_state
from dpumesh.compiler import MeshSettings, compile_node
from dpumesh.compiler.outbound import host_domains, short_domains
from dpumesh.compiler.registry import is_http
from dpumesh.compiler.views import build_classes, cluster_classes
from dpumesh.state import load_state


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    sizes = Sizes(services=60, pods=180, nodes=3, virtual_services=30, destination_rules=30, namespaces=6)
    return write_state(sizes.validated(), tmp_path_factory.mktemp("generated") / "state")


def _state(generated: Path):
    """node-1 keeps every class, node-2 loses one namespace (5 of 6 left), node-3 loses three (3 of 6)."""
    state = load_state(generated)
    namespaces = sorted({p.namespace for p in state.pods if p.meshed})
    gone = {"node-2": set(namespaces[:1]), "node-3": set(namespaces[:3])}
    state.pods = [p for p in state.pods if p.namespace not in gone.get(p.node, set())]
    return state


def _compiled(generated: Path, coverage: float) -> dict[str, Compiled]:
    state = _state(generated)
    old, compiler.CLUSTER_CHAINS_COVERAGE = compiler.CLUSTER_CHAINS_COVERAGE, coverage
    try:
        return {node: Compiled(compile_node(state, MeshSettings(), node), state) for node in sorted(state.nodes)}
    finally:
        compiler.CLUSTER_CHAINS_COVERAGE = old


def _chains(c: Compiled) -> str:
    listener = c.listener("outbound")
    return json.dumps([listener["filter_chains"], listener["filter_chain_matcher"]], sort_keys=True)


def test_nodes_with_most_classes_share_the_chains_of_all_and_list_only_their_pods(generated):
    compiled = _compiled(generated, compiler.CLUSTER_CHAINS_COVERAGE)
    state = _state(generated)
    ctx = compiler.prepare(state, MeshSettings(), "node-1")
    everyone = [c.name for c in cluster_classes(ctx)]
    assert len(everyone) >= 6
    # node-1 (all classes) and node-2 (5 of 6) carry one body; node-3 (half) its own, smaller one
    assert _chains(compiled["node-1"]) == _chains(compiled["node-2"])
    assert _chains(compiled["node-3"]) != _chains(compiled["node-1"])
    assert len(_chains(compiled["node-3"])) < len(_chains(compiled["node-1"]))
    for node, c in compiled.items():
        ctx = compiler.prepare(state, MeshSettings(), node)
        local = {cls.name: cls.ips for cls in build_classes(ctx)}
        assert c.source_classes() == local  # only the node's own pods are named, by IP
        assert c.bundle.stats["classes"] == len(local)
    assert len(compiled["node-2"].source_classes()) < len(everyone)


def test_a_local_pod_reaches_the_same_routes_and_chains_either_way(generated):
    shared = _compiled(generated, compiler.CLUSTER_CHAINS_COVERAGE)
    alone = _compiled(generated, 2.0)  # never more than the node's own classes
    assert _chains(shared["node-2"]) != _chains(alone["node-2"])  # the two builds really differ
    state = _state(generated)
    hosts = compiler.prepare(state, MeshSettings(), "node-1").registry.hosts.values()
    compared = 0
    for node in ("node-1", "node-2"):
        a, b = shared[node], alone[node]
        sources = [ips[0] for ips in a.source_classes().values()]
        for host in hosts:
            for port, hp in host.ports.items():
                for source in sources:
                    if is_http(hp.protocol):
                        for authority in host_domains(host, port) + short_domains(host, port):
                            got = a.routes_for(source, port, authority)
                            assert got == b.routes_for(source, port, authority), (node, source, authority)
                            compared += 1
                    for vip in (v for v in host.vips if "/" not in v):
                        assert a.chain_for(source, vip, port) == b.chain_for(source, vip, port), (node, source, vip)
                        compared += 1
    assert compared > 500
