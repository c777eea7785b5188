"""The lab's health probe picks a pair of pods the checked version knows, or none."""

from __future__ import annotations

from dpumesh.lab.plan import PodPlan
from dpumesh.lab.proxy import probe_command


def pod(name: str, ip: str, http_ports: tuple[int, ...] = (8080,)) -> PodPlan:
    return PodPlan("shop", name, "node-1", ip, "02:00:00:00:00:01", "vf0", "10.244.1.1", True, "v1",
                   http_ports, (), (), hosts="", resolv_conf="")  # fmt: skip


def listeners(sources: list[str], inbound: list[str]) -> list[dict]:
    outbound = {
        "name": "outbound",
        "filter_chains": [],
        "metadata": {"filter_metadata": {"dpumesh": {"source_classes": {"shop": sources}}}},
    }
    chains = [{"name": f"inbound|{ip}|8080|plaintext"} for ip in inbound]
    return [outbound, {"name": "inbound", "filter_chains": chains}]


PODS = [pod("a", "10.244.1.5"), pod("b", "10.244.1.6")]


def test_a_client_the_outbound_listener_knows_calls_a_server_with_a_plaintext_chain():
    probe = probe_command("node-1", PODS, listeners(["10.244.1.5", "10.244.1.6"], ["10.244.1.5"]))
    assert probe[-1] == "http://10.244.1.5:8080/dpumesh-probe"
    assert probe[3] == "dpumesh-shop-b"


def test_no_probe_when_the_version_knows_none_of_the_pods():
    # e.g. the version a state change replaces, or a bridge that still has its listeners
    assert probe_command("node-1", PODS, listeners(["10.244.1.99"], ["10.244.1.99"])) is None
    assert probe_command("node-1", PODS, listeners(["10.244.1.5", "10.244.1.6"], [])) is None
    assert probe_command("node-1", PODS, []) is None
