"""Typed records of the cluster state the compiler reads.

Istio resources keep their `spec` as plain data: the compiler validates each
field where it interprets it, so the error can name the exact field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DPU_NODE_LABEL = "dpumesh.io/dpu"
FABRIC_IP_ANNOTATION = "dpumesh.io/dpu-fabric-ip"
VF_REPRESENTOR_ANNOTATION = "dpumesh.io/vf-representor"
NETWORK_STATUS_ANNOTATION = "k8s.v1.cni.cncf.io/network-status"


class kept:  # a decorator, named like functools.cached_property
    """A value computed from an object's fields on first read and kept in the instance (which frozen dataclasses
    allow: it is not a field). functools.cached_property does the same behind a lock in Python 3.11, which costs
    more than most of these values; the compiler reads them for every pod and object of a state."""

    def __init__(self, compute: Callable[[Any], Any]):
        self.compute, self.name = compute, compute.__name__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.compute(obj)
        return value


@dataclass(frozen=True)
class Meta:
    kind: str
    namespace: str
    name: str
    labels: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    annotations: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    created: str = ""
    order: int = 0  # position in the input, breaks creation-time ties like the API server's list order

    @kept
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

    # The compiler asks these of every pod many times (meta never changes).
    @kept
    def namespace(self) -> str:
        return self.meta.namespace

    @kept
    def name(self) -> str:
        return self.meta.name

    @kept
    def labels(self) -> dict[str, str]:
        return self.meta.labels

    @kept
    def account(self) -> str:
        """namespace/service account: the workload identity its endpoints carry."""
        return f"{self.meta.namespace}/{self.service_account}"

    @kept
    def named_ports(self) -> dict[str, int]:
        """Container port by name (the first of a name), for Services whose targetPort is a name."""
        found: dict[str, int] = {}
        for cp in self.ports:
            found.setdefault(cp.name, cp.port)
        return found


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
