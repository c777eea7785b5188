"""The dataplane steering model of one node (schema in docs/architecture.md)."""

from __future__ import annotations

import socket
from typing import Any

from dpumesh.compiler.context import CompileContext

SCHEMA = "dpumesh.io/steering/v1"
EXCLUDE_ANNOTATIONS = {
    "traffic.sidecar.istio.io/excludeOutboundPorts": "outbound_exclude_ports",
    "traffic.sidecar.istio.io/excludeInboundPorts": "inbound_exclude_ports",
    "traffic.sidecar.istio.io/excludeOutboundIPRanges": "outbound_exclude_cidrs",
    "traffic.sidecar.istio.io/includeInboundPorts": "inbound_ports",
}


def steering_model(ctx: CompileContext) -> dict[str, Any]:
    layout = ctx.mesh.proxy
    node = ctx.state.nodes[ctx.node]
    pods = []
    for pod in sorted(ctx.local_pods, key=lambda p: p.meta.key):
        capture: dict[str, Any] = {
            "outbound": pod.meshed,
            "outbound_exclude_ports": [],
            "outbound_exclude_cidrs": [],
            "inbound_ports": [],  # empty: every TCP port, as Istio captures by default
            "inbound_exclude_ports": [],
        }
        for annotation, key in EXCLUDE_ANNOTATIONS.items():
            raw = pod.meta.annotations.get(annotation, "")
            values = [v.strip() for v in raw.split(",") if v.strip()]
            if raw.strip() == "*":
                continue
            if key.endswith("ports"):
                good = [int(v) for v in values if v.isdigit() and 1 <= int(v) <= 65535]
                if len(good) != len(values):
                    ctx.diag.error("Pod", pod.namespace, pod.name, f"metadata.annotations[{annotation}]", "not ports")
                capture[key] = good
            else:
                capture[key] = values
        pods.append(
            {
                "namespace": pod.namespace,
                "name": pod.name,
                "ip": pod.ip,
                "mac": pod.mac,
                "vf": {"representor": pod.vf.representor, "pci_address": pod.vf.pci_address},
                "meshed": pod.meshed,
                "capture": capture,
            }
        )
    remotes = []
    for other in sorted(ctx.state.nodes.values(), key=lambda n: n.name):
        if other.name == ctx.node or not other.has_dpu:
            continue
        fabric_ip = ctx.mesh.node_fabric_ips.get(other.name) or other.fabric_ip
        if not fabric_ip:
            ctx.diag.error("Node", "", other.name, "fabric IP", "unknown: set the dpumesh.io/dpu-fabric-ip annotation")
            continue
        remotes.append(
            {
                "node": other.name,
                "fabric_ip": fabric_ip,
                "pod_cidr": other.pod_cidr,
                "pod_ips": _pod_ips_by_node(ctx).get(other.name, []),
            }
        )
    return {
        "schema": SCHEMA,
        "node": ctx.node,
        "version": "",
        "network_mode": ctx.mesh.network_mode,
        "local": {
            "fabric_ip": ctx.mesh.node_fabric_ips.get(ctx.node) or node.fabric_ip,
            "pod_cidr": node.pod_cidr,
        },
        "tunnel": {"type": "vxlan", "vni": ctx.mesh.tunnel_vni, "dstport": 4789},
        "proxy": {
            "outbound_port": layout.outbound_port,
            "inbound_port": layout.inbound_port,
            "capture_mark": layout.capture_mark,
            "bypass_mark": layout.bypass_mark,
            "route_table": layout.route_table,
            "admin_port": layout.admin_port,
        },
        "pods": pods,
        "remote_nodes": remotes,
        "services": cluster_ip_services(ctx),
    }


def cluster_ip_services(ctx: CompileContext) -> list[dict[str, Any]]:
    """Every Service with a ClusterIP, its ports and their ready endpoints: the DPU translates the ClusterIP
    for traffic the proxy does not carry, as kube-proxy would on a node. The same for every node of a state."""
    key = ("steering services",)
    if key not in ctx.memo:
        services = []
        packed: dict[str, bytes | None] = {}  # address → its IPv4 bytes (None: not IPv4); each pod IP is asked often
        for svc in sorted(ctx.state.services, key=lambda s: s.meta.key):
            if svc.headless or not _is_ipv4(svc.cluster_ip):
                continue
            ports = []
            for sp in svc.ports:
                ready = set()  # (IPv4 bytes, port, address): sorted by address as a number
                for e in ctx.registry.port_endpoints(svc, sp.name, sp.target_port):
                    address = packed.get(e.address, b"")
                    if address == b"":
                        address = packed[e.address] = _ipv4_bytes(e.address)
                    if address is not None:
                        ready.add((address, e.port, e.address))
                ports.append(
                    {
                        "name": sp.name,
                        "protocol": sp.protocol,
                        "port": sp.port,
                        "endpoints": [{"ip": ip, "port": port} for _, port, ip in sorted(ready)],
                    }
                )
            services.append(
                {"namespace": svc.namespace, "name": svc.name, "cluster_ip": svc.cluster_ip, "ports": ports}
            )
        ctx.memo[key] = services
    return ctx.memo[key]


def _is_ipv4(text: str) -> bool:
    """A dotted-quad IPv4 address (strict, as `ipaddress` reads it; tens of thousands per state)."""
    return _ipv4_bytes(text) is not None


def _ipv4_bytes(text: str) -> bytes | None:
    try:
        return socket.inet_pton(socket.AF_INET, text)
    except OSError:
        return None


def _pod_ips_by_node(ctx: CompileContext) -> dict[str, list[str]]:
    """Node → sorted pod IPs, built once per state (every node lists every other node's pods)."""
    key = ("pod-ips-by-node",)
    if key not in ctx.memo:
        by_node: dict[str, list[str]] = {}
        for pod in ctx.state.pods:
            by_node.setdefault(pod.node, []).append(pod.ip)
        ctx.memo[key] = {node: sorted(ips) for node, ips in by_node.items()}
    return ctx.memo[key]
