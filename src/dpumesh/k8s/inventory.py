"""Inventory checks and derived settings for the Kubernetes roles.

Everything here returns problems as strings naming the variable (and host or list index)
and the field, so the roles' preflight can fail with all of them before touching anything.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence

NETWORK_MODES = ("underlay", "overlay")
_RESOURCE_NAME = re.compile(r"^[A-Za-z0-9_]{1,63}$")
_VF_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def check_choice(value, choices: Sequence[str], var: str) -> list[str]:
    if value not in choices:
        return [f"{var}: unknown value {value!r}; use one of: {', '.join(choices)}"]
    return []


def _is_ip(value) -> bool:
    try:
        ipaddress.ip_address(str(value))
    except ValueError:
        return False
    return True


def _positive_int(value) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 and str(number) == str(value).strip() else None


def dpu_inventory(socs: Mapping[str, Mapping], hosts: Mapping[str, Mapping]) -> dict:
    """Join dpu_socs and dpu_hosts host vars into one record per Kubernetes node with a DPU.

    Returns ``{"nodes": [...], "hosts": {...}, "problems": [...]}``; nodes are sorted by name.
    """
    problems: list[str] = []
    host_records: dict[str, dict] = {}
    for host, hv in sorted(hosts.items()):
        pf, num_vfs = hv.get("dpu_host_pf"), _positive_int(hv.get("dpu_host_num_vfs"))
        if not pf or not isinstance(pf, str):
            problems.append(f"host {host} (dpu_hosts): dpu_host_pf is not set")
        if num_vfs is None:
            problems.append(
                f"host {host} (dpu_hosts): dpu_host_num_vfs {hv.get('dpu_host_num_vfs')!r} is not a positive integer"
            )
        host_records[host] = {
            "name": host,
            "address": str(hv.get("ansible_host") or host),
            "pf": pf or "",
            "num_vfs": num_vfs or 0,
            "pod_cidr": str(hv.get("dpumesh_node_pod_cidr") or ""),
        }
    nodes: dict[str, dict] = {}
    for soc, sv in sorted(socs.items()):
        node, fabric_ip = sv.get("dpu_soc_node"), sv.get("dpu_soc_fabric_ip")
        if not node:
            problems.append(f"host {soc} (dpu_socs): dpu_soc_node is not set")
            continue
        if node in nodes:
            problems.append(f"host {soc} (dpu_socs): dpu_soc_node {node!r} is already the node of {nodes[node]['soc']}")
            continue
        if not _is_ip(fabric_ip):
            problems.append(f"host {soc} (dpu_socs): dpu_soc_fabric_ip {fabric_ip!r} is not an IP address")
        host = host_records.get(node, {})
        nodes[node] = {
            "name": node,
            "soc": soc,
            "soc_address": str(sv.get("ansible_host") or soc),
            "fabric_ip": str(fabric_ip or ""),
            "host_address": host.get("address", node),
            "pf": host.get("pf", ""),
            "num_vfs": host.get("num_vfs", 0),
            "pod_cidr": host.get("pod_cidr", ""),
        }
    return {"nodes": [nodes[n] for n in sorted(nodes)], "hosts": host_records, "problems": problems}


def parse_vf_range(text) -> tuple[int, int] | None:
    match = _VF_RANGE.match(str(text).strip())
    if not match:
        return None
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) is not None else first
    return (first, last) if first <= last else None


def default_vf_pools(hosts: Mapping[str, Mapping], resource_name: str, drivers: Sequence[str], device_type: str):
    """One pool over every DPU host's PF, each PF with the VFs all hosts carrying it have."""
    per_pf: dict[str, int] = {}
    for record in hosts.values():
        if record.get("pf") and record.get("num_vfs"):
            per_pf[record["pf"]] = min(per_pf.get(record["pf"], record["num_vfs"]), record["num_vfs"])
    return [
        {
            "resource_name": resource_name,
            "pfs": [{"name": pf, "vfs": f"0-{count - 1}"} for pf, count in sorted(per_pf.items())],
            "drivers": list(drivers),
            "device_type": device_type,
        }
    ]


