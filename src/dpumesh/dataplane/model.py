"""The steering model (`steering.json`, schema dpumesh.io/steering/v1) as typed records.

Every backend renders from these records; `parse_steering` checks the JSON once,
so a bad model fails with the field it is about before anything is rendered.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from dpumesh.errors import DpumeshError

SCHEMA = "dpumesh.io/steering/v1"
NETWORK_MODES = ("underlay", "overlay")
SERVICE_PROTOCOLS = ("TCP", "UDP", "SCTP")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
# Linux interface names: at most 15 bytes, no '/', ':' or whitespace.
_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")


@dataclass(frozen=True)
class ProxyPorts:
    outbound_port: int
    inbound_port: int
    capture_mark: int
    bypass_mark: int
    route_table: int
    admin_port: int


@dataclass(frozen=True)
class Capture:
    outbound: bool = True
    outbound_exclude_ports: tuple[int, ...] = ()
    outbound_exclude_cidrs: tuple[str, ...] = ()
    inbound_ports: tuple[int, ...] = ()
    inbound_exclude_ports: tuple[int, ...] = ()


@dataclass(frozen=True)
class PodSteering:
    namespace: str
    name: str
    ip: str
    mac: str
    representor: str
    pci_address: str
    vf_index: int
    meshed: bool
    capture: Capture = field(default_factory=Capture)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class RemoteNode:
    node: str
    fabric_ip: str
    pod_cidr: str
    pod_ips: tuple[str, ...]


@dataclass(frozen=True)
class Tunnel:
    type: str
    vni: int
    dstport: int


@dataclass(frozen=True)
class ServiceEndpoint:
    ip: str
    port: int


@dataclass(frozen=True)
class ServicePort:
    name: str
    protocol: str  # TCP, UDP or SCTP
    port: int
    endpoints: tuple[ServiceEndpoint, ...]  # ready endpoints, targetPort resolved


@dataclass(frozen=True)
class ServiceSteering:
    """A Service's ClusterIP, for traffic the proxy does not carry (translated on the DPU like kube-proxy)."""

    namespace: str
    name: str
    cluster_ip: str
    ports: tuple[ServicePort, ...]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class SteeringModel:
    node: str
    version: str
    network_mode: str
    fabric_ip: str
    pod_cidr: str
    tunnel: Tunnel
    proxy: ProxyPorts
    pods: tuple[PodSteering, ...]
    remote_nodes: tuple[RemoteNode, ...]
    services: tuple[ServiceSteering, ...] = ()

    @property
    def gateway_ip(self) -> str:
        return gateway_ip(self.pod_cidr)

    @property
    def meshed_pods(self) -> tuple[PodSteering, ...]:
        return tuple(p for p in self.pods if p.meshed)


def gateway_ip(pod_cidr: str) -> str:
    """The DPU's own address in its pod CIDR (the first host): the pods' gateway and the proxy's source."""
    return str(ipaddress.ip_network(pod_cidr).network_address + 1)


_REQUIRED = object()


