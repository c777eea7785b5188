"""Turn raw objects into a validated ClusterState.

Declarative state (a manifest directory) may hold Deployments and Pods without
status; they are expanded and given a node, an IP, a MAC and a VF here, the
same way every time, so the lab and `dpumesh compile` agree on them.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import socket
from typing import Any

from dpumesh.errors import Diagnostics
from dpumesh.state.model import (
    DPU_NODE_LABEL,
    FABRIC_IP_ANNOTATION,
    NETWORK_STATUS_ANNOTATION,
    VF,
    VF_REPRESENTOR_ANNOTATION,
    ClusterState,
    ContainerPort,
    EndpointSlice,
    IstioObject,
    Meta,
    Namespace,
    Node,
    Pod,
    Service,
    ServicePort,
)

ISTIO_KINDS = {
    "VirtualService",
    "DestinationRule",
    "ServiceEntry",
    "Sidecar",
    "PeerAuthentication",
    "AuthorizationPolicy",
    "RequestAuthentication",
}
UNSUPPORTED_KINDS = {
    "EnvoyFilter",
    "WasmPlugin",
    "Telemetry",
    "Gateway",
    "WorkloadEntry",
    "WorkloadGroup",
    "ProxyConfig",
}
CLUSTER_SCOPED = {"Node", "Namespace"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet"}


def _str_map(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


class StateBuilder:
    def __init__(self, service_cidr: str = "10.96.0.0/16"):
        self.diag = Diagnostics()
        self.state = ClusterState()
        self.service_net = ipaddress.ip_network(service_cidr)
        self._raw_pods: list[tuple[Meta, dict[str, Any], str]] = []

    # -- generic ----------------------------------------------------------------------------
    def meta(self, obj: dict[str, Any], order: int) -> Meta | None:
        kind = str(obj.get("kind") or "")
        md = obj.get("metadata")
        source = obj.get("_source", "")
        if not kind:
            self.diag.error("Object", "", source or f"#{order}", "kind", "is missing")
            return None
        if not isinstance(md, dict) or not isinstance(md.get("name"), str) or not md.get("name"):
            self.diag.error(kind, "", source or f"#{order}", "metadata.name", "is missing or not a string")
            return None
        namespace = "" if kind in CLUSTER_SCOPED else str(md.get("namespace") or "default")
        for fld in ("labels", "annotations"):
            if md.get(fld) is not None and not isinstance(md.get(fld), dict):
                self.diag.error(kind, namespace, md["name"], f"metadata.{fld}", "must be a mapping")
        return Meta(
            kind,
            namespace,
            md["name"],
            _str_map(md.get("labels")),
            _str_map(md.get("annotations")),
            str(md.get("creationTimestamp") or ""),
            order,
        )

    def build(self, objects: list[dict[str, Any]]) -> ClusterState:
        seen: dict[tuple[str, str, str], Meta] = {}
        workloads = []
        for order, obj in enumerate(objects):
            meta = self.meta(obj, order)
            if meta is None:
                continue
            ident = (meta.kind, meta.namespace, meta.name)
            if ident in seen:
                self.diag.error(meta.kind, meta.namespace, meta.name, "metadata.name", "is defined twice")
                continue
            seen[ident] = meta
            spec = obj.get("spec")
            if spec is not None and not isinstance(spec, dict):
                self.diag.error(meta.kind, meta.namespace, meta.name, "spec", "must be a mapping")
                continue
            spec = spec or {}
            if meta.kind == "Node":
                self.add_node(meta, spec)
            elif meta.kind == "Namespace":
                self.state.namespaces[meta.name] = Namespace(meta)
            elif meta.kind == "ServiceAccount":
                self.state.service_accounts.add(meta.key)
            elif meta.kind == "Service":
                self.add_service(meta, spec)
            elif meta.kind == "EndpointSlice":
                self.add_endpoint_slice(meta, obj)
            elif meta.kind == "Pod":
                self._raw_pods.append((meta, obj, ""))
            elif meta.kind in WORKLOAD_KINDS:
                workloads.append((meta, spec))
            elif meta.kind in ISTIO_KINDS:
                self.state.istio.setdefault(meta.kind, []).append(IstioObject(meta, spec))
            elif meta.kind in UNSUPPORTED_KINDS:
                self.state.unsupported.append(meta)
        for meta, spec in workloads:
            self.expand_workload(meta, spec)
        self.allocate_service_ips()
        self.add_pods()
        self.diag.raise_if_errors()
        return self.state

    # -- nodes ------------------------------------------------------------------------------
    def add_node(self, meta: Meta, spec: dict[str, Any]) -> None:
        cidr = str(spec.get("podCIDR") or "")
        if cidr:
            try:
                ipaddress.ip_network(cidr)
            except ValueError:
                self.diag.error("Node", "", meta.name, "spec.podCIDR", f"{cidr!r} is not a CIDR")
                cidr = ""
        has_dpu = meta.labels.get(DPU_NODE_LABEL, "").lower() == "true"
        fabric_ip = meta.annotations.get(FABRIC_IP_ANNOTATION, "")
        if fabric_ip and not _is_ip(fabric_ip):
            self.diag.error("Node", "", meta.name, f"metadata.annotations[{FABRIC_IP_ANNOTATION}]", "not an IP")
        self.state.nodes[meta.name] = Node(meta, cidr, has_dpu, fabric_ip)

    # -- services ---------------------------------------------------------------------------
    def add_service(self, meta: Meta, spec: dict[str, Any]) -> None:
        ports_raw = spec.get("ports") or []
        where = (meta.kind, meta.namespace, meta.name)
        if not isinstance(ports_raw, list):
            self.diag.error(*where, "spec.ports", "must be a list")
            return
        ports: list[ServicePort] = []
        by_number: dict[int, ServicePort] = {}
        for i, raw in enumerate(ports_raw):
            fld = f"spec.ports[{i}]"
            if not isinstance(raw, dict):
                self.diag.error(*where, fld, "must be a mapping")
                continue
            port = raw.get("port")
            if not _is_port(port):
                self.diag.error(*where, f"{fld}.port", f"{port!r} is not a port number (1-65535)")
                continue
            target = raw.get("targetPort", port)
            if not (_is_port(target) or (isinstance(target, str) and target)):
                self.diag.error(*where, f"{fld}.targetPort", f"{target!r} is neither a port number nor a name")
                continue
            name = raw.get("name") or ""
            if len(ports_raw) > 1 and not name:
                self.diag.error(*where, f"{fld}.name", "is required when a Service has several ports")
            protocol = str(raw.get("protocol") or "TCP")
            if protocol not in ("TCP", "UDP", "SCTP"):
                self.diag.error(*where, f"{fld}.protocol", f"{protocol!r} is not TCP, UDP or SCTP")
                continue
            sp = ServicePort(str(name), port, target, protocol, str(raw.get("appProtocol") or ""))
            if port in by_number and by_number[port].protocol == protocol:
                self.diag.error(*where, f"{fld}.port", f"port {port}/{protocol} is declared twice")
                continue
            by_number[port] = sp
            ports.append(sp)
        cluster_ip = str(spec.get("clusterIP") or "")
        if cluster_ip and cluster_ip != "None" and not _is_ip(cluster_ip):
            self.diag.error(*where, "spec.clusterIP", f"{cluster_ip!r} is not an IP address or None")
        selector = spec.get("selector")
        if selector is not None and not isinstance(selector, dict):
            self.diag.error(*where, "spec.selector", "must be a mapping")
        export_to = meta.annotations.get("networking.istio.io/exportTo", "*")
        svc = Service(meta, cluster_ip, ports, _str_map(selector), [e.strip() for e in export_to.split(",")])
        self.state.services.append(svc)

    def allocate_service_ips(self) -> None:
        """Declarative Services without a clusterIP get a stable one from the service CIDR."""
        used = {s.cluster_ip for s in self.state.services if s.cluster_ip}
        for svc in sorted(self.state.services, key=lambda s: s.meta.key):
            if not svc.cluster_ip:
                svc.cluster_ip = _stable_address(self.service_net, svc.meta.key, used)
                used.add(svc.cluster_ip)

    def add_endpoint_slice(self, meta: Meta, obj: dict[str, Any]) -> None:
        service = meta.labels.get("kubernetes.io/service-name", "")
        ports = {
            str(p.get("name") or ""): p.get("port")
            for p in obj.get("ports") or []
            if isinstance(p, dict) and _is_port(p.get("port"))
        }
        addresses = [
            a
            for ep in obj.get("endpoints") or []
            if isinstance(ep, dict) and (ep.get("conditions") or {}).get("ready", True) is not False
            for a in ep.get("addresses") or []
        ]
        if service:
            self.state.endpoint_slices.append(EndpointSlice(meta, service, ports, addresses))

    # -- workloads --------------------------------------------------------------------------
    def expand_workload(self, meta: Meta, spec: dict[str, Any]) -> None:
        where = (meta.kind, meta.namespace, meta.name)
        replicas = spec.get("replicas", 1)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            self.diag.error(*where, "spec.replicas", f"{replicas!r} is not a non-negative integer")
            return
        template = spec.get("template")
        if not isinstance(template, dict) or not isinstance(template.get("spec"), dict):
            self.diag.error(*where, "spec.template.spec", "is missing")
            return
        tmeta = template.get("metadata") or {}
        for i in range(replicas):
            name = f"{meta.name}-{i}"
            pod_meta = Meta(
                "Pod",
                meta.namespace,
                name,
                _str_map(tmeta.get("labels")),
                _str_map(tmeta.get("annotations")),
                meta.created,
                meta.order,
            )
            self._raw_pods.append((pod_meta, {"spec": template["spec"]}, f"{meta.kind}/{meta.name}"))

    def add_pods(self) -> None:
        dpu_nodes = sorted(n.name for n in self.state.nodes.values() if n.has_dpu)
        pending: list[tuple[Meta, dict[str, Any], str, str]] = []
        for index, (meta, obj, owner) in enumerate(sorted(self._raw_pods, key=lambda p: p[0].key)):
            spec = obj.get("spec") or {}
            where = ("Pod", meta.namespace, meta.name)
            if not isinstance(spec, dict):
                self.diag.error(*where, "spec", "must be a mapping")
                continue
            if spec.get("hostNetwork") is True:
                continue  # host-network pods have no VF and are never meshed
            node = spec.get("nodeName")
            if node is None:
                if not dpu_nodes:
                    self.diag.error(*where, "spec.nodeName", "is not set and no node carries a DPU")
                    continue
                node = dpu_nodes[index % len(dpu_nodes)]
            if node not in self.state.nodes:
                self.diag.error(*where, "spec.nodeName", f"node {node!r} is not in the cluster state")
                continue
            pending.append((meta, obj, owner, node))
        used_ips = {str((o.get("status") or {}).get("podIP") or "") for _, o, _, _ in pending} - {""}
        ip_owner: dict[str, str] = {}
        for meta, obj, owner, node_name in pending:
            pod = self.make_pod(meta, obj, owner, self.state.nodes[node_name], used_ips)
            if pod is None:
                continue
            if pod.ip in ip_owner:
                self.diag.error(
                    "Pod",
                    meta.namespace,
                    meta.name,
                    "status.podIP",
                    f"{pod.ip} is also the IP of pod {ip_owner[pod.ip]}",
                )
                continue
            ip_owner[pod.ip] = meta.key
            self.state.pods.append(pod)

    def make_pod(self, meta: Meta, obj: dict[str, Any], owner: str, node: Node, used_ips: set[str]) -> Pod | None:
        spec = obj["spec"]
        where = ("Pod", meta.namespace, meta.name)
        ports = self.container_ports(where, spec)
        ip = str((obj.get("status") or {}).get("podIP") or "")
        if ip and not _is_ip(ip):
            self.diag.error(*where, "status.podIP", f"{ip!r} is not an IP address")
            return None
        if not ip:
            if not node.pod_cidr:
                self.diag.error(*where, "status.podIP", f"is not set and node {node.name} has no spec.podCIDR")
                return None
            ip = _stable_address(_network(node.pod_cidr), meta.key, used_ips, reserved_low=2)
            used_ips.add(ip)
        status = _network_status(meta)
        mac = status.get("mac") or _mac_for(ip)
        pci = ((status.get("device-info") or {}).get("pci") or {}).get("pci-address", "")
        representor = meta.annotations.get(VF_REPRESENTOR_ANNOTATION) or f"vf{_hash(meta.key) % 16**8:08x}"
        sa = str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")
        meshed = self.is_meshed(meta)
        if meshed and not node.has_dpu:
            self.diag.error(*where, "spec.nodeName", f"node {node.name} has no DPU (label {DPU_NODE_LABEL}=true)")
            return None
        return Pod(meta, node.name, ip, mac, VF(representor, pci), sa, ports, meshed, owner)

    def container_ports(self, where: tuple[str, str, str], spec: dict[str, Any]) -> list[ContainerPort]:
        ports: list[ContainerPort] = []
        containers = spec.get("containers")
        if not isinstance(containers, list) or not containers:
            self.diag.error(*where, "spec.containers", "must be a non-empty list")
            return ports
        for ci, container in enumerate(containers):
            for pi, raw in enumerate((container or {}).get("ports") or []):
                number = raw.get("containerPort") if isinstance(raw, dict) else None
                if not _is_port(number):
                    self.diag.error(
                        *where, f"spec.containers[{ci}].ports[{pi}].containerPort", f"{number!r} is not a port"
                    )
                    continue
                ports.append(ContainerPort(number, str(raw.get("name") or ""), str(raw.get("protocol") or "TCP")))
        return ports

    def is_meshed(self, meta: Meta) -> bool:
        """Istio's injection decision: the pod label/annotation overrides the namespace label."""
        for source in (meta.labels, meta.annotations):
            value = source.get("sidecar.istio.io/inject")
            if value is not None:
                return value.lower() == "true" and self.namespace_injection(meta.namespace) is not False
        return bool(self.namespace_injection(meta.namespace))

    def namespace_injection(self, namespace: str) -> bool | None:
        ns = self.state.namespaces.get(namespace)
        if ns is None:
            return None
        label = ns.meta.labels.get("istio-injection")
        if label is not None:
            return label == "enabled"
        return True if ns.meta.labels.get("istio.io/rev") else None