def check_vf_pools(pools: Sequence[Mapping], hosts: Mapping[str, Mapping], var: str = "sriov_resource_pools"):
    """Resource names, PF names and VF ranges against what each DPU host really has."""
    problems: list[str] = []
    if not pools:
        return [f"{var}: no resource pool defined (and no dpu_hosts to derive one from)"]
    names: set[str] = set()
    taken: dict[str, list[tuple[int, int, str]]] = {}
    for index, pool in enumerate(pools):
        name = pool.get("resource_name", "")
        where = f"{var}[{index}] ({name or 'no name'})"
        if not _RESOURCE_NAME.match(str(name)):
            problems.append(f"{where}: resource_name must be 1-63 letters, digits or '_'")
        elif name in names:
            problems.append(f"{where}: resource_name is used by another pool")
        names.add(name)
        if pool.get("device_type", "netdevice") not in ("netdevice", "vfio-pci"):
            problems.append(f"{where}: device_type {pool.get('device_type')!r} is not netdevice or vfio-pci")
        if not pool.get("pfs"):
            problems.append(f"{where}: pfs is empty")
        for pf in pool.get("pfs") or []:
            pf_name, vfs = pf.get("name"), parse_vf_range(pf.get("vfs"))
            carriers = {h: r for h, r in hosts.items() if r.get("pf") == pf_name}
            if not carriers:
                problems.append(f"{where}: PF {pf_name!r} is not the dpu_host_pf of any dpu_hosts host")
                continue
            if vfs is None:
                problems.append(f"{where}: PF {pf_name}: VF range {pf.get('vfs')!r} is not 'N' or 'N-M' with N <= M")
                continue
            for host, record in sorted(carriers.items()):
                if vfs[1] >= record["num_vfs"]:
                    problems.append(
                        f"{where}: PF {pf_name}: VF range {vfs[0]}-{vfs[1]} is outside the PF's VFs on {host} "
                        f"(dpu_host_num_vfs {record['num_vfs']}: VFs 0-{record['num_vfs'] - 1})"
                    )
            for first, last, other in taken.get(pf_name, []):
                if vfs[0] <= last and first <= vfs[1]:
                    problems.append(f"{where}: PF {pf_name}: VF range {vfs[0]}-{vfs[1]} overlaps pool {other}")
            taken.setdefault(pf_name, []).append((vfs[0], vfs[1], str(name)))
    return problems


def pool_num_vfs(pool: Mapping, hosts: Mapping[str, Mapping]) -> int:
    """VFs every host carrying one of the pool's PFs has (the operator's numVfs for the pool)."""
    pf_names = {pf.get("name") for pf in pool.get("pfs") or []}
    counts = [r["num_vfs"] for r in hosts.values() if r.get("pf") in pf_names and r.get("num_vfs")]
    return min(counts) if counts else 0


def _network(value, var: str, problems: list[str]):
    try:
        return ipaddress.ip_network(str(value), strict=True)
    except ValueError as exc:
        problems.append(f"{var}: {value!r} is not a network address/prefix ({exc})")
        return None


_POD_CIDR_HINT = "the node's spec.podCIDR: kubectl get node {node} -o jsonpath='{{.spec.podCIDR}}'"


def check_node_pod_cidrs(nodes: Sequence[Mapping], pod_cidr: str, service_cidr: str) -> list[str]:
    """Each DPU node's ``dpumesh_node_pod_cidr`` (its spec.podCIDR and its VF address pool): set, a network
    inside ``dpumesh_pod_cidr``, room for the gateway and pods, no overlap with each other or the service CIDR;
    fabric IPs outside the pod CIDR.
    """
    problems: list[str] = []
    cluster = _network(pod_cidr, "dpumesh_pod_cidr", problems)
    services = _network(service_cidr, "dpumesh_service_cidr", problems)
    cluster_overlaps_services = (
        cluster is not None
        and services is not None
        and cluster.version == services.version
        and cluster.overlaps(services)
    )
    if cluster_overlaps_services:
        problems.append(f"dpumesh_pod_cidr: {cluster} overlaps dpumesh_service_cidr ({services})")
    seen: dict[str, object] = {}
    for node in nodes:
        var = f"host {node['name']} (dpu_hosts): dpumesh_node_pod_cidr"
        if not node.get("pod_cidr"):
            problems.append(f"{var} is not set; it is {_POD_CIDR_HINT.format(node=node['name'])}")
            continue
        subnet = _network(node["pod_cidr"], var, problems)
        if subnet is None:
            continue
        # Said once for the whole pod CIDR when that overlaps already.
        if (
            not cluster_overlaps_services
            and services is not None
            and subnet.version == services.version
            and subnet.overlaps(services)
        ):
            problems.append(f"{var} {subnet} overlaps dpumesh_service_cidr {services}")
        if cluster is not None and (subnet.version != cluster.version or not subnet.subnet_of(cluster)):
            problems.append(f"{var} {subnet} is not inside dpumesh_pod_cidr {cluster}")
        elif subnet.num_addresses < 4:
            problems.append(f"{var} {subnet} has no room for the gateway and pods (needs at least 4 addresses)")
        for other, other_net in seen.items():
            if subnet.version == other_net.version and subnet.overlaps(other_net):
                problems.append(f"{var} {subnet} overlaps node {other} ({other_net})")
        seen[node["name"]] = subnet
        fabric_ip = node.get("fabric_ip")
        if cluster is not None and _is_ip(fabric_ip) and ipaddress.ip_address(str(fabric_ip)) in cluster:
            problems.append(
                f"host {node.get('soc')} (dpu_socs): dpu_soc_fabric_ip {fabric_ip} is inside dpumesh_pod_cidr "
                f"{cluster}; the DPUs route pod addresses over the fabric, so it must lie outside"
            )
    return problems


