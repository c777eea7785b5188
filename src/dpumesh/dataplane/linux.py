"""The `linux` backend: one nftables table plus the policy routing it needs.

Rendered from a SteeringModel as plain data (pure functions); `linux_apply`
puts it into a network namespace.  How a packet moves on the DPU:

- raw prerouting: each VF representor only accepts frames whose source MAC and
  IPv4 address are its pod's (ARP never reaches these hooks; pod neighbours are
  permanent entries instead, so forged ARP changes nothing).
- raw prerouting and output: every packet's conntrack entry lives in zone
  CONNTRACK_ZONE. SO_ORIGINAL_DST only looks in the default zone, so the
  proxy's listeners take the destination from the TPROXYed socket itself: the
  address the packet had when it was captured.
- mangle prerouting: packets of sockets the proxy took over transparently are
  marked `capture_mark`; a meshed pod's new TCP is TPROXYed to the outbound
  listener, before any ClusterIP translation (the proxy routes ClusterIPs).
- nat prerouting/output: a ClusterIP port is translated to a random endpoint.
- filter prerouting after nat: new TCP to a meshed local pod's inbound ports
  (also right after the translation above, as a sidecar sees a connection
  kube-proxy translated on the client's node) is TPROXYed to the inbound
  listener. `capture_mark` routes through `route_table` (local 0/0 dev lo).
- route output after nat: new connections of the proxy to a meshed local pod
  get `capture_mark` (unless they carry `bypass_mark`), so they leave through
  lo and come back in as inbound captures; `capture_mark` on anything else is
  cleared so it is routed normally.
- nat postrouting: a pod translated to itself (hairpin) is source-NATed to the
  gateway, so its answer comes back through the DPU and is translated back.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from dpumesh.dataplane.model import PodSteering, SteeringModel

TABLE = "dpumesh"
# Protocol id of the routes and rules this backend owns, so re-applying can remove stale ones.
ROUTE_PROTOCOL = 213
VXLAN_DEVICE = "dpumesh-vx"
# Label of the gateway address on lo (an address label must start with the device name).
GATEWAY_LABEL = "lo:dpumesh"
RULE_PRIORITY = 100
# Conntrack zone of all traffic on the DPU (see the module docstring); any value but the default 0.
CONNTRACK_ZONE = 213
# Meshed TCP the proxy's listener did not take (the proxy is down or restarting) is dropped, never
# forwarded in plaintext around it; the counter shows how much.
FAIL_CLOSED = 'counter drop comment "fail closed: no proxy listener"'
# nat output runs at dstnat (-100; nft names that priority for prerouting only); the route chain after it.
NAT_OUTPUT = -100
ROUTE_AFTER_NAT = -90
SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.ipv4.conf.all.rp_filter": "0",
    "net.ipv4.conf.default.rp_filter": "0",
}


@dataclass(frozen=True)
class Route:
    dst: str
    dev: str
    table: int | str = "main"
    type: str = "unicast"
    via: str = ""
    src: str = ""
    onlink: bool = False

    def args(self) -> list[str]:
        out = [self.type, self.dst] if self.type != "unicast" else [self.dst]
        if self.via:
            out += ["via", self.via]
        if self.dev:
            out += ["dev", self.dev]
        out += ["table", str(self.table), "proto", str(ROUTE_PROTOCOL)]
        if self.src:
            out += ["src", self.src]
        if self.onlink:
            out.append("onlink")
        return out


@dataclass(frozen=True)
class Neighbour:
    ip: str
    mac: str
    dev: str


@dataclass(frozen=True)
class Vxlan:
    name: str
    vni: int
    dstport: int
    local: str
    mac: str


@dataclass(frozen=True)
class FdbEntry:
    mac: str
    dst: str


@dataclass
class LinuxDataplane:
    node: str
    version: str
    ruleset: str
    gateway: str
    sysctls: dict[str, str]
    rules: list[dict[str, int]]
    routes: list[Route]
    neighbours: list[Neighbour]
    representors: list[str]
    vxlan: Vxlan | None = None
    fdb: list[FdbEntry] = field(default_factory=list)

    @property
    def ruleset_digest(self) -> str:
        return ruleset_digest(self.ruleset)


def ruleset_digest(ruleset: str) -> str:
    """The digest a rendered ruleset carries in its table comment ("" if none)."""
    found = re.search(r'comment "dpumesh ruleset ([0-9a-f]+)"', ruleset)
    return found.group(1) if found else ""


def vxlan_mac(fabric_ip: str) -> str:
    """The tunnel device MAC of the DPU with this fabric IP: peers derive it instead of learning it."""
    return "02:dd:" + ":".join(f"{int(octet):02x}" for octet in fabric_ip.split("."))


def render_linux(model: SteeringModel) -> LinuxDataplane:
    gw = model.gateway_ip
    proxy = model.proxy
    routes = [Route("0.0.0.0/0", "lo", proxy.route_table, "local", src=gw)]
    routes += [Route(f"{p.ip}/32", p.representor, src=gw) for p in model.pods]
    vxlan = None
    fdb: list[FdbEntry] = []
    neighbours = [Neighbour(p.ip, p.mac, p.representor) for p in model.pods]
    if model.network_mode == "overlay":
        vxlan = Vxlan(VXLAN_DEVICE, model.tunnel.vni, model.tunnel.dstport, model.fabric_ip, vxlan_mac(model.fabric_ip))
        for remote in model.remote_nodes:
            routes.append(Route(remote.pod_cidr, VXLAN_DEVICE, via=remote.fabric_ip, src=gw, onlink=True))
            neighbours.append(Neighbour(remote.fabric_ip, vxlan_mac(remote.fabric_ip), VXLAN_DEVICE))
            fdb.append(FdbEntry(vxlan_mac(remote.fabric_ip), remote.fabric_ip))
    else:
        routes += [Route(r.pod_cidr, "", via=r.fabric_ip, src=gw) for r in model.remote_nodes]
    return LinuxDataplane(
        node=model.node,
        version=model.version,
        ruleset=render_ruleset(model),
        gateway=gw,
        sysctls=dict(SYSCTLS),
        rules=[{"fwmark": proxy.capture_mark, "table": proxy.route_table, "priority": RULE_PRIORITY}],
        routes=sorted(routes, key=lambda r: (str(r.table), r.dst)),
        neighbours=neighbours,
        representors=sorted(p.representor for p in model.pods),
        vxlan=vxlan,
        fdb=fdb,
    )


def _set(elements: list[str]) -> str:
    return "{ " + ", ".join(elements) + " }"


def _inbound_sets(pods: tuple[PodSteering, ...]) -> dict[str, list[str]]:
    """Meshed local pods' inbound capture as nft set elements."""
    sets: dict[str, list[str]] = {"inbound_all_ports": [], "inbound_ports": [], "inbound_excluded": []}
    for pod in pods:
        cap = pod.capture
        if cap.inbound_ports:
            sets["inbound_ports"] += [f"{pod.ip} . {port}" for port in cap.inbound_ports]
        else:
            sets["inbound_all_ports"].append(pod.ip)
        sets["inbound_excluded"] += [f"{pod.ip} . {port}" for port in cap.inbound_exclude_ports]
    return sets


