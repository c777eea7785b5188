"""PeerAuthentication: the inbound mTLS mode of each (pod, port), resolved as istiod does.

Levels, lowest first: mesh (root namespace, no selector) → namespace (no selector)
→ workload (selector, pod's namespace). UNSET inherits from the level below; the
default is PERMISSIVE. portLevelMtls is read from the workload level only and keyed
by the pod's (container) port. Several policies on one level: the oldest wins.
A root-namespace policy with a selector is ignored, as istiod ignores it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dpumesh.compiler.context import KEPT, CompileContext
from dpumesh.state.model import IstioObject, Pod

KIND = "PeerAuthentication"
STRICT, PERMISSIVE, DISABLE, UNSET = "STRICT", "PERMISSIVE", "DISABLE", "UNSET"
MODES = (UNSET, DISABLE, PERMISSIVE, STRICT)


@dataclass(frozen=True)
class PeerPolicy:
    """A validated PeerAuthentication."""

    obj: IstioObject
    labels: dict[str, str] | None  # None: no selector (namespace or mesh level)
    mode: str
    port_modes: dict[int, str] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{KIND}/{self.obj.meta.namespace}/{self.obj.meta.name}"


@dataclass
class PodMtls:
    """The resolved modes of one pod, and the policies that decided them."""

    mode: str = PERMISSIVE
    port_modes: dict[int, str] = field(default_factory=dict)
    sources: list[PeerPolicy] = field(default_factory=list)

    def for_port(self, port: int) -> str:
        return self.port_modes.get(port, self.mode)


def _mode(ctx: CompileContext, obj: IstioObject, value: object, field_path: str) -> str | None:
    if value is None:
        return UNSET
    if not isinstance(value, dict):
        ctx.diag.error(KIND, obj.meta.namespace, obj.meta.name, field_path, "must be a mapping")
        return None
    mode = value.get("mode", UNSET)
    if mode not in MODES:
        ctx.diag.error(
            KIND, obj.meta.namespace, obj.meta.name, f"{field_path}.mode", f"{mode!r} is not one of {', '.join(MODES)}"
        )
        return None
    return mode


def parse(ctx: CompileContext, obj: IstioObject) -> PeerPolicy | None:
    """Validate one PeerAuthentication; errors go to ctx.diag."""
    where = (KIND, obj.meta.namespace, obj.meta.name)
    spec = obj.spec
    ok = True
    unknown = sorted(set(spec) - {"selector", "mtls", "portLevelMtls"})
    for key in unknown:
        ctx.diag.error(*where, f"spec.{key}", "is not a PeerAuthentication field")
        ok = False
    labels: dict[str, str] | None = None
    selector = spec.get("selector")
    if selector is not None:
        match = selector.get("matchLabels") if isinstance(selector, dict) else None
        if not isinstance(selector, dict) or not isinstance(match or {}, dict):
            ctx.diag.error(*where, "spec.selector.matchLabels", "must be a mapping of labels")
            ok = False
        elif match:
            labels = {str(k): str(v) for k, v in match.items()}
    mode = _mode(ctx, obj, spec.get("mtls"), "spec.mtls")
    ok = ok and mode is not None
    port_modes: dict[int, str] = {}
    raw_ports = spec.get("portLevelMtls")
    if raw_ports is not None:
        if not isinstance(raw_ports, dict):
            ctx.diag.error(*where, "spec.portLevelMtls", "must be a mapping of port numbers to mtls settings")
            return None
        if raw_ports and labels is None:
            ctx.diag.error(*where, "spec.portLevelMtls", "needs a workload selector (spec.selector.matchLabels)")
            ok = False
        for key, value in raw_ports.items():
            port = _port(key)
            if port is None:
                ctx.diag.error(*where, f"spec.portLevelMtls[{key}]", f"{key!r} is not a port number (1-65535)")
                ok = False
                continue
            port_mode = _mode(ctx, obj, value if value is not None else {}, f"spec.portLevelMtls[{key}]")
            if port_mode is None:
                ok = False
                continue
            port_modes[port] = port_mode
    if not ok:
        return None
    return PeerPolicy(obj, labels, mode or UNSET, port_modes)


def _port(key: object) -> int | None:
    if isinstance(key, bool):
        return None
    if isinstance(key, str) and key.isdigit():
        key = int(key)
    return key if isinstance(key, int) and 1 <= key <= 65535 else None


def _age(policy: PeerPolicy) -> tuple[str, int]:
    return (policy.obj.meta.created, policy.obj.meta.order)


class PeerAuthentications:
    """Every valid PeerAuthentication of the state, resolved per pod on request."""

    def __init__(self, ctx: CompileContext):
        self.ctx = ctx
        self.root = ctx.mesh.root_namespace
        self.policies = [p for p in (parse(ctx, obj) for obj in ctx.state.of_kind(KIND)) if p]
        for policy in self.policies:
            meta = policy.obj.meta
            if meta.namespace == self.root and policy.labels is not None:
                ctx.diag.warn(
                    KIND, meta.namespace, meta.name, "spec.selector",
                    "a root-namespace policy with a selector is ignored (as istiod ignores it)",
                )  # fmt: skip
        self._warned: set[tuple[str, ...]] = set()

    def _oldest(self, level: str, candidates: list[PeerPolicy]) -> PeerPolicy | None:
        if not candidates:
            return None
        winner = min(candidates, key=_age)
        for loser in candidates:
            key = (level, winner.ref, loser.ref)
            if loser is winner or key in self._warned:
                continue
            self._warned.add(key)
            meta = loser.obj.meta
            self.ctx.diag.warn(
                KIND, meta.namespace, meta.name, "metadata.creationTimestamp",
                f"another {level}-level policy applies to the same workloads; the oldest, {winner.ref}, wins",
            )  # fmt: skip
        return winner

    def for_pod(self, pod: Pod) -> PodMtls:
        mesh, namespace, workload = [], [], []
        for policy in self.policies:
            ns = policy.obj.meta.namespace
            if policy.labels is None and ns == self.root:
                mesh.append(policy)
            elif policy.labels is None and ns == pod.namespace:
                namespace.append(policy)
            elif (
                policy.labels is not None
                and ns == pod.namespace != self.root
                and all(pod.labels.get(k) == v for k, v in policy.labels.items())
            ):
                workload.append(policy)
        result = PodMtls()
        chosen = [
            self._oldest("mesh", mesh),
            self._oldest("namespace", namespace),
            self._oldest("workload", workload),
        ]
        for policy in chosen:
            if policy is None:
                continue
            result.sources.append(policy)
            if policy.mode != UNSET:
                result.mode = policy.mode
        workload_policy = chosen[2]
        if workload_policy is not None:
            for port, mode in workload_policy.port_modes.items():
                result.port_modes[port] = result.mode if mode == UNSET else mode
        return result

    def note(self, pod: Pod, resolved: PodMtls) -> None:
        """Parity entries: which policy set the pod's mode and port modes."""
        for policy in resolved.sources:
            ports = "".join(f", port {p}: {m}" for p, m in sorted(policy.port_modes.items()))
            self.ctx.note([pod], f"{policy.ref} mtls", KEPT, f"mode {policy.mode}{ports}")