class _Reader:
    """Reads fields of the JSON model, naming the path of any bad one."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def get(self, obj: Any, path: str, key: str, kind: type, default: Any = _REQUIRED) -> Any:
        """obj[key] if it has type `kind`; a missing key is a problem unless a default is given."""
        where = f"{path}.{key}" if path else key
        if not isinstance(obj, dict) or key not in obj:
            if default is _REQUIRED:
                self.problems.append(f"{where}: is missing")
                return kind()
            return default
        value = obj[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            self.problems.append(f"{where}: {value!r} is not of type {kind.__name__}")
            return kind() if default is _REQUIRED else default
        return value

    def port(self, obj: Any, path: str, key: str) -> int:
        value = self.get(obj, path, key, int)
        if not 1 <= value <= 65535:
            self.problems.append(f"{path}.{key}: {value!r} is not a port (1-65535)")
        return value

    def ports(self, obj: Any, path: str, key: str) -> tuple[int, ...]:
        values = self.get(obj, path, key, list, [])
        bad = [v for v in values if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 65535]
        if bad:
            self.problems.append(f"{path}.{key}: {bad!r} are not ports (1-65535)")
        return tuple(sorted(set(values) - set(bad)))

    def ip(self, obj: Any, path: str, key: str) -> str:
        value = self.get(obj, path, key, str)
        try:
            if ipaddress.ip_address(value).version != 4:
                raise ValueError
        except ValueError:
            self.problems.append(f"{path}.{key}: {value!r} is not an IPv4 address")
        return value

    def cidr(self, value: Any, where: str) -> str:
        try:
            return str(ipaddress.ip_network(value, strict=False))
        except (ValueError, TypeError):
            self.problems.append(f"{where}: {value!r} is not an IPv4 CIDR")
            return "0.0.0.0/32"


def parse_steering(data: dict[str, Any]) -> SteeringModel:
    """The typed model of a steering.json document; DpumeshError lists every bad field."""
    r = _Reader()
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise DpumeshError(f"steering model: schema must be {SCHEMA!r}")
    node = r.get(data, "", "node", str)
    mode = r.get(data, "", "network_mode", str)
    if mode not in NETWORK_MODES:
        r.problems.append(f"network_mode: {mode!r} is not one of {', '.join(NETWORK_MODES)}")
    local = r.get(data, "", "local", dict)
    tunnel_raw = r.get(data, "", "tunnel", dict)
    proxy_raw = r.get(data, "", "proxy", dict)
    proxy = ProxyPorts(
        *(r.port(proxy_raw, "proxy", k) for k in ("outbound_port", "inbound_port")),
        *(r.get(proxy_raw, "proxy", k, int) for k in ("capture_mark", "bypass_mark", "route_table")),
        r.port(proxy_raw, "proxy", "admin_port"),
    )
    if proxy.capture_mark == proxy.bypass_mark or not (proxy.capture_mark > 0 and proxy.bypass_mark > 0):
        r.problems.append("proxy: capture_mark and bypass_mark must be different positive numbers")
    if not 1 <= proxy.route_table < 253:
        r.problems.append(f"proxy.route_table: {proxy.route_table!r} must be 1-252 (253-255 are reserved)")
    pods = tuple(_pod(r, raw, f"pods[{i}]") for i, raw in enumerate(r.get(data, "", "pods", list)))
    _check_unique(r, pods)
    remotes = tuple(
        RemoteNode(
            r.get(raw, f"remote_nodes[{i}]", "node", str),
            r.ip(raw, f"remote_nodes[{i}]", "fabric_ip"),
            r.cidr(r.get(raw, f"remote_nodes[{i}]", "pod_cidr", str), f"remote_nodes[{i}].pod_cidr"),
            tuple(r.get(raw, f"remote_nodes[{i}]", "pod_ips", list)),
        )
        for i, raw in enumerate(r.get(data, "", "remote_nodes", list))
    )
    model = SteeringModel(
        node=node,
        version=r.get(data, "", "version", str),
        network_mode=mode,
        fabric_ip=r.ip(local, "local", "fabric_ip"),
        pod_cidr=r.cidr(r.get(local, "local", "pod_cidr", str), "local.pod_cidr"),
        tunnel=Tunnel(
            r.get(tunnel_raw, "tunnel", "type", str),
            r.get(tunnel_raw, "tunnel", "vni", int),
            r.port(tunnel_raw, "tunnel", "dstport"),
        ),
        proxy=proxy,
        pods=pods,
        remote_nodes=remotes,
        services=_services(r, r.get(data, "", "services", list, [])),
    )
    if model.tunnel.type != "vxlan" or not 1 <= model.tunnel.vni < 2**24:
        r.problems.append("tunnel: type must be 'vxlan' and vni 1-16777215")
    if not r.problems and model.gateway_ip in {p.ip for p in pods}:
        r.problems.append(f"pods: {model.gateway_ip} is the DPU's gateway address and cannot be a pod IP")
    if r.problems:
        raise DpumeshError(f"steering model of node {node or '?'}:\n  " + "\n  ".join(r.problems))
    return model


def _pod(r: _Reader, raw: Any, path: str) -> PodSteering:
    vf = r.get(raw, path, "vf", dict)
    cap = r.get(raw, path, "capture", dict, {})
    representor = r.get(vf, f"{path}.vf", "representor", str)
    if not _IFNAME.match(representor):
        r.problems.append(f"{path}.vf.representor: {representor!r} is not an interface name (1-15 characters)")
    mac = r.get(raw, path, "mac", str).lower()
    if not _MAC.match(mac):
        r.problems.append(f"{path}.mac: {mac!r} is not a MAC address")
    exclude_cidrs = r.get(cap, f"{path}.capture", "outbound_exclude_cidrs", list, [])
    return PodSteering(
        namespace=r.get(raw, path, "namespace", str),
        name=r.get(raw, path, "name", str),
        ip=r.ip(raw, path, "ip"),
        mac=mac,
        representor=representor,
        pci_address=r.get(vf, f"{path}.vf", "pci_address", str, ""),
        vf_index=r.get(vf, f"{path}.vf", "index", int, 0),
        meshed=r.get(raw, path, "meshed", bool),
        capture=Capture(
            outbound=r.get(cap, f"{path}.capture", "outbound", bool, True),
            outbound_exclude_ports=r.ports(cap, f"{path}.capture", "outbound_exclude_ports"),
            outbound_exclude_cidrs=tuple(
                r.cidr(c, f"{path}.capture.outbound_exclude_cidrs[{i}]") for i, c in enumerate(exclude_cidrs)
            ),
            inbound_ports=r.ports(cap, f"{path}.capture", "inbound_ports"),
            inbound_exclude_ports=r.ports(cap, f"{path}.capture", "inbound_exclude_ports"),
        ),
    )


def _check_unique(r: _Reader, pods: tuple[PodSteering, ...]) -> None:
    for attr in ("ip", "mac", "representor"):
        seen: dict[str, str] = {}
        for pod in pods:
            value = getattr(pod, attr)
            if value in seen:
                r.problems.append(f"pods: {pod.key} has the same {attr} {value} as {seen[value]}")
            seen.setdefault(value, pod.key)


def _services(r: _Reader, raw_services: list[Any]) -> tuple[ServiceSteering, ...]:
    """The `services` list (absent in models written before it existed: no ClusterIP translation)."""
    services = []
    seen: dict[tuple[str, str, int], str] = {}
    for i, raw in enumerate(raw_services):
        path = f"services[{i}]"
        service = ServiceSteering(
            namespace=r.get(raw, path, "namespace", str),
            name=r.get(raw, path, "name", str),
            cluster_ip=r.ip(raw, path, "cluster_ip"),
            ports=tuple(
                _service_port(r, p, f"{path}.ports[{j}]") for j, p in enumerate(r.get(raw, path, "ports", list))
            ),
        )
        for port in service.ports:
            where = (service.cluster_ip, port.protocol, port.port)
            if where in seen:
                what = f"{port.port}/{port.protocol} of {service.cluster_ip}"
                r.problems.append(f"{path} ({service.key}): {what} is also in {seen[where]}")
            seen.setdefault(where, service.key)
        services.append(service)
    return tuple(services)


def _service_port(r: _Reader, raw: Any, path: str) -> ServicePort:
    protocol = r.get(raw, path, "protocol", str)
    if protocol not in SERVICE_PROTOCOLS:
        r.problems.append(f"{path}.protocol: {protocol!r} is not one of {', '.join(SERVICE_PROTOCOLS)}")
    endpoints = tuple(
        ServiceEndpoint(r.ip(e, f"{path}.endpoints[{k}]", "ip"), r.port(e, f"{path}.endpoints[{k}]", "port"))
        for k, e in enumerate(r.get(raw, path, "endpoints", list))
    )
    return ServicePort(r.get(raw, path, "name", str, ""), protocol, r.port(raw, path, "port"), endpoints)
