"""ClusterIP translation: the `services` of the steering model, rendered for `linux` (nft) and `vpp` (cnat)."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest
from test_renderers import MODEL

from dpumesh.compiler import MeshSettings, compile_node
from dpumesh.dataplane.linux import CONNTRACK_ZONE, render_linux
from dpumesh.dataplane.linux_apply import load_ruleset
from dpumesh.dataplane.model import parse_steering
from dpumesh.dataplane.vpp import render_vpp
from dpumesh.dataplane.vpp_syntax import validate_cli, validate_startup
from dpumesh.errors import DpumeshError
from dpumesh.state import load_state

LAB_APP = Path(__file__).parents[3] / "examples" / "lab-app"
# reviews-v1-0 (10.244.1.5) is meshed and captures 9080 only; ratings-0 (10.244.1.6) is meshed, every port;
# legacy-0 (10.244.1.7) is not meshed.
SERVICES = [
    {
        "namespace": "default",
        "name": "ratings",
        "cluster_ip": "10.96.0.20",
        "ports": [
            {
                "name": "http",
                "protocol": "TCP",
                "port": 80,
                "endpoints": [
                    {"ip": "10.244.1.6", "port": 9080},
                    {"ip": "10.244.2.7", "port": 9080},
                    {"ip": "10.244.2.8", "port": 9081},
                ],
            },
            {"name": "dns", "protocol": "UDP", "port": 53, "endpoints": [{"ip": "10.244.1.6", "port": 5353}]},
        ],
    },
    {
        "namespace": "default",
        "name": "reviews",
        "cluster_ip": "10.96.0.21",
        "ports": [
            {"name": "http", "protocol": "TCP", "port": 9080, "endpoints": [{"ip": "10.244.1.5", "port": 9080}]},
            {"name": "metrics", "protocol": "TCP", "port": 15090, "endpoints": [{"ip": "10.244.1.5", "port": 15090}]},
            {"name": "admin", "protocol": "TCP", "port": 8000, "endpoints": [{"ip": "10.244.1.5", "port": 8000}]},
        ],
    },
    {
        "namespace": "legacy",
        "name": "legacy",
        "cluster_ip": "10.96.0.22",
        "ports": [
            {"name": "", "protocol": "TCP", "port": 8080, "endpoints": [{"ip": "10.244.1.7", "port": 8080}]},
            {"name": "sctp", "protocol": "SCTP", "port": 9999, "endpoints": [{"ip": "10.244.1.7", "port": 9999}]},
        ],
    },
]

needs_nft = pytest.mark.skipif(shutil.which("nft") is None, reason="nft is not installed")


def model(services=None, **changes):
    data = copy.deepcopy(MODEL)
    data["services"] = copy.deepcopy(SERVICES if services is None else services)
    data.update(changes)
    return parse_steering(data)


def service_chains(ruleset: str) -> dict[str, list[str]]:
    """comment of each svc_N chain -> its rules."""
    chains = {}
    for body in re.findall(r"  chain svc_\d+ \{\n(.*?)\n  \}", ruleset, re.S):
        lines = [line.strip() for line in body.splitlines()]
        chains[lines[0].removeprefix('comment "').removesuffix('"')] = lines[1:]
    return chains


def test_models_without_services_still_parse() -> None:
    assert parse_steering(copy.deepcopy(MODEL)).services == ()


def test_services_parse_into_records() -> None:
    ratings = model().services[0]
    assert (ratings.key, ratings.cluster_ip) == ("default/ratings", "10.96.0.20")
    assert [(p.protocol, p.port, len(p.endpoints)) for p in ratings.ports] == [("TCP", 80, 3), ("UDP", 53, 1)]
    assert ratings.ports[0].endpoints[2].port == 9081


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cluster_ip": "None"}, r"services\[0\].cluster_ip: 'None' is not an IPv4 address"),
        ({"ports": [{"protocol": "ICMP", "port": 1, "endpoints": []}]}, r"services\[0\].ports\[0\].protocol: 'ICMP'"),
        (
            {"ports": [{"protocol": "TCP", "port": 0, "endpoints": []}]},
            r"services\[0\].ports\[0\].port: 0 is not a port",
        ),
        (
            {"ports": [{"protocol": "TCP", "port": 80, "endpoints": [{"ip": "10.0.0.1", "port": 70000}]}]},
            r"services\[0\].ports\[0\].endpoints\[0\].port: 70000 is not a port",
        ),
        (
            {"cluster_ip": "10.96.0.21", "ports": SERVICES[1]["ports"]},
            r"services\[1\] \(default/reviews\): 9080/TCP of 10.96.0.21 is also in default/ratings",
        ),
    ],
)
def test_bad_services_are_refused_naming_the_field(change: dict, message: str) -> None:
    services = copy.deepcopy(SERVICES)
    services[0].update(copy.deepcopy(change))
    with pytest.raises(DpumeshError, match=message):
        model(services)


@needs_nft
@pytest.mark.parametrize("mode", ["underlay", "overlay"])
def test_ruleset_with_services_passes_nft_check(mode: str) -> None:
    load_ruleset(render_linux(model(network_mode=mode)).ruleset, check_only=True)


@needs_nft
def test_ruleset_with_a_service_and_no_pods_passes_nft_check() -> None:
    load_ruleset(render_linux(model(pods=[])).ruleset, check_only=True)


def test_each_service_port_goes_to_a_random_ready_endpoint() -> None:
    ruleset = render_linux(model()).ruleset
    chains = service_chains(ruleset)
    # Every ready endpoint, local meshed ones included, each with its targetPort.
    assert chains["default/ratings 80/TCP"] == [
        "meta l4proto tcp dnat ip to numgen random mod 3 map "
        "{ 0 : 10.244.1.6 . 9080, 1 : 10.244.2.7 . 9080, 2 : 10.244.2.8 . 9081 }"
    ]
    assert chains["default/ratings 53/UDP"] == [
        "meta l4proto udp dnat ip to numgen random mod 1 map { 0 : 10.244.1.6 . 5353 }"
    ]
    assert chains["default/reviews 9080/TCP"][0].endswith("{ 0 : 10.244.1.5 . 9080 }")  # captured by its inbound
    assert "10.96.0.20 . tcp . 80 : goto svc_0" in ruleset and "10.96.0.20 . udp . 53 : goto svc_1" in ruleset


def chain(ruleset: str, name: str) -> list[str]:
    body = ruleset.split(f"  chain {name} {{\n")[1].split("\n  }")[0]
    return [line.strip() for line in body.splitlines()]


def test_inbound_capture_comes_after_the_translation() -> None:
    ruleset = render_linux(model()).ruleset
    inbound = chain(ruleset, "inbound_capture")
    assert inbound[0] == "type filter hook prerouting priority dstnat + 5; policy accept;"  # service_nat: dstnat
    assert (
        "meta l4proto tcp ip daddr . tcp dport @inbound_ports tproxy ip to 127.0.0.1:15006 meta mark set 1 accept"
        in (inbound)
    )
    assert not any("15006" in line for line in chain(ruleset, "prerouting"))  # the outbound capture stays first
    assert any("tproxy ip to 127.0.0.1:15001" in line for line in chain(ruleset, "outbound_0"))
    # The proxy's passthrough to a ClusterIP is looped into the inbound listener after its translation too.
    assert chain(ruleset, "service_nat_output")[0] == "type nat hook output priority -100; policy accept;"
    assert chain(ruleset, "proxy_output")[0] == "type route hook output priority -90; policy accept;"


def test_every_connection_is_tracked_outside_the_default_conntrack_zone() -> None:
    # SO_ORIGINAL_DST looks in zone 0 only: the proxy takes the TPROXYed socket's address, never a ClusterIP.
    ruleset = render_linux(model()).ruleset
    assert chain(ruleset, "conntrack_zone") == [
        "type filter hook prerouting priority raw; policy accept;",
        f"ct zone set {CONNTRACK_ZONE}",
    ]
    assert chain(ruleset, "conntrack_zone_output") == [
        "type filter hook output priority raw; policy accept;",
        f"ct zone set {CONNTRACK_ZONE}",
    ]
    assert CONNTRACK_ZONE != 0


def test_pod_translated_to_itself_is_source_nated_to_the_gateway() -> None:
    ruleset = render_linux(model()).ruleset
    assert "elements = { 10.244.1.5 . 10.244.1.5, 10.244.1.6 . 10.244.1.6, 10.244.1.7 . 10.244.1.7 }" in ruleset
    assert chain(ruleset, "hairpin") == [
        "type nat hook postrouting priority srcnat; policy accept;",
        'ct status dnat ip saddr . ip daddr @pod_pairs counter snat ip to 10.244.1.1 comment "hairpin"',
    ]


def test_translation_skips_captured_traffic_and_refuses_what_is_left() -> None:
    ruleset = render_linux(model()).ruleset
    nat = ruleset.split("  chain service_nat {")[1].split("  }")[0]
    assert nat.index("meta mark 1 return") < nat.index("vmap @service_ports")  # the proxy routes its captures
    assert "iifname @vf_representors ip daddr . meta l4proto . th dport vmap @service_ports" in nat
    assert "type nat hook output priority -100" in ruleset  # the proxy's passthrough to a ClusterIP
    assert "iifname @vf_representors meta mark != 1 ip daddr @service_ips jump refuse" in ruleset
    assert "elements = { 10.96.0.20, 10.96.0.21, 10.96.0.22 }" in ruleset
    assert "reject with tcp reset" in ruleset


def test_services_change_the_ruleset_digest() -> None:
    assert render_linux(model()).ruleset_digest != render_linux(model(services=SERVICES[:1])).ruleset_digest


def test_vpp_translates_cluster_ips_with_cnat() -> None:
    vpp = render_vpp(model())
    assert validate_cli(vpp.cli) == [] and validate_startup(vpp.startup_conf) == []
    assert "plugin cnat_plugin.so { enable }" in vpp.startup_conf
    lines = vpp.cli.splitlines()
    to_ratings = "to ->10.244.1.6 9080 to ->10.244.2.7 9080 to ->10.244.2.8 9081"
    assert f"cnat translation add proto TCP vip 10.96.0.20 80 {to_ratings}" in lines
    assert "cnat translation add proto UDP vip 10.96.0.20 53 to ->10.244.1.6 5353" in lines
    assert "cnat translation add proto TCP vip 10.96.0.21 9080 to ->10.244.1.5 9080" in lines
    assert "comment { legacy/legacy 9999/SCTP: cnat translates TCP and UDP only }" in lines


def test_vpp_translates_before_the_inbound_capture_for_pods_outside_the_mesh() -> None:
    lines = render_vpp(model()).cli.splitlines()
    # legacy-0 (pf0vf5) is the only non-meshed pod: its ClusterIP traffic is translated before ABF.
    features = [line for line in lines if line.startswith("set interface feature")]
    assert features == ["set interface feature pf0vf5 cnat-input-ip4 arc ip4-unicast"]
    # Hairpin: the k8s policy source-NATs a pod translated to itself, to the gateway.
    assert "set cnat snat-policy addr 10.244.1.1" in lines and "set cnat snat-policy k8s" in lines
    assert [line.split()[-1] for line in lines if line.startswith("set cnat snat-policy if table k8s")] == [
        "pf0vf3",
        "pf0vf4",
        "pf0vf5",
    ]
    assert not any("cnat" in line for line in render_vpp(model(services=[])).cli.splitlines())


def test_vpp_validator_checks_translations() -> None:
    cli = render_vpp(model()).cli
    twice = cli + "cnat translation add proto TCP vip 10.96.0.20 80 to ->10.244.2.9 80\n"
    assert any("translated twice" in p for p in validate_cli(twice))
    bad = "cnat translation add proto TCP vip 10.96.0.30 80 to ->10.244.2.300 80 to ->10.244.2.9 99999\n"
    problems = validate_cli(bad)
    assert any("'10.244.2.300' is not a valid endpoint address" in p for p in problems)
    assert any("port 99999 is out of range" in p for p in problems)
    assert validate_cli("cnat translation add proto ICMP vip 10.96.0.30 80 to ->10.244.2.9 80\n") != []
    assert validate_cli("cnat translation add proto TCP vip 10.96.0.30 80\n") != []  # no endpoint


def test_compiled_model_lists_every_cluster_ip_with_ready_endpoints() -> None:
    state = load_state(LAB_APP)
    steering = json.loads(compile_node(state, MeshSettings(), "node-1").files["steering.json"])
    services = {s["namespace"] + "/" + s["name"]: s for s in steering["services"]}
    assert set(services) == {"legacy/legacy", "payments/payments", "shop/catalog", "shop/frontend", "shop/inventory"}
    catalog = services["shop/catalog"]
    pods = {p.meta.key: p for p in state.pods}
    want = sorted(pods[k].ip for k in ("shop/catalog-v1-0", "shop/catalog-v2-0", "shop/catalog-v3-0"))
    assert [e["ip"] for e in catalog["ports"][0]["endpoints"]] == want
    assert {e["port"] for e in catalog["ports"][0]["endpoints"]} == {8080}  # targetPort "http" resolved
    assert catalog["cluster_ip"] == next(s.cluster_ip for s in state.services if s.name == "catalog")
    assert catalog["ports"][0]["protocol"] == "TCP"
    node2 = json.loads(compile_node(state, MeshSettings(), "node-2").files["steering.json"])
    assert node2["services"] == steering["services"]  # every node translates every ClusterIP
