"""Bad inventory is refused with a message naming the variable, host and field."""

from __future__ import annotations

import pytest

from dpumesh.k8s.inventory import (
    check_choice,
    check_node_pod_cidrs,
    check_ports,
    check_vf_pools,
    compare_node_pod_cidrs,
    default_vf_pools,
    dpu_inventory,
    node_ippools,
    node_pod_cidrs,
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


def _node(name, cidr, fabric_ip="192.168.0.1"):
    return {"name": name, "soc": f"{name}-dpu", "fabric_ip": fabric_ip, "pod_cidr": cidr}


def test_node_pod_cidrs_are_set_inside_the_pod_cidr_and_disjoint():
    good = [_node("a", "10.244.1.0/24"), _node("b", "10.244.2.0/24", "192.168.0.2")]
    assert check_node_pod_cidrs(good, "10.244.0.0/16", "10.96.0.0/12") == []
    bad = [
        _node("a", ""),
        _node("b", "10.9.0.0/24"),
        _node("c", "10.244.1.0/24", "10.244.3.1"),
        _node("d", "10.244.1.128/25"),
        _node("e", "10.244.9.1/24"),
        _node("f", "10.244.10.0/31"),
    ]
    assert check_node_pod_cidrs(bad, "10.244.0.0/16", "10.240.0.0/12") == [
        "dpumesh_pod_cidr: 10.244.0.0/16 overlaps dpumesh_service_cidr (10.240.0.0/12)",
        "host a (dpu_hosts): dpumesh_node_pod_cidr is not set; it is the node's spec.podCIDR: "
        "kubectl get node a -o jsonpath='{.spec.podCIDR}'",
        "host b (dpu_hosts): dpumesh_node_pod_cidr 10.9.0.0/24 is not inside dpumesh_pod_cidr 10.244.0.0/16",
        "host c-dpu (dpu_socs): dpu_soc_fabric_ip 10.244.3.1 is inside dpumesh_pod_cidr 10.244.0.0/16; "
        "the DPUs route pod addresses over the fabric, so it must lie outside",
        "host d (dpu_hosts): dpumesh_node_pod_cidr 10.244.1.128/25 overlaps node c (10.244.1.0/24)",
        "host e (dpu_hosts): dpumesh_node_pod_cidr: '10.244.9.1/24' is not a network address/prefix "
        "(10.244.9.1/24 has host bits set)",
        "host f (dpu_hosts): dpumesh_node_pod_cidr 10.244.10.0/31 has no room for the gateway and pods "
        "(needs at least 4 addresses)",
    ]


def test_a_node_pod_cidr_overlapping_the_service_cidr_is_named():
    nodes = [_node("a", "10.244.1.0/24"), _node("b", "10.96.0.0/24")]
    assert check_node_pod_cidrs(nodes, "", "10.96.0.0/12") == [
        "dpumesh_pod_cidr: '' is not a network address/prefix ('' does not appear to be an IPv4 or IPv6 network)",
        "host b (dpu_hosts): dpumesh_node_pod_cidr 10.96.0.0/24 overlaps dpumesh_service_cidr 10.96.0.0/12",
    ]


def test_node_pod_cidrs_are_compared_with_the_cluster():
    nodes = [_node("a", "10.244.1.0/24"), _node("b", "10.244.2.0/24"), _node("c", "10.244.3.0/24"), _node("d", "")]
    objects = [
        {"kind": "Node", "metadata": {"name": "a"}, "spec": {"podCIDR": "10.244.1.0/24"}},
        {"kind": "Node", "metadata": {"name": "b"}, "spec": {"podCIDR": "10.244.7.0/24"}},
        {"kind": "Node", "metadata": {"name": "x"}, "spec": {}},
        {"kind": "Service", "metadata": {"name": "c"}, "spec": {}},
    ]
    cluster = node_pod_cidrs(objects)
    assert cluster == {"a": "10.244.1.0/24", "b": "10.244.7.0/24", "x": ""}
    assert compare_node_pod_cidrs(nodes, cluster, "the cluster") == {
        "problems": [
            "node b: dpumesh_node_pod_cidr 10.244.2.0/24 (its VF address pool) differs from spec.podCIDR "
            "10.244.7.0/24 in the cluster, which the compiler and dataplane route; set dpumesh_node_pod_cidr: "
            "10.244.7.0/24 in host_vars/b.yml",
        ],
        "not_found": ["c"],
    }
    no_cidr = compare_node_pod_cidrs([_node("x", "10.244.4.0/24")], cluster, "the cluster")["problems"]
    assert no_cidr[0].startswith("node x: has no spec.podCIDR in the cluster")


def test_node_pools_are_the_node_pod_cidrs():
    result = node_ippools([_node("a", "10.244.1.0/24"), _node("b", "10.244.2.0/26"), _node("c", "bad")])
    assert result["pools"] == [
        {
            "node": "a",
            "subnet": "10.244.1.0/24",
            "gateway": "10.244.1.1",
            "ips": ["10.244.1.2-10.244.1.254"],
            "version": 4,
        },
        {
            "node": "b",
            "subnet": "10.244.2.0/26",
            "gateway": "10.244.2.1",
            "ips": ["10.244.2.2-10.244.2.62"],
            "version": 4,
        },
    ]


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
            "pod_cidr": "",
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
    result = node_ippools([_node("a", "fd00:d0:0:1::/64")])
    assert result["pools"] == [
        {
            "node": "a",
            "subnet": "fd00:d0:0:1::/64",
            "gateway": "fd00:d0:0:1::1",
            "ips": ["fd00:d0:0:1::2-fd00:d0:0:1:ffff:ffff:ffff:ffff"],
            "version": 6,
        }
    ]
