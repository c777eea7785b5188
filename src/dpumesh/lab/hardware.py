"""The emulated hardware: network namespaces, veth VFs and the fabric, as real kernel objects.

- fabric: namespace `dpumesh-fabric` with bridge `br-fabric`; each DPU's
  `fabric0` is a veth whose other end is a port of that bridge;
- DPU SoC of a node: namespace `dpumesh-<node>-dpu` (dataplane + dpu-proxy);
- pod: namespace `dpumesh-<ns>-<pod>` whose `eth0` is a veth standing in for
  its SR-IOV VF; the peer end, named like the VF representor, is in the DPU
  namespace.  The pod routes everything to its DPU's gateway address.
Every function is idempotent: it checks what exists before creating it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from dpumesh.dataplane.commands import ip_json, run
from dpumesh.lab import paths
from dpumesh.lab.plan import NodePlan, PodPlan


def existing_netns() -> set[str]:
    """The named network namespaces (read from their directory: an apply asks often, a command costs more)."""
    try:
        return {entry.name for entry in os.scandir(paths.NETNS_RUN)}
    except FileNotFoundError:
        return set()


def _link_exists(name: str, netns: str) -> bool:
    return bool(run(["ip", "-n", netns, "-o", "link", "show", "dev", name], check=False).strip())


def created_netns() -> set[str]:
    """The namespaces this lab created or took over (recorded in its runtime directory)."""
    try:
        return set(json.loads(paths.created_netns_file().read_text()))
    except (OSError, ValueError):
        return set()


def _record_netns(name: str, present: bool) -> None:
    names = created_netns()
    if (name in names) == present:
        return
    names = names | {name} if present else names - {name}
    target = paths.created_netns_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(sorted(names)))
    tmp.replace(target)


def _add_netns(name: str) -> bool:
    # Recorded before it exists, so an interrupted run leaves nothing `down` does not know about.
    _record_netns(name, True)
    if name in existing_netns():
        return False
    run(["ip", "netns", "add", name])
    run(["ip", "-n", name, "link", "set", "lo", "up"])
    # Nothing here speaks IPv6; switching it off keeps router/neighbour solicitations off the VFs.
    run(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"], name)
    run(["sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"], name)
    run(["sysctl", "-q", "-w", "net.ipv4.conf.default.rp_filter=0"], name)
    return True


def delete_netns(name: str) -> bool:
    """Delete a namespace (its veth ends go with it, taking their peers along)."""
    if name not in existing_netns():
        _record_netns(name, False)
        return False
    run(["ip", "netns", "del", name])
    _record_netns(name, False)
    return True


def ensure_fabric() -> list[str]:
    changes = []
    if _add_netns(paths.FABRIC_NETNS):
        changes.append(f"created fabric namespace {paths.FABRIC_NETNS}")
    if not _link_exists(paths.FABRIC_BRIDGE, paths.FABRIC_NETNS):
        run(["ip", "-n", paths.FABRIC_NETNS, "link", "add", paths.FABRIC_BRIDGE, "type", "bridge"])
        run(["ip", "-n", paths.FABRIC_NETNS, "link", "set", paths.FABRIC_BRIDGE, "up"])
        changes.append(f"created bridge {paths.FABRIC_BRIDGE}")
    return changes


def ensure_dpu(node: NodePlan, prefix: int) -> list[str]:
    """The DPU namespace of a node, wired to the fabric with its fabric IP."""
    ns, changes = node.netns, []
    if _add_netns(ns):
        changes.append(f"created DPU namespace {ns}")
    port = paths.fabric_port(node.name)
    if not _link_exists(paths.FABRIC_DEVICE, ns):
        run(["ip", "-n", paths.FABRIC_NETNS, "link", "del", port], check=False)
        run(["ip", "-n", ns, "link", "add", paths.FABRIC_DEVICE, "type", "veth", "peer", "name", port,
             "netns", paths.FABRIC_NETNS])  # fmt: skip
        run(["ip", "-n", paths.FABRIC_NETNS, "link", "set", port, "master", paths.FABRIC_BRIDGE, "up"])
        run(["ip", "-n", ns, "link", "set", paths.FABRIC_DEVICE, "up"])
        changes.append(f"wired {ns} to the fabric")
    want = f"{node.fabric_ip}/{prefix}"
    have = {
        f"{a['local']}/{a['prefixlen']}"
        for link in ip_json(["-n", ns, "addr", "show", "dev", paths.FABRIC_DEVICE])
        for a in link.get("addr_info", [])
        if a.get("family") == "inet"
    }
    if have != {want}:
        run(["ip", "-n", ns, "addr", "flush", "dev", paths.FABRIC_DEVICE])
        run(["ip", "-n", ns, "addr", "add", want, "dev", paths.FABRIC_DEVICE])
        changes.append(f"set fabric IP {want} on {node.name}")
    return changes


def ensure_pod(pod: PodPlan) -> list[str]:
    """The pod's namespace and its VF; the caller removes the pod first when its hardware changed."""
    dpu, ns = paths.dpu_netns(pod.node), pod.netns
    changes = []
    if _add_netns(ns):
        changes.append(f"created pod namespace {ns}")
    if not _link_exists(paths.POD_DEVICE, ns):
        run(["ip", "-n", dpu, "link", "del", pod.representor], check=False)
        run(["ip", "-n", dpu, "link", "add", pod.representor, "type", "veth", "peer", "name", paths.POD_DEVICE,
             "netns", ns])  # fmt: skip
        run(["ip", "-n", ns, "link", "set", paths.POD_DEVICE, "address", pod.mac])
        run(["ip", "-n", ns, "addr", "add", f"{pod.ip}/32", "dev", paths.POD_DEVICE])
        run(["ip", "-n", ns, "link", "set", paths.POD_DEVICE, "up"])
        run(["ip", "-n", dpu, "link", "set", pod.representor, "up"])
        representor_mac = ip_json(["-n", dpu, "link", "show", "dev", pod.representor])[0]["address"]
        run(["ip", "-n", ns, "neigh", "replace", pod.gateway, "lladdr", representor_mac, "dev", paths.POD_DEVICE,
             "nud", "permanent"])  # fmt: skip
        run(["ip", "-n", ns, "route", "replace", "default", "via", pod.gateway, "dev", paths.POD_DEVICE, "onlink"])
        changes.append(f"created VF {pod.representor} for {pod.key} on {pod.node}")
    changes += write_name_resolution(pod)
    return changes


