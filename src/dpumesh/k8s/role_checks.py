"""The settings checks of the Kubernetes roles: what each role's preflight refuses beyond its argument specs.

Each check takes the role's variables, already resolved (inventory, role defaults and role vars applied) and
already validated against the role's ``meta/argument_specs.yml``, and returns the problems, each naming the
variable at fault. ``ROLE_CHECKS`` also names the variables a check reads that are not the role's own options
(shared settings, the role's internal vars, the DPU inventory joined by k8s_common).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dpumesh.k8s.inventory import check_choice, check_ports, check_vf_pools

Problems = list[str]


@dataclass(frozen=True)
class RoleCheck:
    heading: str  # the first line of the failure, above the problems
    check: Callable[[Mapping[str, Any]], Problems]
    reads: tuple[str, ...] = ()  # variables besides the role's options


def _no_dpu_node(v: Mapping[str, Any], what: str) -> Problems:
    nodes = (v.get("_k8s_common_dpu_inventory") or {}).get("nodes") or []
    return [] if nodes else [f"dpu_socs: no host with dpu_soc_node; {what}"]


def _multus(v: Mapping[str, Any]) -> Problems:
    if (
        v["multus_max_unavailable"] >= 1
        and os.path.isabs(v["multus_cni_conf_dir"])
        and os.path.isabs(v["multus_cni_bin_dir"])
    ):
        return []
    return ["multus: multus_max_unavailable must be >= 1 and multus_cni_conf_dir / multus_cni_bin_dir absolute paths"]


def _sriov(v: Mapping[str, Any]) -> Problems:
    return check_vf_pools(v["_sriov_pools"], (v.get("_k8s_common_dpu_inventory") or {}).get("hosts") or {})


def _spiderpool(v: Mapping[str, Any]) -> Problems:
    return [] if 0 <= v["spiderpool_vlan_id"] <= 4094 else ["spiderpool_vlan_id: must be 0-4094"]


def _controller(v: Mapping[str, Any]) -> Problems:
    problems = []
    address = v["istio_dpu_controller_istiod_address"]
    if not re.match(r"^[A-Za-z0-9.-]+:[0-9]{1,5}$", address):
        problems.append(f"istio_dpu_controller_istiod_address: {address} is not host:port")
    trust_domain = str(v.get("dpumesh_trust_domain") or "")
    if not re.match(r"^[A-Za-z0-9._-]+$", trust_domain):
        problems.append(f"dpumesh_trust_domain: {trust_domain} is not a trust domain name")
    problems += check_ports({"istio_dpu_controller_health_port": v["istio_dpu_controller_health_port"]})
    return problems + _no_dpu_node(v, "the controller has no DPU node to configure")


def _adapter(v: Mapping[str, Any]) -> Problems:
    # Host ports (host network) and ports on the SoC must each be distinct.
    host = {name: v[name] for name in ("istio_dpu_adapter_xds_port", "istio_dpu_adapter_health_port")}
    soc = {name: v[name] for name in ("istio_dpu_adapter_proxy_admin_port", "istio_dpu_adapter_dataplane_port")}
    problems = check_ports(host, distinct=True) + check_ports(soc, distinct=True)
    return problems + _no_dpu_node(v, "the adapter has no DPU node to serve")


def _cni(v: Mapping[str, Any]) -> Problems:
    problems = check_choice(v["istio_dpu_cni_network_mode"], ["underlay", "overlay"], "istio_dpu_cni_network_mode")
    ports = {name: v[name] for name in ("istio_dpu_cni_health_port", "istio_dpu_cni_vxlan_port")}
    problems += check_ports(ports)
    if not 1 <= v["istio_dpu_cni_vxlan_vni"] <= 16777215:
        problems.append("istio_dpu_cni_vxlan_vni: must be 1-16777215")
    if not (os.path.isabs(v["istio_dpu_cni_conf_dir"]) and os.path.isabs(v["istio_dpu_cni_bin_dir"])):
        problems.append("istio_dpu_cni_conf_dir / istio_dpu_cni_bin_dir: must be absolute paths")
    return problems + _no_dpu_node(v, "there is no DPU node to run the CNI on")


_INVENTORY = ("_k8s_common_dpu_inventory",)

ROLE_CHECKS: dict[str, RoleCheck] = {
    "multus": RoleCheck("multus inventory problems", _multus),
    "sriov": RoleCheck("SR-IOV inventory problems", _sriov, ("_sriov_pools", *_INVENTORY)),
    "spiderpool": RoleCheck("spiderpool inventory problems", _spiderpool),
    "istio_dpu_controller": RoleCheck(
        "istio-dpu-controller inventory problems", _controller, ("dpumesh_trust_domain", *_INVENTORY)
    ),
    "istio_dpu_adapter": RoleCheck("istio-dpu-adapter inventory problems", _adapter, _INVENTORY),
    "istio_dpu_cni": RoleCheck("istio-dpu-cni inventory problems", _cni, _INVENTORY),
}
