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


def check_cidr_overlaps(pools: Mapping[str, str], reserved: Mapping[str, str]) -> list[str]:
    """Each pool CIDR must be a valid network and overlap neither a reserved CIDR nor another pool."""
    problems: list[str] = []
    reserved_nets = {name: _network(cidr, name, problems) for name, cidr in reserved.items()}
    pool_nets = {name: _network(cidr, name, problems) for name, cidr in pools.items()}
    for name, net in pool_nets.items():
        if net is None:
            continue
        for other, other_net in reserved_nets.items():
            if other_net is not None and net.version == other_net.version and net.overlaps(other_net):
                problems.append(f"{name}: {net} overlaps {other} ({other_net})")
    names = [n for n, net in pool_nets.items() if net is not None]
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            a, b = pool_nets[first], pool_nets[second]
            if a.version == b.version and a.overlaps(b):
                problems.append(f"{first}: {a} overlaps {second} ({b})")
    return problems


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


def node_ippools(nodes: Sequence[Mapping], vf_cidr: str, node_prefix: int, explicit: Mapping[str, str]) -> dict:
    """One VF address pool per DPU node: ``explicit[node]`` when given, else the next free
    ``/node_prefix`` of ``vf_cidr`` in node-name order. Returns ``{"pools": [...], "problems": [...]}``.
    """
    problems: list[str] = []
    network = _network(vf_cidr, "spiderpool_vf_cidr", problems)
    if network is None:
        return {"pools": [], "problems": problems}
    if not network.prefixlen <= int(node_prefix) <= network.max_prefixlen - 2:
        message = f"spiderpool_vf_node_prefix: /{node_prefix} does not fit inside spiderpool_vf_cidr {network}"
        return {"pools": [], "problems": [message]}
    node_names = {n["name"] for n in nodes}
    pinned = {}
    for name, cidr in sorted(explicit.items()):
        var = f"spiderpool_vf_node_subnets.{name}"
        subnet = _network(cidr, var, problems)
        if name not in node_names:
            problems.append(f"{var}: not a DPU node (dpu_soc_node of a dpu_socs host)")
        elif subnet is not None and (subnet.version != network.version or not subnet.subnet_of(network)):
            problems.append(f"{var}: {subnet} is not inside spiderpool_vf_cidr {network}")
        elif subnet is not None and subnet.num_addresses < 4:
            problems.append(f"{var}: {subnet} is too small for a gateway and pods")
        elif subnet is not None:
            pinned[name] = subnet
    free = (s for s in network.subnets(new_prefix=int(node_prefix)) if not any(s.overlaps(p) for p in pinned.values()))
    pools = []
    for node in nodes:
        subnet = pinned.get(node["name"]) or next(free, None)
        if subnet is None:
            if node["name"] not in explicit:
                problems.append(f"spiderpool_vf_cidr: {network} has no /{node_prefix} left for node {node['name']}")
            continue
        pools.append(_node_pool(node["name"], subnet))
    problems += check_cidr_overlaps({f"node {p['node']}": p["subnet"] for p in pools}, {})
    return {"pools": pools, "problems": problems}


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
