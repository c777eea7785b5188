"""Renderers of the steering model: linux rulesets checked by real `nft -c`, vpp files by the validator."""

from __future__ import annotations

import copy
import shutil

import pytest

from dpumesh.dataplane.linux import render_linux, ruleset_digest, vxlan_mac
from dpumesh.dataplane.linux_apply import load_ruleset
from dpumesh.dataplane.model import parse_steering
from dpumesh.dataplane.vpp import render_vpp
from dpumesh.dataplane.vpp_syntax import validate_cli, validate_startup, validate_vcl
from dpumesh.errors import DpumeshError

MODEL = {
    "schema": "dpumesh.io/steering/v1",
    "node": "node-1",
    "version": "abc123",
    "network_mode": "underlay",
    "local": {"fabric_ip": "192.168.250.1", "pod_cidr": "10.244.1.0/24"},
    "tunnel": {"type": "vxlan", "vni": 4242, "dstport": 4789},
    "proxy": {
        "outbound_port": 15001,
        "inbound_port": 15006,
        "capture_mark": 1,
        "bypass_mark": 2,
        "route_table": 100,
        "admin_port": 15000,
    },
    "pods": [
        {
            "namespace": "default",
            "name": "reviews-v1-0",
            "ip": "10.244.1.5",
            "mac": "02:00:0a:f4:01:05",
            "vf": {"representor": "pf0vf3", "pci_address": "0000:3b:00.4", "index": 3},
            "meshed": True,
            "capture": {
                "outbound": True,
                "outbound_exclude_ports": [5432],
                "outbound_exclude_cidrs": ["10.0.0.0/8"],
                "inbound_ports": [9080],
                "inbound_exclude_ports": [15090],
            },
        },
        {
            "namespace": "default",
            "name": "ratings-0",
            "ip": "10.244.1.6",
            "mac": "02:00:0a:f4:01:06",
            "vf": {"representor": "pf0vf4"},
            "meshed": True,
        },
        {
            "namespace": "legacy",
            "name": "legacy-0",
            "ip": "10.244.1.7",
            "mac": "02:00:0a:f4:01:07",
            "vf": {"representor": "pf0vf5"},
            "meshed": False,
        },
    ],
    "remote_nodes": [
        {"node": "node-2", "fabric_ip": "192.168.250.2", "pod_cidr": "10.244.2.0/24", "pod_ips": ["10.244.2.7"]}
    ],
}

needs_nft = pytest.mark.skipif(shutil.which("nft") is None, reason="nft is not installed")


def model(**changes):
    data = copy.deepcopy(MODEL)
    data.update(changes)
    return parse_steering(data)


@needs_nft
@pytest.mark.parametrize("mode", ["underlay", "overlay"])
def test_linux_ruleset_passes_nft_check(mode: str) -> None:
    load_ruleset(render_linux(model(network_mode=mode)).ruleset, check_only=True)


@needs_nft
def test_linux_ruleset_without_pods_passes_nft_check() -> None:
    load_ruleset(render_linux(model(pods=[])).ruleset, check_only=True)


@needs_nft
def test_nft_check_refuses_a_broken_ruleset() -> None:
    broken = render_linux(model()).ruleset.replace("tproxy ip to", "tproxy ipx to")
    with pytest.raises(DpumeshError, match="nft"):
        load_ruleset(broken, check_only=True)


def test_ruleset_replaces_the_table_in_one_transaction() -> None:
    lines = render_linux(model()).ruleset.splitlines()
    body = [line for line in lines if not line.startswith("#")]
    assert body[:3] == ["table inet dpumesh", "delete table inet dpumesh", "table inet dpumesh {"]


def test_ruleset_steers_as_the_model_says() -> None:
    ruleset = render_linux(model()).ruleset
    assert "ether saddr != 02:00:0a:f4:01:05 counter drop" in ruleset
    assert "ip saddr != 10.244.1.5 counter drop" in ruleset
    assert "elements = { 10.244.1.5 . 9080 }" in ruleset  # inbound_ports
    assert "elements = { 10.244.1.6 }" in ruleset  # every port of ratings
    assert "tcp dport { 5432 } return" in ruleset and "ip daddr { 10.0.0.0/8 } return" in ruleset
    assert '"pf0vf5" : jump' not in ruleset  # the non-meshed pod is never captured
    assert "tproxy ip to 127.0.0.1:15001 meta mark set 1 accept" in ruleset
    assert "tproxy ip to 127.0.0.1:15006 meta mark set 1 accept" in ruleset
    assert "meta mark 2 accept" in ruleset


def test_ruleset_digest_follows_content() -> None:
    first = render_linux(model())
    assert first.ruleset_digest == ruleset_digest(render_linux(model()).ruleset)
    assert first.ruleset_digest != render_linux(model(pods=MODEL["pods"][:1])).ruleset_digest