def _set_decl(name: str, type_: str, elements: list[str], flags: str = "") -> list[str]:
    lines = [f"  set {name} {{", f"    type {type_}"]
    if flags:
        lines.append(f"    flags {flags}")
    if elements:
        lines.append(f"    elements = {_set(sorted(set(elements)))}")
    return [*lines, "  }"]


def _service_nat(model: SteeringModel) -> list[str]:
    """Sets, maps and chains that translate ClusterIPs (see the module docstring)."""
    vmap: list[str] = []
    chains: list[str] = []
    for service in model.services:
        for port in service.ports:
            name = f"svc_{len(vmap)}"
            proto = port.protocol.lower()
            vmap.append(f"{service.cluster_ip} . {proto} . {port.port} : goto {name}")
            chains += [f"  chain {name} {{", f'    comment "{service.key} {port.port}/{port.protocol}"']
            endpoints = [(e.ip, e.port) for e in port.endpoints]
            if endpoints:
                targets = _set([f"{i} : {ip} . {target}" for i, (ip, target) in enumerate(endpoints)])
                chains.append(f"    meta l4proto {proto} dnat ip to numgen random mod {len(endpoints)} map {targets}")
            chains.append("  }")
    cap = model.proxy.capture_mark
    lines = _set_decl("service_ips", "ipv4_addr", [s.cluster_ip for s in model.services])
    lines += _set_decl("pod_pairs", "ipv4_addr . ipv4_addr", [f"{p.ip} . {p.ip}" for p in model.pods])
    lines += ["  map service_ports {", "    type ipv4_addr . inet_proto . inet_service : verdict"]
    if vmap:
        lines.append(f"    elements = {_set(vmap)}")
    lines += ["  }", *chains]
    lines += [
        "  chain service_nat {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        # Captured by the proxy, which picks the endpoint itself (and needs the ClusterIP to do it).
        f"    meta mark {cap} return",
        "    iifname @vf_representors ip daddr . meta l4proto . th dport vmap @service_ports",
        "  }",
        "  chain service_nat_output {",
        f"    type nat hook output priority {NAT_OUTPUT}; policy accept;",
        "    ip daddr . meta l4proto . th dport vmap @service_ports",
        "  }",
        # A pod translated to itself would answer itself directly; through the gateway it comes back here.
        "  chain hairpin {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        f'    ct status dnat ip saddr . ip daddr @pod_pairs counter snat ip to {model.gateway_ip} comment "hairpin"',
        "  }",
        # Still addressed to a ClusterIP after translation: a port the Service does not declare, or no endpoint.
        "  chain service_refuse {",
        "    type filter hook prerouting priority dstnat + 10; policy accept;",
        f"    iifname @vf_representors meta mark != {cap} ip daddr @service_ips jump refuse",
        "  }",
        "  chain refuse {",
        '    meta l4proto tcp counter reject with tcp reset comment "ClusterIP port without endpoint"',
        '    counter reject comment "ClusterIP port without endpoint"',
        "  }",
    ]
    return lines


