"""Typed records of the cluster state the compiler reads.

Istio resources keep their `spec` as plain data: the compiler validates each
field where it interprets it, so the error can name the exact field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

DPU_NODE_LABEL = "dpumesh.io/dpu"
FABRIC_IP_ANNOTATION = "dpumesh.io/dpu-fabric-ip"
VF_REPRESENTOR_ANNOTATION = "dpumesh.io/vf-representor"
NETWORK_STATUS_ANNOTATION = "k8s.v1.cni.cncf.io/network-status"


@dataclass(frozen=True)
class Meta:
    kind: str
    namespace: str
    name: str
    labels: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    annotations: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    created: str = ""
    order: int = 0  # position in the input, breaks creation-time ties like the API server's list order

    @cached_property  # asked for every object at every turn; kept in the instance, outside the fields
    def key(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


@dataclass
class Node:
    meta: Meta
    pod_cidr: str
    has_dpu: bool
    fabric_ip: str

    @property
    def name(self) -> str:
        return self.meta.name


@dataclass
class Namespace:
    meta: Meta

    @property
    def name(self) -> str:
        return self.meta.name


@dataclass
class ContainerPort:
    port: int
    name: str
    protocol: str


@dataclass
class VF:
    representor: str
    pci_address: str = ""


@dataclass
class Pod:
    meta: Meta
    node: str
    ip: str
    mac: str
    vf: VF
    service_account: str
    ports: list[ContainerPort]
    meshed: bool
    owner: str = ""  # Deployment this pod was expanded from, if any

    # The compiler asks these of every pod many times; kept in the instance once read (meta never changes).
    @cached_property
    def namespace(self) -> str:
        return self.meta.namespace

    @cached_property
    def name(self) -> str:
        return self.meta.name

    @cached_property
    def labels(self) -> dict[str, str]:
        return self.meta.labels


@dataclass
class ServicePort:
    name: str
    port: int
    target_port: int | str
    protocol: str  # TCP/UDP/SCTP
    app_protocol: str


@dataclass
class Service:
    meta: Meta
    cluster_ip: str  # "None" for headless
    ports: list[ServicePort]
    selector: dict[str, str]
    export_to: list[str]

    @property
    def namespace(self) -> str:
        return self.meta.namespace

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def headless(self) -> bool:
        return self.cluster_ip == "None"


@dataclass
class Endpoint:
    ip: str
    port_by_name: dict[str, int]
    pod: Pod | None


@dataclass
class EndpointSlice:
    meta: Meta
    service: str
    ports: dict[str, int]
    addresses: list[str]


@dataclass
class IstioObject:
    meta: Meta
    spec: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.meta.kind


@dataclass
class ClusterState:
    nodes: dict[str, Node] = field(default_factory=dict)
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    pods: list[Pod] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    endpoint_slices: list[EndpointSlice] = field(default_factory=list)
    service_accounts: set[str] = field(default_factory=set)
    istio: dict[str, list[IstioObject]] = field(default_factory=dict)
    unsupported: list[Meta] = field(default_factory=list)
    # Node-independent results the compiler derives once per state and mesh settings (see compiler.prepare).
    derived: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def of_kind(self, kind: str) -> list[IstioObject]:
        return self.istio.get(kind, [])
