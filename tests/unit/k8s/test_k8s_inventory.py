"""Bad inventory is refused with a message naming the variable, host and field."""

from __future__ import annotations

import pytest

from dpumesh.k8s.inventory import (
    check_choice,
    check_cidr_overlaps,
    check_ports,
    check_vf_pools,
    default_vf_pools,
    dpu_inventory,
    node_ippools,
    pool_num_vfs,
)

HOSTS = {
    "w1": {"name": "w1", "address": "10.0.0.1", "pf": "ens1f0np0", "num_vfs": 32},
    "w2": {"name": "w2", "address": "10.0.0.2", "pf": "ens1f0np0", "num_vfs": 16},
}


def test_unknown_network_mode():
    assert check_choice("vxlan", ["underlay", "overlay"], "dpumesh_network_mode") == [
        "dpumesh_network_mode: unknown value 'vxlan'; use one of: underlay, overlay"
    ]
    assert check_choice("overlay", ["underlay", "overlay"], "dpumesh_network_mode") == []


def test_default_pool_uses_the_vfs_every_host_has():
    pools = default_vf_pools(HOSTS, "dpumesh_vf", ["mlx5_core"], "netdevice")
    assert pools[0]["pfs"] == [{"name": "ens1f0np0", "vfs": "0-15"}]
    assert check_vf_pools(pools, HOSTS) == []
    assert pool_num_vfs(pools[0], HOSTS) == 16


@pytest.mark.parametrize(
    ("pfs", "expected"),
    [
        (
            [{"name": "ens1f0np0", "vfs": "0-31"}],
            "VF range 0-31 is outside the PF's VFs on w2 (dpu_host_num_vfs 16: VFs 0-15)",
        ),
        ([{"name": "ens1f0np0", "vfs": "8-4"}], "VF range '8-4' is not 'N' or 'N-M' with N <= M"),
        ([{"name": "ens9", "vfs": "0-3"}], "PF 'ens9' is not the dpu_host_pf of any dpu_hosts host"),
        ([], "pfs is empty"),
    ],
)
def test_bad_vf_pools(pfs, expected):
    pools = [{"resource_name": "dpumesh_vf", "pfs": pfs, "drivers": ["mlx5_core"], "device_type": "netdevice"}]
    problems = check_vf_pools(pools, HOSTS)
    assert problems and all(p.startswith("sriov_resource_pools[0] (dpumesh_vf): ") for p in problems)
    assert any(expected in p for p in problems), problems


def test_pools_sharing_vfs_and_names_are_refused():
    pools = [
        {"resource_name": "a", "pfs": [{"name": "ens1f0np0", "vfs": "0-7"}]},
        {"resource_name": "b", "pfs": [{"name": "ens1f0np0", "vfs": "4-9"}]},
        {"resource_name": "a", "pfs": [{"name": "ens1f0np0", "vfs": "12"}]},
        {"resource_name": "bad-name", "pfs": [{"name": "ens1f0np0", "vfs": "13"}], "device_type": "vdpa"},
    ]
    problems = check_vf_pools(pools, HOSTS)
    assert "sriov_resource_pools[1] (b): PF ens1f0np0: VF range 4-9 overlaps pool a" in problems
    assert "sriov_resource_pools[2] (a): resource_name is used by another pool" in problems
    assert "sriov_resource_pools[3] (bad-name): resource_name must be 1-63 letters, digits or '_'" in problems
    assert "sriov_resource_pools[3] (bad-name): device_type 'vdpa' is not netdevice or vfio-pci" in problems


def test_pool_cidr_overlapping_pod_or_service_cidr():
    reserved = {"dpumesh_pod_cidr": "10.244.0.0/16", "dpumesh_service_cidr": "10.96.0.0/12"}
    assert check_cidr_overlaps({"spiderpool_vf_cidr": "10.250.0.0/16"}, reserved) == []
    assert check_cidr_overlaps({"spiderpool_vf_cidr": "10.244.128.0/17"}, reserved) == [
        "spiderpool_vf_cidr: 10.244.128.0/17 overlaps dpumesh_pod_cidr (10.244.0.0/16)"
    ]
    assert check_cidr_overlaps({"spiderpool_vf_cidr": "10.100.0.0/16"}, reserved) == [
        "spiderpool_vf_cidr: 10.100.0.0/16 overlaps dpumesh_service_cidr (10.96.0.0/12)"
    ]
    assert "not a network address/prefix" in check_cidr_overlaps({"spiderpool_vf_cidr": "10.1.1.1/16"}, reserved)[0]


