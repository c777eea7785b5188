"""Inventory variables that were renamed or removed: the one table, and the preflight's refusal.

An inventory that still sets an old name would otherwise be ignored without a word (Ansible
accepts any variable), so the preflight of the downloads role and of every Kubernetes role
refuses it, naming the old variable and what replaces it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple


class Replacement(NamedTuple):
    new: str  # the variable that replaces it; "" when it was removed without a successor
    how: str  # what to do instead


_NODE_POD_CIDR = (
    "each DPU node's VF address pool is its pod CIDR, dpumesh_node_pod_cidr in host_vars/<node>.yml "
    "(the node's spec.podCIDR, which the compiler and the dataplane route); see docs/k8s-addons.md."
)

RENAMED: dict[str, Replacement] = {
    "k8s_common_downloads": Replacement(
        "downloads_table", "the table moved to role downloads; change entries with downloads_overrides"
    ),
    "k8s_common_download_overrides": Replacement("downloads_overrides", "same format: {entry: {field: value}}"),
    "k8s_common_registry_mirror": Replacement(
        "dpumesh_registry_mirror", "group_vars/all; role downloads reads it as downloads_registry_mirror"
    ),
    "dpu_soc_images": Replacement(
        "downloads_overrides",
        "the SoC images are the entries dataplane and dpu_proxy of downloads_table "
        "(e.g. downloads_overrides: {dpu_proxy: {tag: ...}})",
    ),
    "spiderpool_coordinator_mode": Replacement(
        "",
        "the spiderpool coordinator is always off: in underlay and overlay mode alike it routes the cluster "
        "pod CIDR and the service CIDR past the VF to the host, so pod and ClusterIP traffic would miss the DPU "
        "proxy; see docs/k8s-addons.md.",
    ),
    "spiderpool_vf_cidr": Replacement("", _NODE_POD_CIDR),
    "spiderpool_vf_node_prefix": Replacement("", _NODE_POD_CIDR),
    "spiderpool_vf_node_subnets": Replacement("", _NODE_POD_CIDR),
}


def renamed_variable_problems(names: Iterable[str]) -> list[str]:
    """One message per old variable among ``names`` (the variables the inventory sets)."""
    problems = []
    for old in sorted(set(names) & RENAMED.keys()):
        new, how = RENAMED[old]
        if new:
            problems.append(f"{old} is no longer read: renamed to {new} ({how})")
        else:
            problems.append(f"{old} is no longer read: {how}")
    return problems
