"""Per-source outbound views and the classes that share them.

A sidecar's outbound config depends on its pod: namespace (visibility, exportTo,
which DestinationRule applies), service account (client certificate), the
Sidecar resource selecting it, and its labels (VirtualService sourceLabels).
Pods equal on all of these get the same view: one class, compiled once.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from dpumesh.compiler.context import CompileContext
from dpumesh.compiler.registry import Host, exported_to
from dpumesh.state.model import IstioObject, Pod


@dataclass
class SourceClass:
    name: str
    namespace: str
    service_account: str
    sidecar: IstioObject | None
    source_matches: frozenset[str]  # ids of VirtualService matches whose sourceLabels the pods satisfy
    pods: list[Pod] = field(default_factory=list)
    outbound_policy: str = "ALLOW_ANY"

    @property
    def ips(self) -> list[str]:
        return sorted(p.ip for p in self.pods)


def by_age(objs: list[IstioObject]) -> list[IstioObject]:
    """Istio's conflict order: oldest first, then by namespace/name."""
    return sorted(objs, key=lambda o: (o.meta.created or "~", o.meta.namespace, o.meta.name))


def sidecar_for(ctx: CompileContext, pod: Pod) -> IstioObject | None:
    """Workload Sidecar > namespace Sidecar > root-namespace default, as in Istio."""
    sidecars = ctx.state.of_kind("Sidecar")
    own = [s for s in sidecars if s.meta.namespace == pod.namespace]
    selected = [s for s in own if s.spec.get("workloadSelector") and ctx.selects(s, pod, "workloadSelector")]
    if selected:
        return by_age(selected)[0]
    plain = [s for s in own if not s.spec.get("workloadSelector")]
    if plain:
        return by_age(plain)[0]
    root = [s for s in sidecars if s.meta.namespace == ctx.mesh.root_namespace and not s.spec.get("workloadSelector")]
    return by_age(root)[0] if root else None


def source_label_matches(ctx: CompileContext, pod: Pod) -> frozenset[str]:
    ids = set()
    for vs in ctx.state.of_kind("VirtualService"):
        for ri, route in enumerate(vs.spec.get("http") or []):
            for mi, match in enumerate((route or {}).get("match") or []):
                labels = (match or {}).get("sourceLabels")
                if isinstance(labels, dict) and all(pod.labels.get(k) == str(v) for k, v in labels.items()):
                    ids.add(f"{vs.meta.key}/{ri}/{mi}")
        for section in ("tcp", "tls"):
            for ri, route in enumerate(vs.spec.get(section) or []):
                for mi, match in enumerate((route or {}).get("match") or []):
                    labels = (match or {}).get("sourceLabels")
                    if isinstance(labels, dict) and all(pod.labels.get(k) == str(v) for k, v in labels.items()):
                        ids.add(f"{vs.meta.key}/{section}{ri}/{mi}")
    return frozenset(ids)


def build_classes(ctx: CompileContext) -> list[SourceClass]:
    classes: dict[tuple, SourceClass] = {}
    for pod in sorted(ctx.local_meshed_pods, key=lambda p: p.meta.key):
        sidecar = sidecar_for(ctx, pod)
        key = (pod.namespace, pod.service_account, sidecar.meta.key if sidecar else "", source_label_matches(ctx, pod))
        if key not in classes:
            policy = ctx.mesh.outbound_traffic_policy
            if sidecar is not None:
                policy = (sidecar.spec.get("outboundTrafficPolicy") or {}).get("mode") or policy
            classes[key] = SourceClass(
                f"c{len(classes)}", pod.namespace, pod.service_account, sidecar, key[3], [], policy
            )
        classes[key].pods.append(pod)
    return list(classes.values())


def _egress_allows(sidecar: IstioObject, host: Host) -> bool:
    for egress in sidecar.spec.get("egress") or []:
        for entry in (egress or {}).get("hosts") or []:
            ns, _, pattern = str(entry).partition("/")
            if not pattern:
                continue
            if ns == "~":
                continue
            if ns == "." and host.namespace != sidecar.meta.namespace:
                continue
            if ns not in ("*", ".") and ns != host.namespace:
                continue
            if pattern == "*" or fnmatch.fnmatchcase(host.fqdn, pattern):
                return True
    return False


def visible_hosts(ctx: CompileContext, cls: SourceClass) -> list[Host]:
    hosts = []
    for host in ctx.registry.hosts.values():
        if not host.visible_to(cls.namespace):
            continue
        if cls.sidecar is not None and cls.sidecar.spec.get("egress") and not _egress_allows(cls.sidecar, host):
            continue
        hosts.append(host)
    return sorted(hosts, key=lambda h: h.fqdn)


def host_matches(pattern: str, fqdn: str) -> bool:
    if pattern == fqdn:
        return True
    return pattern.startswith("*") and fqdn.endswith(pattern[1:])


def virtual_service_for(ctx: CompileContext, namespace: str, host: Host) -> IstioObject | None:
    """The VirtualService a client in `namespace` uses for `host`: the oldest one that applies."""
    candidates = []
    for vs in ctx.state.of_kind("VirtualService"):
        gateways = vs.spec.get("gateways") or ["mesh"]
        if "mesh" not in gateways:
            continue
        if not exported_to([str(e) for e in vs.spec.get("exportTo") or ["*"]], vs.meta.namespace, namespace):
            continue
        for raw_host in vs.spec.get("hosts") or []:
            if isinstance(raw_host, str) and host_matches(ctx.registry.resolve(raw_host, vs.meta.namespace), host.fqdn):
                candidates.append(vs)
                break
    return by_age(candidates)[0] if candidates else None


def destination_rule_for(ctx: CompileContext, namespace: str, host: Host) -> IstioObject | None:
    """Client namespace > the service's namespace > root namespace; exact host before wildcard."""
    rules = ctx.state.of_kind("DestinationRule")
    for scope in (namespace, host.namespace, ctx.mesh.root_namespace):
        found = []
        for dr in rules:
            if dr.meta.namespace != scope or dr.spec.get("workloadSelector"):
                continue
            if not exported_to([str(e) for e in dr.spec.get("exportTo") or ["*"]], dr.meta.namespace, namespace):
                continue
            raw = dr.spec.get("host")
            if not isinstance(raw, str):
                continue
            pattern = ctx.registry.resolve(raw, dr.meta.namespace)
            if host_matches(pattern, host.fqdn):
                found.append((0 if pattern == host.fqdn else 1, dr))
        if found:
            best = min(p for p, _ in found)
            return by_age([dr for p, dr in found if p == best])[0]
    return None