def test_policy_routing_underlay_and_overlay() -> None:
    underlay = render_linux(model())
    assert {"fwmark": 1, "table": 100, "priority": 100} in underlay.rules
    local = [r for r in underlay.routes if r.table == 100]
    assert [(r.type, r.dst, r.dev, r.src) for r in local] == [("local", "0.0.0.0/0", "lo", "10.244.1.1")]
    remote = next(r for r in underlay.routes if r.dst == "10.244.2.0/24")
    assert (remote.via, remote.dev) == ("192.168.250.2", "")
    assert underlay.vxlan is None

    overlay = render_linux(model(network_mode="overlay"))
    remote = next(r for r in overlay.routes if r.dst == "10.244.2.0/24")
    assert (remote.via, remote.dev, remote.onlink) == ("192.168.250.2", "dpumesh-vx", True)
    assert overlay.vxlan is not None and overlay.vxlan.vni == 4242 and overlay.vxlan.mac == vxlan_mac("192.168.250.1")
    assert [(e.mac, e.dst) for e in overlay.fdb] == [(vxlan_mac("192.168.250.2"), "192.168.250.2")]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema": "other"}, "schema must be"),
        ({"network_mode": "tunnel"}, "network_mode: 'tunnel' is not one of"),
        ({"proxy": {**MODEL["proxy"], "bypass_mark": 1}}, "must be different"),
        ({"proxy": {**MODEL["proxy"], "outbound_port": 70000}}, r"proxy.outbound_port: 70000 is not a port"),
        ({"local": {"fabric_ip": "x", "pod_cidr": "10.244.1.0/24"}}, "local.fabric_ip: 'x' is not an IPv4"),
        ({"pods": [{**MODEL["pods"][0], "mac": "zz"}]}, r"pods\[0\].mac: 'zz' is not a MAC"),
        ({"pods": [{**MODEL["pods"][0], "vf": {"representor": "a-name-far-too-long"}}]}, "is not an interface name"),
        ({"pods": [MODEL["pods"][0], {**MODEL["pods"][1], "ip": "10.244.1.5"}]}, "same ip 10.244.1.5"),
        ({"pods": [{**MODEL["pods"][0], "ip": "10.244.1.1"}]}, "gateway address"),
        ({"remote_nodes": [{"node": "n"}]}, r"remote_nodes\[0\].fabric_ip: is missing"),
    ],
)
def test_bad_models_are_refused_naming_the_field(change: dict, message: str) -> None:
    data = copy.deepcopy(MODEL)
    data.update(change)
    with pytest.raises(DpumeshError, match=message):
        parse_steering(data)


@pytest.mark.parametrize("mode", ["underlay", "overlay"])
def test_vpp_files_are_valid(mode: str) -> None:
    vpp = render_vpp(model(network_mode=mode))
    assert validate_startup(vpp.startup_conf) == []
    assert validate_cli(vpp.cli) == []
    assert validate_vcl(vpp.vcl_conf, vpp.cli) == []
    assert "dev 0000:3b:00.4 { name pf0vf3 }" in vpp.startup_conf
    assert "set acl-plugin macip acl permit ip 10.244.1.5/32 mac 02:00:0a:f4:01:05" in vpp.cli
    assert ("create vxlan tunnel src 192.168.250.1 dst 192.168.250.2 vni 4242" in vpp.cli) == (mode == "overlay")


def test_vpp_outbound_acl_keeps_exclusions_and_skips_unmeshed_pods() -> None:
    cli = render_vpp(model()).cli
    assert "deny src 10.244.1.5/32 dst 0.0.0.0/0 proto 6 dport 5432" in cli
    assert "deny src 10.244.1.5/32 dst 10.0.0.0/8 proto 6" in cli
    assert "outbound-pf0vf5" not in cli


def test_vpp_validator_catches_mistakes() -> None:
    vpp = render_vpp(model())
    assert validate_startup(vpp.startup_conf + "session {\n") != []
    assert validate_startup(vpp.startup_conf.replace("cpu {", "cpux {")) != []
    assert any("not a known command" in p for p in validate_cli(vpp.cli + "set interface sate pf0vf3 up\n"))
    assert any("before it is added" in p for p in validate_cli("abf attach ip4 policy 7 priority 1 pf0vf3\n"))
    assert any("before it is created" in p for p in validate_cli("set interface state loop3 up\n"))
    assert any("not a valid prefix" in p for p in validate_cli("ip route add 10.244.1.5/24 via 10.0.0.1 fabric0\n"))
    assert any("used before it is created" in p for p in validate_cli("abf policy add id 1 acl 0 via 10.0.0.1 fabric0"))
    assert validate_vcl(vpp.vcl_conf.replace("namespace-id", "namespace-idd")) != []
    assert validate_vcl(vpp.vcl_conf, vpp.cli.replace("secret", "secret 1")) != []