def compare_node_pod_cidrs(nodes: Sequence[Mapping], cluster: Mapping[str, str], source: str) -> dict:
    """The inventory's pod CIDR of each DPU node against the node's spec.podCIDR in ``cluster`` ({node: CIDR}).

    The compiler and the dataplane route each node's spec.podCIDR (gateway = first address) while spiderpool
    hands out addresses from ``dpumesh_node_pod_cidr``: the two must be the same network. Nodes that have not
    joined yet (a bare API server) cannot be compared: ``{"problems": [...], "not_found": [node names]}``.
    """
    problems: list[str] = []
    not_found: list[str] = []
    for node in nodes:
        name, wanted = node["name"], str(node.get("pod_cidr") or "")
        if not wanted:
            continue  # reported by check_node_pod_cidrs
        if name not in cluster:
            not_found.append(name)
            continue
        actual = str(cluster[name] or "")
        if not actual:
            problems.append(
                f"node {name}: has no spec.podCIDR in {source}; the compiler routes each DPU node's pod CIDR, so "
                "the cluster must allocate node CIDRs (kube-controller-manager --allocate-node-cidrs)"
            )
        elif _same_network(actual, wanted) is False:
            problems.append(
                f"node {name}: dpumesh_node_pod_cidr {wanted} (its VF address pool) differs from spec.podCIDR "
                f"{actual} in {source}, which the compiler and dataplane route; set dpumesh_node_pod_cidr: "
                f"{actual} in host_vars/{name}.yml"
            )
    return {"problems": problems, "not_found": not_found}


def _same_network(a: str, b: str) -> bool | None:
    try:
        return ipaddress.ip_network(a, strict=False) == ipaddress.ip_network(b, strict=False)
    except ValueError:
        return None


def node_pod_cidrs(objects: Sequence[Mapping]) -> dict[str, str]:
    """{node name: spec.podCIDR} of the Node objects among ``objects`` (live or from manifests)."""
    return {
        str((obj.get("metadata") or {}).get("name")): str((obj.get("spec") or {}).get("podCIDR") or "")
        for obj in objects
        if isinstance(obj, Mapping) and obj.get("kind", "Node") == "Node" and (obj.get("metadata") or {}).get("name")
    }


def _node_pool(node: str, subnet) -> dict:
    """Gateway = first address (the DPU side of the VF link); pods get the rest."""
    last = subnet.broadcast_address - 1 if subnet.version == 4 else subnet.broadcast_address
    first_pod = subnet.network_address + 2
    return {
        "node": node,
        "subnet": str(subnet),
        "gateway": str(subnet.network_address + 1),
        "ips": [f"{first_pod}-{last}" if last > first_pod else str(first_pod)],
        "version": subnet.version,
    }


def node_ippools(nodes: Sequence[Mapping]) -> dict:
    """One VF address pool per DPU node: its pod CIDR (``dpumesh_node_pod_cidr``), the same network the
    compiler allocates pod addresses from and the dataplane routes. Returns ``{"pools": [...]}``.
    """
    pools = []
    for node in nodes:
        try:
            subnet = ipaddress.ip_network(str(node.get("pod_cidr") or ""), strict=True)
        except ValueError:
            continue  # reported by check_node_pod_cidrs
        if subnet.num_addresses >= 4:
            pools.append(_node_pool(node["name"], subnet))
    return {"pools": pools}


def check_ports(ports: Mapping[str, object], distinct: bool = False) -> list[str]:
    """Each value must be a TCP port; with ``distinct``, no two variables may name the same port."""
    problems = []
    seen: dict[int, str] = {}
    for var, value in ports.items():
        port = _positive_int(value)
        if port is None or port > 65535:
            problems.append(f"{var}: {value!r} is not a port number (1-65535)")
            continue
        if distinct and port in seen:
            problems.append(f"{var}: port {port} is also {seen[port]}")
        seen.setdefault(port, var)
    return problems
