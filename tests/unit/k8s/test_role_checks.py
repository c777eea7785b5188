"""The Kubernetes roles' settings checks (dpumesh.k8s.role_checks) on validated, resolved variables."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dpumesh.k8s.role_checks import ROLE_CHECKS

ROLES = Path(__file__).resolve().parents[3] / "roles"
HOSTS = {"node-1": {"pf": "pf0", "num_vfs": 8}}
INVENTORY = {"_k8s_common_dpu_inventory": {"nodes": [{"name": "node-1"}], "hosts": HOSTS}}
POOL = {"resource_name": "dpumesh_vf", "pfs": [{"name": "pf0", "vfs": "0-7"}], "device_type": "netdevice"}
GOOD = {
    "multus": {"multus_max_unavailable": 1, "multus_cni_conf_dir": "/etc/cni/net.d", "multus_cni_bin_dir": "/opt/cni"},
    "sriov": {"_sriov_pools": [POOL], **INVENTORY},
    "spiderpool": {"spiderpool_vlan_id": 0},
    "istio_dpu_controller": {
        "istio_dpu_controller_istiod_address": "istiod.istio-system.svc:15012",
        "dpumesh_trust_domain": "cluster.local",
        "istio_dpu_controller_health_port": 15021,
        **INVENTORY,
    },
    "istio_dpu_adapter": {
        "istio_dpu_adapter_xds_port": 15010,
        "istio_dpu_adapter_health_port": 15022,
        "istio_dpu_adapter_proxy_admin_port": 15000,
        "istio_dpu_adapter_dataplane_port": 9410,
        **INVENTORY,
    },
    "istio_dpu_cni": {
        "istio_dpu_cni_network_mode": "underlay",
        "istio_dpu_cni_health_port": 15023,
        "istio_dpu_cni_vxlan_port": 4789,
        "istio_dpu_cni_vxlan_vni": 4242,
        "istio_dpu_cni_conf_dir": "/etc/cni/net.d",
        "istio_dpu_cni_bin_dir": "/opt/cni/bin",
        **INVENTORY,
    },
}
BAD = {
    "multus": (
        {"multus_cni_bin_dir": "opt/cni"},
        "multus: multus_max_unavailable must be >= 1 and multus_cni_conf_dir / multus_cni_bin_dir absolute paths",
    ),
    "sriov": (
        {"_sriov_pools": [{**POOL, "pfs": [{"name": "pf0", "vfs": "0-8"}]}]},
        "sriov_resource_pools[0] (dpumesh_vf): PF pf0: VF range 0-8 is outside the PF's VFs on node-1 "
        "(dpu_host_num_vfs 8: VFs 0-7)",
    ),
    "spiderpool": ({"spiderpool_vlan_id": 4095}, "spiderpool_vlan_id: must be 0-4094"),
    "istio_dpu_controller": ({"dpumesh_trust_domain": "a b"}, "dpumesh_trust_domain: a b is not a trust domain name"),
    "istio_dpu_adapter": (
        {"istio_dpu_adapter_health_port": 15010},
        "istio_dpu_adapter_health_port: port 15010 is also istio_dpu_adapter_xds_port",
    ),
    "istio_dpu_cni": ({"istio_dpu_cni_vxlan_vni": 0}, "istio_dpu_cni_vxlan_vni: must be 1-16777215"),
}


def test_every_check_belongs_to_a_role_and_reads_only_its_options_or_what_it_declares():
    assert sorted(GOOD) == sorted(ROLE_CHECKS)
    for role, check in ROLE_CHECKS.items():
        spec = yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())
        options = set(spec["argument_specs"]["main"]["options"])
        assert set(GOOD[role]) <= options | set(check.reads), role


@pytest.mark.parametrize("role", sorted(ROLE_CHECKS))
def test_good_settings_pass(role):
    assert ROLE_CHECKS[role].check(GOOD[role]) == []


@pytest.mark.parametrize("role", sorted(BAD))
def test_a_bad_setting_is_named(role):
    change, message = BAD[role]
    assert message in ROLE_CHECKS[role].check({**GOOD[role], **change})


def test_no_dpu_node_is_a_problem_for_the_mesh_components():
    for role in ("istio_dpu_controller", "istio_dpu_adapter", "istio_dpu_cni"):
        problems = ROLE_CHECKS[role].check({**GOOD[role], "_k8s_common_dpu_inventory": {"nodes": []}})
        assert problems and problems[-1].startswith("dpu_socs: no host with dpu_soc_node"), role
