"""The memory benchmark: its cluster variants (N pods on node-1, everything else unchanged), its proxies."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.common import Deadline
from benchmarks.memory import (
    NODE,
    Proxy,
    active_secrets,
    cert_dir_of,
    cluster_objects,
    compile_all,
    memory_of,
    sds_service,
    sds_socket_of,
    start,
    stop,
    wait_loaded,
    with_pods_on_node,
)
from dpumesh.certs import LabCA, ensure_workload_certs
from dpumesh.compiler import MeshSettings
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


@pytest.mark.envoy
@pytest.mark.netns
def test_the_shared_proxy_and_a_sidecar_load_their_secrets_from_the_one_sds_service(tmp_path):
    objects = cluster_objects(services=20, pods_per_node=3, nodes=2, seed=1)
    full = build_state(objects)
    local = sorted(p.meta.key for p in full.pods if p.node == NODE and p.meshed)
    compiled: dict = {"shared": {}, "sidecars": []}

    def record(kind, data):
        if kind == "shared":
            compiled["shared"][data["n"]] = data
        elif kind == "sidecar":
            compiled["sidecars"].append(data)

    compile_all(objects, [len(local)], tmp_path, record)
    shared = compiled["shared"][len(local)]
    sidecar = compiled["sidecars"][0]
    ca = LabCA.ensure(tmp_path / "ca", MeshSettings().trust_domain)
    identities = [tuple(i) for i in shared["identities"]]
    ensure_workload_certs(cert_dir_of(tmp_path), ca, MeshSettings().trust_domain, identities)
    proxies = [
        Proxy("shared", Path(shared["root"]), shared["stats"]),
        Proxy("sidecar", Path(sidecar["root"]), sidecar["stats"]),
    ]
    with sds_service(sds_socket_of(tmp_path), cert_dir_of(tmp_path)) as sds:
        try:
            for proxy in proxies:
                start(proxy, concurrency=1)
            wait_loaded(proxies, Deadline(120), sds)
            # listeners warm only once their certificates came: every identity and the root CA
            assert active_secrets(proxies[0]) == len(set(identities)) + 1
            assert active_secrets(proxies[1]) == 2
        finally:
            stop(proxies)