def _is_port(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=1024)
def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A node's pod network, read once for all its pods."""
    return ipaddress.ip_network(cidr)


def _stable_address(net: ipaddress._BaseNetwork, key: str, used: set[str], reserved_low: int = 1) -> str:
    """An address of `net` picked from a hash of `key`, probing past used ones."""
    size = net.num_addresses - reserved_low - 1
    start = _hash(key) % size
    for step in range(size):
        candidate = str(net.network_address + reserved_low + (start + step) % size)
        if candidate not in used:
            return candidate
    raise ValueError(f"{net} is full")


def _mac_for(ip: str) -> str:
    try:
        packed = socket.inet_pton(socket.AF_INET, ip)  # what ipaddress packs, without its parsing cost
    except OSError:
        packed = ipaddress.ip_address(ip).packed[-4:]
    return "02:00:" + ":".join(f"{b:02x}" for b in packed)


def _network_status(meta: Meta) -> dict[str, Any]:
    """The first non-default network of multus' network-status annotation (the VF)."""
    raw = meta.annotations.get(NETWORK_STATUS_ANNOTATION)
    if not raw:
        return {}
    try:
        entries = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and not entry.get("default"):
            return entry
    return {}


def build_state(objects: list[dict[str, Any]], service_cidr: str = "10.96.0.0/16") -> ClusterState:
    return StateBuilder(service_cidr).build(objects)
