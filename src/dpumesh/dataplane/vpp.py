"""The `vpp` backend: startup.conf, a CLI command file and the proxy's VCL config.

Same steering rules as `linux`, in VPP terms:
- anti-spoofing: one MACIP ACL per VF representor (only its pod's MAC + IP);
- steering: ACL-based forwarding (ABF) sends a meshed pod's TCP, and TCP to a
  meshed pod's inbound ports, to the proxy, which runs on VPP's host stack
  through VCL in its own application namespace on `loop0`;
- remote pods: routes via the remote DPU (underlay) or a VXLAN tunnel (overlay).
VPP numbers ACLs and MACIP ACLs (two separate pools) in creation order; the
command file creates each one right before it references it (see `validate_cli`).
The proxy's own connections start in the host stack, not on a VF, so ABF never
sends them back to the proxy (rule 4 needs no marks here).
ClusterIPs: one cnat translation per Service port (TCP, UDP) to its ready
endpoints. A meshed pod's representor translates in the FIB lookup, after ABF,
so its captured TCP still reaches the proxy with the ClusterIP. A non-meshed
pod's representor translates in the `cnat-input-ip4` feature, which runs
before ACLs and ABF on the ip4-unicast arc: the inbound capture then sees the
endpoint, so a local meshed endpoint is reached through the proxy as on `linux`.
The `k8s` source-NAT policy (representors are its pod interfaces, the gateway
its address) source-NATs a pod translated to itself (hairpin).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from dpumesh.dataplane.model import PodSteering, SteeringModel

PROXY_INTERFACE = "loop0"
FABRIC_INTERFACE = "fabric0"
TUNNEL_INTERFACE = "vxlan_tunnel0"
APP_NAMESPACE = "dpumesh-proxy"
APP_SOCKET = f"/run/vpp/app_ns_sockets/{APP_NAMESPACE}"
CLI_SOCKET = "/run/vpp/cli.sock"
CLI_FILE = "/etc/vpp/dpumesh.cli"


@dataclass
class VppDataplane:
    node: str
    version: str
    startup_conf: str
    cli: str
    vcl_conf: str


def render_vpp(model: SteeringModel, app_secret: int | None = None) -> VppDataplane:
    """`app_secret` guards the proxy's application namespace; deployments pass their own."""
    secret = app_secret if app_secret is not None else default_app_secret(model)
    return VppDataplane(
        model.node, model.version, render_startup(model), render_cli(model, secret), render_vcl(model, secret)
    )


def render_startup(model: SteeringModel) -> str:
    devices = [p for p in sorted(model.pods, key=lambda p: p.representor) if p.pci_address]
    lines = [
        f"# dpumesh vpp dataplane of node {model.node}, bundle {model.version}",
        "unix {",
        "  nodaemon",
        "  log /var/log/vpp/vpp.log",
        f"  cli-listen {CLI_SOCKET}",
        f"  startup-config {CLI_FILE}",
        "}",
        "api-trace {",
        "  on",
        "}",
        "socksvr {",
        "  default",
        "}",
        "cpu {",
        "  main-core 0",
        "}",
        "buffers {",
        "  buffers-per-numa 16384",
        "}",
        "dpdk {",
    ]
    lines += [f"  dev {p.pci_address} {{ name {p.representor} }}" for p in devices]
    lines += [
        "}",
        "plugins {",
        "  plugin default { enable }",
        "  plugin acl_plugin.so { enable }",
        "  plugin abf_plugin.so { enable }",
        "  plugin cnat_plugin.so { enable }",
        "}",
        "session {",
        "  enable",
        "  use-app-socket-api",
        "}",
        "tcp {",
        "  cc-algo cubic",
        "}",
        "",
    ]
    return "\n".join(lines)


class _Acls:
    """Hands out ACL indices in creation order, the way VPP assigns them."""

    def __init__(self) -> None:
        self.next_index = 0

    def take(self) -> int:
        self.next_index += 1
        return self.next_index - 1


def _outbound_acl(pod: PodSteering) -> str:
    src = f"src {pod.ip}/32"
    rules = [f"deny {src} dst 0.0.0.0/0 proto 6 dport {port}" for port in pod.capture.outbound_exclude_ports]
    rules += [f"deny {src} dst {cidr} proto 6" for cidr in pod.capture.outbound_exclude_cidrs]
    rules.append(f"permit {src} dst 0.0.0.0/0 proto 6")
    return ", ".join(rules)


def _inbound_acl(pods: list[PodSteering]) -> str:
    rules = []
    for pod in pods:
        dst = f"src 0.0.0.0/0 dst {pod.ip}/32 proto 6"
        rules += [f"deny {dst} dport {port}" for port in pod.capture.inbound_exclude_ports]
        if pod.capture.inbound_ports:
            rules += [f"permit {dst} dport {port}" for port in pod.capture.inbound_ports]
        else:
            rules.append(f"permit {dst}")
    return ", ".join(rules)


