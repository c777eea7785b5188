"""Ansible filters for the Kubernetes roles: thin adapters over ``dpumesh.k8s``."""

from __future__ import annotations

from dpumesh.errors import DpumeshError
from dpumesh.k8s import inventory, manifests, status
from dpumesh.k8s.manifests import plain
from dpumesh.state.load import load_manifest_dir


def _host_vars(hostvars, hosts, names):
    """Just the named variables of each host (hostvars is large and lazily templated)."""
    return {host: {name: hostvars[host].get(name) for name in names} for host in hosts or []}


def dpu_inventory(socs, hosts, hostvars):
    return inventory.dpu_inventory(
        _host_vars(hostvars, socs, ("dpu_soc_node", "dpu_soc_fabric_ip", "ansible_host")),
        _host_vars(hostvars, hosts, ("dpu_host_pf", "dpu_host_num_vfs", "ansible_host", "dpumesh_node_pod_cidr")),
    )


def choice_problems(value, choices, var):
    return inventory.check_choice(value, list(choices), var)


def default_vf_pools(hosts, resource_name, drivers, device_type):
    return inventory.default_vf_pools(plain(hosts), resource_name, plain(drivers), device_type)


def vf_pool_problems(pools, hosts, var="sriov_resource_pools"):
    return inventory.check_vf_pools(plain(pools), plain(hosts), var)


def port_problems(ports, distinct=False):
    return inventory.check_ports(plain(ports), distinct)


def pool_num_vfs(pool, hosts):
    return inventory.pool_num_vfs(plain(pool), plain(hosts))


def node_ippools(nodes):
    return inventory.node_ippools(plain(nodes))


def node_pod_cidr_problems(nodes, pod_cidr, service_cidr):
    return inventory.check_node_pod_cidrs(plain(nodes), pod_cidr or "", service_cidr or "")


def node_pod_cidr_mismatches(nodes, node_objects, source):
    """``node_objects``: Node objects (k8s_info resources), or a manifest directory path to read them from."""
    if isinstance(node_objects, str):
        try:
            node_objects = load_manifest_dir(node_objects)
        except DpumeshError as exc:
            return {"problems": [f"{source}: {exc}"], "not_found": []}
    cluster = inventory.node_pod_cidrs(plain(node_objects or []))
    return inventory.compare_node_pod_cidrs(plain(nodes), cluster, source)


def apply_order(objects):
    return manifests.apply_order(objects)


def apply_plan(objects):
    return manifests.apply_plan(objects)


def object_ref(obj):
    return manifests.object_ref(obj)


def daemonset_problem(daemonset, ref):
    return status.daemonset_problem(plain(daemonset) if daemonset else None, ref)


def crd_problem(crd, name):
    return status.crd_problem(plain(crd) if crd else None, name)


class FilterModule:
    def filters(self):
        return {
            "dpumesh_k8s_dpu_inventory": dpu_inventory,
            "dpumesh_k8s_choice_problems": choice_problems,
            "dpumesh_k8s_default_vf_pools": default_vf_pools,
            "dpumesh_k8s_vf_pool_problems": vf_pool_problems,
            "dpumesh_k8s_pool_num_vfs": pool_num_vfs,
            "dpumesh_k8s_port_problems": port_problems,
            "dpumesh_k8s_node_ippools": node_ippools,
            "dpumesh_k8s_node_pod_cidr_problems": node_pod_cidr_problems,
            "dpumesh_k8s_node_pod_cidr_mismatches": node_pod_cidr_mismatches,
            "dpumesh_k8s_apply_order": apply_order,
            "dpumesh_k8s_apply_plan": apply_plan,
            "dpumesh_k8s_object_ref": object_ref,
            "dpumesh_k8s_daemonset_problem": daemonset_problem,
            "dpumesh_k8s_crd_problem": crd_problem,
        }