def render_ruleset(model: SteeringModel) -> str:
    """The complete `table inet dpumesh`, replaced atomically by one `nft -f`."""
    proxy = model.proxy
    cap, bypass = proxy.capture_mark, proxy.bypass_mark
    pods = sorted(model.pods, key=lambda p: p.representor)
    meshed = [p for p in pods if p.meshed]
    to_outbound = f"meta l4proto tcp tproxy ip to 127.0.0.1:{proxy.outbound_port} meta mark set {cap} accept"
    to_inbound = f"tproxy ip to 127.0.0.1:{proxy.inbound_port} meta mark set {cap} accept"
    body: list[str] = []
    sets = _inbound_sets(tuple(meshed))
    body += _set_decl("vf_representors", "ifname", [f'"{p.representor}"' for p in pods])
    body += _set_decl("inbound_all_ports", "ipv4_addr", sets["inbound_all_ports"])
    body += _set_decl("inbound_ports", "ipv4_addr . inet_service", sets["inbound_ports"])
    body += _set_decl("inbound_excluded", "ipv4_addr . inet_service", sets["inbound_excluded"])
    body += _service_nat(model)

    # Anti-spoofing, before conntrack so a forged packet leaves no state behind.
    body += ["  chain antispoof {", "    type filter hook prerouting priority raw; policy accept;"]
    if pods:
        vmap = [f'"{p.representor}" : goto vf_{i}' for i, p in enumerate(pods)]
        body.append(f"    iifname vmap {_set(vmap)}")
    body.append("  }")
    for i, pod in enumerate(pods):
        body += [
            f"  chain vf_{i} {{",
            f'    comment "VF of {pod.key}"',
            f"    ether saddr != {pod.mac} counter drop",
            "    meta protocol != ip counter drop",
            f"    ip saddr != {pod.ip} counter drop",
            "  }",
        ]

    # Before conntrack (raw): one zone for every packet, so both directions of a connection meet.
    body += [
        "  chain conntrack_zone {",
        "    type filter hook prerouting priority raw; policy accept;",
        f"    ct zone set {CONNTRACK_ZONE}",
        "  }",
        "  chain conntrack_zone_output {",
        "    type filter hook output priority raw; policy accept;",
        f"    ct zone set {CONNTRACK_ZONE}",
        "  }",
    ]
    body += [
        "  chain prerouting {",
        "    type filter hook prerouting priority mangle; policy accept;",
        f"    meta l4proto tcp socket transparent 1 meta mark set {cap} accept",
        # Pods never open connections to the DPU itself (proxy admin, listeners); replies are fine.
        "    iifname @vf_representors fib daddr type local ct direction original counter drop",
        "    ct direction reply accept",
    ]
    if meshed:
        vmap = [f'"{p.representor}" : jump outbound_{i}' for i, p in enumerate(meshed) if p.capture.outbound]
        if vmap:
            body.append(f"    meta l4proto tcp iifname vmap {_set(vmap)}")
    body.append("  }")
    # After the ClusterIP translation (dstnat), so a translated connection is captured for the pod it reached.
    body += [
        "  chain inbound_capture {",
        "    type filter hook prerouting priority dstnat + 5; policy accept;",
        # Already with a proxy socket: an outbound capture, or a later packet of an accepted connection.
        f"    meta l4proto tcp socket transparent 1 meta mark set {cap} accept",
        "    ct direction reply accept",
        "    meta l4proto tcp ip daddr . tcp dport @inbound_excluded accept",
        f"    meta l4proto tcp ip daddr . tcp dport @inbound_ports {to_inbound}",
        f"    meta l4proto tcp ip daddr @inbound_all_ports {to_inbound}",
        # tproxy finds no listener while the proxy is down: fail closed instead of routing around it.
        f"    meta l4proto tcp ip daddr . tcp dport @inbound_ports {FAIL_CLOSED}",
        f"    meta l4proto tcp ip daddr @inbound_all_ports {FAIL_CLOSED}",
        "  }",
    ]
    for i, pod in enumerate(meshed):
        if not pod.capture.outbound:
            continue
        body += [f"  chain outbound_{i} {{", f'    comment "outbound capture of {pod.key}"']
        if pod.capture.outbound_exclude_ports:
            ports = _set([str(p) for p in pod.capture.outbound_exclude_ports])
            body.append(f"    tcp dport {ports} return")
        if pod.capture.outbound_exclude_cidrs:
            body.append(f"    ip daddr {_set(list(pod.capture.outbound_exclude_cidrs))} return")
        body += [f"    {to_outbound}", f"    meta l4proto tcp {FAIL_CLOSED}", "  }"]

    body += [
        # After the ClusterIP translation of the proxy's passthrough, which may reach a local meshed pod.
        "  chain proxy_output {",
        f"    type route hook output priority {ROUTE_AFTER_NAT}; policy accept;",
        f"    meta mark {bypass} accept",
        # Replies of the proxy's accepted (transparent) sockets go straight back to their client.
        "    ct direction reply goto clear_capture",
        "    meta l4proto != tcp goto clear_capture",
        "    ip daddr . tcp dport @inbound_excluded goto clear_capture",
        f"    ip daddr . tcp dport @inbound_ports meta mark set {cap} accept",
        f"    ip daddr @inbound_all_ports meta mark set {cap} accept",
        "    goto clear_capture",
        "  }",
        "  chain clear_capture {",
        f"    meta mark {cap} meta mark set 0",
        "  }",
    ]
    header = [
        f"# dpumesh linux dataplane of node {model.node}, bundle {model.version}",
        f"table inet {TABLE}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
    ]
    text_without_comment = "\n".join([*header, *body, "}", ""])
    digest = hashlib.sha256(text_without_comment.encode()).hexdigest()[:16]
    return "\n".join([*header, f'  comment "dpumesh ruleset {digest}"', *body, "}", ""])