def test_node_pools_are_carved_in_name_order_unless_pinned():
    nodes = [{"name": "b"}, {"name": "a"}, {"name": "c"}]
    nodes.sort(key=lambda n: n["name"])
    result = node_ippools(nodes, "10.250.0.0/16", 24, {"c": "10.250.0.0/24"})
    assert result["problems"] == []
    assert [(p["node"], p["subnet"], p["gateway"]) for p in result["pools"]] == [
        ("a", "10.250.1.0/24", "10.250.1.1"),
        ("b", "10.250.2.0/24", "10.250.2.1"),
        ("c", "10.250.0.0/24", "10.250.0.1"),
    ]
    outside = node_ippools(nodes, "10.250.0.0/16", 24, {"a": "10.9.0.0/24", "zz": "10.250.9.0/24"})["problems"]
    assert "spiderpool_vf_node_subnets.a: 10.9.0.0/24 is not inside spiderpool_vf_cidr 10.250.0.0/16" in outside
    assert "spiderpool_vf_node_subnets.zz: not a DPU node (dpu_soc_node of a dpu_socs host)" in outside
    assert node_ippools(nodes, "10.250.0.0/30", 31, {})["problems"][0].startswith("spiderpool_vf_node_prefix")


def test_dpu_inventory_joins_socs_to_hosts_and_reports_gaps():
    socs = {
        "w1-dpu": {"dpu_soc_node": "w1", "dpu_soc_fabric_ip": "192.168.0.1", "ansible_host": "10.1.0.1"},
        "w2-dpu": {"dpu_soc_node": "w1", "dpu_soc_fabric_ip": "192.168.0.2"},
        "w3-dpu": {"dpu_soc_fabric_ip": "nope"},
    }
    hosts = {"w1": {"dpu_host_pf": "ens1f0np0", "dpu_host_num_vfs": 8, "ansible_host": "10.0.0.1"}, "w4": {}}
    result = dpu_inventory(socs, hosts)
    assert result["nodes"] == [
        {
            "name": "w1",
            "soc": "w1-dpu",
            "soc_address": "10.1.0.1",
            "fabric_ip": "192.168.0.1",
            "host_address": "10.0.0.1",
            "pf": "ens1f0np0",
            "num_vfs": 8,
        }
    ]
    assert result["problems"] == [
        "host w4 (dpu_hosts): dpu_host_pf is not set",
        "host w4 (dpu_hosts): dpu_host_num_vfs None is not a positive integer",
        "host w2-dpu (dpu_socs): dpu_soc_node 'w1' is already the node of w1-dpu",
        "host w3-dpu (dpu_socs): dpu_soc_node is not set",
    ]


def test_ports():
    assert check_ports({"a": 15010, "b": "15010"}, distinct=True) == ["b: port 15010 is also a"]
    assert check_ports({"a": 0, "b": 70000, "c": "x"}) == [
        "a: 0 is not a port number (1-65535)",
        "b: 70000 is not a port number (1-65535)",
        "c: 'x' is not a port number (1-65535)",
    ]


def test_ipv6_node_pools_do_not_enumerate_addresses():
    result = node_ippools([{"name": "a"}, {"name": "b"}], "fd00:d0::/48", 64, {})
    assert result["problems"] == []
    assert result["pools"][1] == {
        "node": "b",
        "subnet": "fd00:d0:0:1::/64",
        "gateway": "fd00:d0:0:1::1",
        "ips": ["fd00:d0:0:1::2-fd00:d0:0:1:ffff:ffff:ffff:ffff"],
        "version": 6,
    }
    tiny = node_ippools([{"name": "a"}], "10.250.0.0/16", 24, {"a": "10.250.0.0/31"})["problems"]
    assert tiny == ["spiderpool_vf_node_subnets.a: 10.250.0.0/31 is too small for a gateway and pods"]
