"""What the lab must look like for a cluster state: nodes, pods, their workloads and name resolution.

Built from the compiler's state model and each node's steering model, so the
lab's pods have exactly the IPs, MACs and VF representors the dataplane expects.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from dpumesh.dataplane.model import SteeringModel
from dpumesh.errors import DpumeshError
from dpumesh.lab import paths
from dpumesh.state.model import ClusterState, Pod, Service, ServicePort

UPSTREAM_ANNOTATION = "lab.dpumesh.io/upstream"
VERSION_LABEL = "version"
# Service port names (Istio's protocol prefixes) and appProtocols that mean "not HTTP": a line-echo server.
TCP_PROTOCOLS = ("tcp", "tls", "mongo", "mysql", "redis")


@dataclass(frozen=True)
class PodPlan:
    namespace: str
    name: str
    node: str
    ip: str
    mac: str
    representor: str
    gateway: str
    meshed: bool
    version: str
    http_ports: tuple[int, ...]
    tcp_ports: tuple[int, ...]
    upstreams: tuple[str, ...]
    hosts: str = field(repr=False)
    resolv_conf: str = field(repr=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def netns(self) -> str:
        return paths.pod_netns(self.namespace, self.name)

    @property
    def hardware(self) -> dict[str, str]:
        """What, when it changes, needs the pod's namespace and VF rebuilt."""
        return {"node": self.node, "ip": self.ip, "mac": self.mac, "representor": self.representor,
                "gateway": self.gateway, "netns": self.netns}  # fmt: skip


@dataclass(frozen=True)
class NodePlan:
    name: str
    fabric_ip: str
    steering: SteeringModel

    @property
    def netns(self) -> str:
        return paths.dpu_netns(self.name)


@dataclass
class LabPlan:
    network_mode: str
    fabric_prefix: int
    nodes: list[NodePlan]
    pods: list[PodPlan]


def _service_port_kind(port: ServicePort) -> str:
    marker = (port.app_protocol or port.name).lower()
    return "tcp" if marker.split("-")[0] in TCP_PROTOCOLS else "http"


def _selects(service: Service, pod: Pod) -> bool:
    return (
        service.namespace == pod.namespace
        and bool(service.selector)
        and all(pod.labels.get(k) == v for k, v in service.selector.items())
    )


def _port_kinds(state: ClusterState, pod: Pod) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(HTTP ports, TCP ports) of a pod: a port is TCP when a Service port targeting it says so."""
    kinds: dict[int, str] = {p.port: "http" for p in pod.ports if p.protocol == "TCP"}
    by_name = {p.name: p.port for p in pod.ports if p.name}
    for service in state.services:
        if not _selects(service, pod):
            continue
        for sp in service.ports:
            target = by_name.get(sp.target_port) if isinstance(sp.target_port, str) else sp.target_port
            if target in kinds and _service_port_kind(sp) == "tcp":
                kinds[target] = "tcp"
    return (
        tuple(sorted(p for p, k in kinds.items() if k == "http")),
        tuple(sorted(p for p, k in kinds.items() if k == "tcp")),
    )


def hosts_file(state: ClusterState, pod: Pod, cluster_domain: str) -> str:
    """/etc/hosts of a pod: every Service by the names Kubernetes DNS would answer in its namespace."""
    lines = ["127.0.0.1 localhost", f"{pod.ip} {pod.name}"]
    for svc in sorted(state.services, key=lambda s: s.meta.key):
        if svc.headless or not svc.cluster_ip:
            continue
        names = [f"{svc.name}.{svc.namespace}", f"{svc.name}.{svc.namespace}.svc"]
        names.append(f"{svc.name}.{svc.namespace}.svc.{cluster_domain}")
        if svc.namespace == pod.namespace:
            names.insert(0, svc.name)
        lines.append(f"{svc.cluster_ip} {' '.join(names)}")
    return "\n".join(lines) + "\n"


def resolv_conf(pod: Pod, cluster_domain: str) -> str:
    search = f"{pod.namespace}.svc.{cluster_domain} svc.{cluster_domain} {cluster_domain}"
    # No DNS server runs in the lab: names resolve from the hosts file; queries fail at once.
    return f"search {search}\nnameserver 127.0.0.1\noptions ndots:5 timeout:1 attempts:1\n"


def build_plan(
    state: ClusterState, steering: dict[str, SteeringModel], network_mode: str, cluster_domain: str
) -> LabPlan:
    nodes = [NodePlan(name, model.fabric_ip, model) for name, model in sorted(steering.items())]
    fabric_nets = {ipaddress.ip_interface(f"{n.fabric_ip}/24").network for n in nodes}
    if len(fabric_nets) > 1:
        listing = ", ".join(f"{n.name}={n.fabric_ip}" for n in nodes)
        raise DpumeshError(f"lab fabric: every DPU fabric IP must be in one /24 ({listing})")
    pods = []
    steering_pods = {(p.namespace, p.name): (node, p) for node, m in steering.items() for p in m.pods}
    for pod in sorted(state.pods, key=lambda p: p.meta.key):
        found = steering_pods.get((pod.namespace, pod.name))
        if found is None:
            raise DpumeshError(f"Pod {pod.meta.key}: node {pod.node} carries no DPU, the lab cannot host it")
        node, sp = found
        http_ports, tcp_ports = _port_kinds(state, pod)
        upstreams = [u.strip() for u in pod.meta.annotations.get(UPSTREAM_ANNOTATION, "").split(",") if u.strip()]
        pods.append(
            PodPlan(
                namespace=pod.namespace,
                name=pod.name,
                node=node,
                ip=sp.ip,
                mac=sp.mac,
                representor=sp.representor,
                gateway=steering[node].gateway_ip,
                meshed=sp.meshed,
                version=pod.labels.get(VERSION_LABEL, ""),
                http_ports=http_ports,
                tcp_ports=tcp_ports,
                upstreams=tuple(upstreams),
                hosts=hosts_file(state, pod, cluster_domain),
                resolv_conf=resolv_conf(pod, cluster_domain),
            )
        )
    prefix = 24
    return LabPlan(network_mode, prefix, nodes, pods)
