"""The memory benchmark's cluster variants: N pods on node-1, everything else unchanged."""

from __future__ import annotations

import os

from benchmarks.memory import NODE, cluster_objects, memory_of, with_pods_on_node
from dpumesh.state import build_state


def test_only_the_kept_pods_stay_on_the_node_and_every_pod_keeps_its_ip():
    objects = cluster_objects(services=20, pods_per_node=6, nodes=3, seed=3)
    full = build_state(objects)
    local = sorted(p.meta.key for p in full.pods if p.node == NODE)
    assert len(local) == 6
    variant = build_state(with_pods_on_node(objects, local[:2]))
    assert sorted(p.meta.key for p in variant.pods if p.node == NODE) == local[:2]
    assert {p.meta.key: p.ip for p in variant.pods} == {p.meta.key: p.ip for p in full.pods}
    assert len(variant.services) == len(full.services) and variant.istio.keys() == full.istio.keys()


def test_memory_of_this_process():
    memory = memory_of(os.getpid())
    assert 0 < memory["uss_kib"] <= memory["pss_kib"] <= memory["rss_kib"]