def write_name_resolution(pod: PodPlan) -> list[str]:
    """/etc/netns/<pod netns>/{hosts,resolv.conf}: what `ip netns exec` shows the pod as /etc."""
    directory = paths.NETNS_ETC / pod.netns
    changed = []
    for name, text in (("hosts", pod.hosts), ("resolv.conf", pod.resolv_conf)):
        target = directory / name
        if target.is_file() and target.read_text() == text:
            continue
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(target)
        changed.append(f"wrote {target}")
    return changed


def remove_pod_hardware(netns: str, node: str, representor: str) -> list[str]:
    changes = []
    if delete_netns(netns):
        changes.append(f"removed pod namespace {netns}")
    dpu = paths.dpu_netns(node)
    if dpu in existing_netns() and _link_exists(representor, dpu):
        run(["ip", "-n", dpu, "link", "del", representor], check=False)
    remove_etc(netns)
    return changes


def remove_etc(netns: str) -> None:
    directory = paths.NETNS_ETC / netns
    if directory.is_dir():
        shutil.rmtree(directory)


def leftover_lab_netns() -> set[str]:
    """Every namespace named like the lab's, whoever created it (what `down --all` removes)."""
    return {n for n in existing_netns() if n.startswith(paths.PREFIX)}


def leftover_etc_dirs() -> list[Path]:
    if not paths.NETNS_ETC.is_dir():
        return []
    return [d for d in paths.NETNS_ETC.iterdir() if d.name.startswith(paths.PREFIX)]
