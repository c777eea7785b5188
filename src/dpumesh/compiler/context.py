"""What every part of the compiler shares while compiling one node."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dpumesh.compiler.registry import ServiceRegistry
from dpumesh.compiler.settings import MeshSettings
from dpumesh.errors import Diagnostics
from dpumesh.state.model import ClusterState, IstioObject, Pod

KEPT = "kept"
DIFFERENT = "kept-with-difference"
UNSUPPORTED = "unsupported"


@dataclass(frozen=True)
class ParityEntry:
    """One Istio feature that applies to one pod, and how the shared proxy treats it."""

    feature: str  # e.g. "VirtualService/default/reviews http[0].fault"
    status: str  # KEPT | DIFFERENT | UNSUPPORTED
    detail: str = ""


@dataclass
class CompileContext:
    state: ClusterState
    mesh: MeshSettings
    node: str
    diag: Diagnostics
    registry: ServiceRegistry
    parity: dict[str, dict[ParityEntry, None]] = field(default_factory=dict)
    # Outbound features are noted per source class (every pod of a class shares its outbound view).
    class_parity: dict[ParityEntry, list[frozenset[str]]] = field(default_factory=dict)
    class_pods: dict[str, list[str]] = field(default_factory=dict)  # class name → pod keys
    only_pod: str = ""  # "ns/name": compile the sidecar-equivalent config of that one pod
    memo: dict[tuple, Any] = field(default_factory=dict)  # lookups asked once per (client namespace, host)
    local_pods: list[Pod] = field(init=False)
    local_meshed_pods: list[Pod] = field(init=False)

    def __post_init__(self) -> None:
        if self.only_pod:
            self.local_pods = [p for p in self.state.pods if p.meta.key == self.only_pod]
        else:
            self.local_pods = [p for p in self.state.pods if p.node == self.node]
        self.local_meshed_pods = [p for p in self.local_pods if p.meshed]

    def note(self, pods: list[Pod], feature: str, status: str, detail: str = "") -> None:
        entry = ParityEntry(feature, status, detail)
        for pod in pods:
            entries = self.parity.setdefault(pod.meta.key, {})
            entries.setdefault(entry, None)  # a dict keeps the order of first mention, without repeats

    def note_classes(self, classes: frozenset[str], feature: str, status: str, detail: str = "") -> None:
        self.class_parity.setdefault(ParityEntry(feature, status, detail), []).append(classes)

    def identity(self, namespace: str, service_account: str) -> str:
        return self.mesh.spiffe(namespace, service_account)

    @staticmethod
    def selects(obj: IstioObject, pod: Pod, field_name: str = "selector") -> bool:
        """Whether a workload selector of `obj` (spec.<field>.matchLabels) picks `pod`.

        An object without a selector applies to every pod of its namespace.
        """
        selector = obj.spec.get(field_name) or {}
        labels = selector.get("matchLabels") or selector.get("labels") or {}
        return all(pod.labels.get(k) == str(v) for k, v in labels.items())


def secret_name(namespace: str, service_account: str) -> str:
    """SDS secret name of a workload identity (its key + certificate)."""
    return f"spiffe~{namespace}~{service_account}"


ROOT_CA_SECRET = "ROOTCA"


def typed(type_name: str, **fields: Any) -> dict[str, Any]:
    """An Envoy `typed_config` with its `@type` URL."""
    return {"@type": f"type.googleapis.com/{type_name}", **fields}