def render_cli(model: SteeringModel, secret: int) -> str:
    gw = model.gateway_ip
    pods = sorted(model.pods, key=lambda p: p.representor)
    meshed = [p for p in pods if p.meshed]
    acls, macip_acls = _Acls(), _Acls()
    out = [
        f"comment {{ dpumesh vpp dataplane of node {model.node}, bundle {model.version} }}",
        "create loopback interface instance 0",
        f"set interface ip address {PROXY_INTERFACE} {gw}/32",
        f"set interface state {PROXY_INTERFACE} up",
        f"set interface state {FABRIC_INTERFACE} up",
        f"app ns add id {APP_NAMESPACE} secret {secret} if {PROXY_INTERFACE}",
    ]
    for pod in pods:
        out += [
            f"set interface state {pod.representor} up",
            f"set interface unnumbered {pod.representor} use {PROXY_INTERFACE}",
            f"ip route add {pod.ip}/32 via {pod.ip} {pod.representor}",
            f"set ip neighbor static {pod.representor} {pod.ip} {pod.mac}",
            f"set acl-plugin macip acl permit ip {pod.ip}/32 mac {pod.mac} mask ff:ff:ff:ff:ff:ff",
            f"set acl-plugin macip interface {pod.representor} acl {macip_acls.take()}",
        ]
    if model.network_mode == "overlay":
        out += [
            f"create vxlan tunnel src {model.fabric_ip} dst {r.fabric_ip} vni {model.tunnel.vni}"
            f" dst_port {model.tunnel.dstport} instance {i}"
            for i, r in enumerate(model.remote_nodes)
        ]
        for i, remote in enumerate(model.remote_nodes):
            out += [
                f"set interface state vxlan_tunnel{i} up",
                f"set interface unnumbered vxlan_tunnel{i} use {PROXY_INTERFACE}",
                f"ip route add {remote.pod_cidr} via vxlan_tunnel{i}",
            ]
    else:
        out += [f"ip route add {r.pod_cidr} via {r.fabric_ip} {FABRIC_INTERFACE}" for r in model.remote_nodes]
    out += _cluster_ip_translations(model, pods)
    policy = 0
    for pod in meshed:
        if not pod.capture.outbound:
            continue
        policy += 1
        out += [
            f"set acl-plugin acl {_outbound_acl(pod)} tag outbound-{pod.representor}",
            f"abf policy add id {policy} acl {acls.take()} via {gw} {PROXY_INTERFACE}",
            f"abf attach ip4 policy {policy} priority 10 {pod.representor}",
        ]
    if meshed:
        policy += 1
        out += [
            f"set acl-plugin acl {_inbound_acl(meshed)} tag inbound-capture",
            f"abf policy add id {policy} acl {acls.take()} via {gw} {PROXY_INTERFACE}",
        ]
        ingress = [p.representor for p in pods] + [FABRIC_INTERFACE]
        if model.network_mode == "overlay":
            ingress += [f"vxlan_tunnel{i}" for i in range(len(model.remote_nodes))]
        out += [f"abf attach ip4 policy {policy} priority 20 {ifname}" for ifname in ingress]
    return "\n".join(out) + "\n"


def _cluster_ip_translations(model: SteeringModel, pods: list[PodSteering]) -> list[str]:
    out = []
    for service in model.services:
        for port in service.ports:
            where = f"{service.key} {port.port}/{port.protocol}"
            if port.protocol not in ("TCP", "UDP"):
                out.append(f"comment {{ {where}: cnat translates TCP and UDP only }}")
            elif not port.endpoints:
                out.append(f"comment {{ {where}: no ready endpoint }}")
            else:
                paths = " ".join(f"to ->{e.ip} {e.port}" for e in port.endpoints)
                out.append(f"cnat translation add proto {port.protocol} vip {service.cluster_ip} {port.port} {paths}")
    if not model.services:
        return out
    out += [f"set interface feature {p.representor} cnat-input-ip4 arc ip4-unicast" for p in pods if not p.meshed]
    out.append(f"set cnat snat-policy addr {model.gateway_ip}")
    out += [f"set cnat snat-policy if table k8s {p.representor}" for p in pods]
    out.append("set cnat snat-policy k8s")
    return out


def render_vcl(model: SteeringModel, secret: int) -> str:
    return "\n".join(
        [
            f"# VCL of dpu-proxy on node {model.node}: the proxy's listeners "
            f"{model.proxy.outbound_port}/{model.proxy.inbound_port} live in VPP's host stack",
            "vcl {",
            "  rx-fifo-size 4000000",
            "  tx-fifo-size 4000000",
            "  app-scope-local",
            "  app-scope-global",
            f"  namespace-id {APP_NAMESPACE}",
            f"  namespace-secret {secret}",
            f"  app-socket-api {APP_SOCKET}",
            "  use-mq-eventfd",
            "  event-queue-size 100000",
            "}",
            "",
        ]
    )


def default_app_secret(model: SteeringModel) -> int:
    """A stable per-node secret, for reproducible output where no secret is supplied."""
    return int.from_bytes(hashlib.sha256(f"dpumesh-proxy/{model.node}".encode()).digest()[:6], "big") or 1
