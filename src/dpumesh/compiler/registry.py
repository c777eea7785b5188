"""The service registry: Kubernetes Services and ServiceEntries as Istio sees them.

Each entry is a host (FQDN) with ports (protocol chosen as Istio does), VIPs,
endpoints with their labels, and the namespaces it is exported to.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from dpumesh.errors import Diagnostics
from dpumesh.state.model import ClusterState, IstioObject, Pod, Service

# Istio's protocol selection: `<protocol>[-<suffix>]` port names and appProtocol values.
HTTP_PROTOCOLS = {"http": "HTTP", "http2": "HTTP2", "grpc": "GRPC", "grpc-web": "HTTP", "h2c": "HTTP2"}
TLS_PROTOCOLS = {"https": "TLS", "tls": "TLS"}
TCP_PROTOCOLS = {"tcp": "TCP", "mongo": "TCP", "mysql": "TCP", "redis": "TCP"}
KNOWN_PROTOCOLS = HTTP_PROTOCOLS | TLS_PROTOCOLS | TCP_PROTOCOLS


def port_protocol(name: str, app_protocol: str) -> tuple[str, bool]:
    """(protocol, explicit) for a port: appProtocol first, then the name prefix.

    A Service port with neither is "TCP", not explicit: its protocol is detected per connection (`Host.sniffs`).
    """
    for value in (app_protocol.lower(), name.lower().split("-", 1)[0]):
        if value in KNOWN_PROTOCOLS:
            return KNOWN_PROTOCOLS[value], True
        if value.startswith("kubernetes.io/h2c"):
            return "HTTP2", True
    return "TCP", False


def is_http(protocol: str) -> bool:
    return protocol in ("HTTP", "HTTP2", "GRPC")


@dataclass(slots=True)  # tens of thousands per state
class HostEndpoint:
    address: str
    port: int
    labels: dict[str, str]
    pod: Pod | None = None
    meshed: bool = False
    service_account: str = ""  # namespace/sa of the workload, for SAN checks


@dataclass
class HostPort:
    number: int
    name: str
    protocol: str
    explicit: bool
    target_port: int | str = 0
    endpoints: list[HostEndpoint] = field(default_factory=list)


@dataclass
class Host:
    fqdn: str
    namespace: str
    kind: str  # Service or ServiceEntry
    source: str  # namespace/name of the object
    vips: list[str]
    ports: dict[int, HostPort]
    export_to: list[str]
    resolution: str = "STATIC"  # STATIC | DNS | NONE (NONE: original destination)
    mesh_external: bool = False
    short_name: str = ""  # Kubernetes Service name, for the short DNS forms

    def visible_to(self, namespace: str) -> bool:
        return exported_to(self.export_to, self.namespace, namespace)

    def sniffs(self, port: int) -> bool:
        """Whether a client's proxy detects the port's protocol, as Istio does for a Service port without a
        protocol name or appProtocol: HTTP/1.x and h2c are routed as HTTP, anything else as TCP."""
        return self.kind == "Service" and not self.ports[port].explicit


def exported_to(export_to: list[str], owner_ns: str, client_ns: str) -> bool:
    for entry in export_to or ["*"]:
        if entry == "*" or entry == client_ns or (entry == "." and owner_ns == client_ns):
            return True
    return False


class ServiceRegistry:
    def __init__(self, state: ClusterState, cluster_domain: str, diag: Diagnostics):
        self.hosts: dict[str, Host] = {}
        self.by_vip: dict[tuple[str, int], Host] = {}
        self.cluster_domain = cluster_domain
        self.diag = diag
        # Indexes: every Service looks up its namespace's pods and slices, not the whole cluster's.
        self._pods_by_ns: dict[str, list[Pod]] = {}
        for pod in state.pods:
            self._pods_by_ns.setdefault(pod.namespace, []).append(pod)
        self._pods_by_label: dict[str, dict[tuple[str, str], list[Pod]]] = {}
        self._slices: dict[tuple[str, str], list] = {}
        self._port_endpoints: dict[tuple, list[HostEndpoint]] = {}
        self._pods_by_ip: dict[str, dict[str, Pod]] = {}  # namespace → its pods by IP, for EndpointSlices
        for es in state.endpoint_slices:
            self._slices.setdefault((es.meta.namespace, es.service), []).append(es)
        for svc in state.services:
            self._add_service(state, svc)
        for se in state.of_kind("ServiceEntry"):
            self._add_service_entry(se)

    def fqdn(self, name: str, namespace: str) -> str:
        return f"{name}.{namespace}.svc.{self.cluster_domain}"

    def resolve(self, host: str, namespace: str) -> str:
        """Istio's short-name resolution: `reviews` in namespace ns means reviews.ns.svc.<domain>."""
        if "." not in host and host != "*":
            return self.fqdn(host, namespace)
        parts = host.split(".")
        if len(parts) == 2 and self.fqdn(parts[0], parts[1]) in self.hosts:
            return self.fqdn(parts[0], parts[1])
        if len(parts) == 3 and parts[2] == "svc":
            return f"{host}.{self.cluster_domain}"
        return host

    def _add_service(self, state: ClusterState, svc: Service) -> None:
        fqdn = self.fqdn(svc.name, svc.namespace)
        ports: dict[int, HostPort] = {}
        for sp in svc.ports:
            if sp.protocol != "TCP":
                continue  # UDP/SCTP bypass the proxy, as with sidecars
            protocol, explicit = port_protocol(sp.name, sp.app_protocol)
            ports[sp.port] = HostPort(sp.port, sp.name, protocol, explicit, sp.target_port)
        host = Host(
            fqdn,
            svc.namespace,
            "Service",
            svc.meta.key,
            [] if svc.headless else [svc.cluster_ip],
            ports,
            svc.export_to,
            resolution="NONE" if svc.headless else "STATIC",
            short_name=svc.name,
        )
        self._fill_endpoints(state, svc, host)
        self.hosts[fqdn] = host
        for vip in host.vips:
            for number in ports:
                self.by_vip[(vip, number)] = host

    def _fill_endpoints(self, state: ClusterState, svc: Service, host: Host) -> None:
        for hp in host.ports.values():
            hp.endpoints += self.port_endpoints(svc, hp.name, hp.target_port)

    def port_endpoints(self, svc: Service, name: str, target_port: int | str) -> list[HostEndpoint]:
        """The ready endpoints of one Service port (any protocol): its EndpointSlices, else its selector.

        Found once per port (the hosts and the steering model both ask); callers must not change the list.
        """
        key = (svc.meta.key, name, target_port)
        if key not in self._port_endpoints:
            self._port_endpoints[key] = self._find_port_endpoints(svc, name, target_port)
        return self._port_endpoints[key]

    def _find_port_endpoints(self, svc: Service, name: str, target_port: int | str) -> list[HostEndpoint]:
        slices = self._slices.get((svc.namespace, svc.name), [])
        if slices:
            pods_by_ip = self._pods_by_ip.get(svc.namespace)
            if pods_by_ip is None:
                pods_by_ip = self._pods_by_ip[svc.namespace] = {
                    p.ip: p for p in self._pods_by_ns.get(svc.namespace, [])
                }
            found = []
            for es in slices:
                port = es.ports.get(name) or (es.ports.get("") if len(es.ports) == 1 else None)
                if port:
                    found += [_endpoint(address, port, pods_by_ip.get(address)) for address in es.addresses]
            return found
        if not svc.selector:
            return []
        found = []
        selector = svc.selector.items()
        candidates = self._pods_selected_by(svc.namespace, svc.selector)
        if len(selector) > 1:  # the index found the pods with one of the labels: check the others
            candidates = [p for p in candidates if all(p.labels.get(k) == v for k, v in selector)]
        for pod in candidates:
            if isinstance(target_port, str):
                target = pod.named_ports.get(target_port)
                if target is None:
                    continue  # the pod does not expose that named port: not an endpoint, as in Kubernetes
            else:
                target = target_port
            found.append(_endpoint(pod.ip, target, pod))
        return found

    def _pods_selected_by(self, namespace: str, selector: dict[str, str]) -> list[Pod]:
        """The namespace's pods carrying one of the selector's labels: the candidates to check in full."""
        label = min(selector.items())
        index = self._pods_by_label.get(namespace)
        if index is None:
            index = self._pods_by_label[namespace] = {}
            for pod in self._pods_by_ns.get(namespace, []):
                for item in pod.labels.items():
                    index.setdefault(item, []).append(pod)
        return index.get(label, [])

    def _add_service_entry(self, se: IstioObject) -> None:
        spec, meta = se.spec, se.meta
        where = ("ServiceEntry", meta.namespace, meta.name)
        hosts = spec.get("hosts")
        if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) and h for h in hosts):
            self.diag.error(*where, "spec.hosts", "must be a non-empty list of host names")
            return
        resolution = spec.get("resolution", "NONE")
        if resolution not in ("NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"):
            self.diag.error(*where, "spec.resolution", f"{resolution!r} is not NONE, STATIC, DNS or DNS_ROUND_ROBIN")
            return
        location = spec.get("location", "MESH_EXTERNAL")
        if location not in ("MESH_EXTERNAL", "MESH_INTERNAL"):
            self.diag.error(*where, "spec.location", f"{location!r} is not MESH_EXTERNAL or MESH_INTERNAL")
            return
        addresses = spec.get("addresses") or []
        for i, addr in enumerate(addresses):
            try:
                ipaddress.ip_network(addr, strict=False)
            except (ValueError, TypeError):
                self.diag.error(*where, f"spec.addresses[{i}]", f"{addr!r} is not an IP address or CIDR")
                return
        ports: dict[int, HostPort] = {}
        for i, raw in enumerate(spec.get("ports") or []):
            number = raw.get("number") if isinstance(raw, dict) else None
            if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= 65535:
                self.diag.error(*where, f"spec.ports[{i}].number", f"{number!r} is not a port number")
                continue
            proto_name = str(raw.get("protocol") or "")
            protocol, explicit = port_protocol(proto_name, "")
            ports[number] = HostPort(
                number, str(raw.get("name") or ""), protocol, explicit, raw.get("targetPort", number)
            )
        if not ports:
            self.diag.error(*where, "spec.ports", "must list at least one port")
            return
        endpoints = spec.get("endpoints") or []
        if resolution == "STATIC" and not endpoints and not spec.get("workloadSelector"):
            self.diag.error(*where, "spec.endpoints", "resolution STATIC needs endpoints")
            return
        export_to = spec.get("exportTo") or ["*"]
        for fqdn in hosts:
            host = Host(
                fqdn,
                meta.namespace,
                "ServiceEntry",
                meta.key,
                [str(a) for a in addresses],
                {n: HostPort(p.number, p.name, p.protocol, p.explicit, p.target_port) for n, p in ports.items()},
                [str(e) for e in export_to],
                resolution="STATIC" if resolution == "STATIC" else ("DNS" if resolution.startswith("DNS") else "NONE"),
                mesh_external=location == "MESH_EXTERNAL",
            )
            for i, ep in enumerate(endpoints):
                if not isinstance(ep, dict) or not isinstance(ep.get("address"), str):
                    self.diag.error(*where, f"spec.endpoints[{i}].address", "is missing")
                    continue
                ep_ports = ep.get("ports") or {}
                for hp in host.ports.values():
                    port = ep_ports.get(hp.name) or (hp.target_port if isinstance(hp.target_port, int) else hp.number)
                    hp.endpoints.append(
                        HostEndpoint(ep["address"], port, {str(k): str(v) for k, v in (ep.get("labels") or {}).items()})
                    )
            if resolution == "DNS" and not endpoints:
                for hp in host.ports.values():
                    hp.endpoints.append(HostEndpoint(fqdn, hp.number, {}))
            if fqdn in self.hosts and self.hosts[fqdn].kind == "Service":
                self.diag.warn(*where, "spec.hosts", f"{fqdn} is also a Kubernetes Service; the Service wins")
                continue
            self.hosts.setdefault(fqdn, host)
            for vip in host.vips:
                for number in host.ports:
                    self.by_vip.setdefault((vip, number), host)


def _endpoint(address: str, port: int, pod: Pod | None) -> HostEndpoint:
    return HostEndpoint(
        address,
        port,
        pod.labels if pod else {},  # the pod's own labels, read only: thousands of endpoints share them
        pod,
        bool(pod and pod.meshed),
        pod.account if pod else "",
    )
