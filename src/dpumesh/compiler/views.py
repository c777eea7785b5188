"""Per-source outbound views and the classes that share them.

A sidecar's outbound config depends on its pod: namespace (visibility, exportTo,
which DestinationRule applies), the Sidecar resource selecting it, and its labels
(VirtualService sourceLabels). Pods equal on all of these get the same view: one
class, compiled once. The service account only picks the client certificate, which
is chosen per connection (`tls.identity_filter`), so it does not split classes.
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
    by_ns = ctx.memo.get(("sidecars",))
    if by_ns is None:
        by_ns = ctx.memo[("sidecars",)] = {}
        for sc in ctx.state.of_kind("Sidecar"):
            by_ns.setdefault(sc.meta.namespace, []).append(sc)
    own = by_ns.get(pod.namespace, [])
    selected = [s for s in own if s.spec.get("workloadSelector") and ctx.selects(s, pod, "workloadSelector")]
    if selected:
        return by_age(selected)[0]
    plain = [s for s in own if not s.spec.get("workloadSelector")]
    if plain:
        return by_age(plain)[0]
    root = [s for s in by_ns.get(ctx.mesh.root_namespace, []) if not s.spec.get("workloadSelector")]
    return by_age(root)[0] if root else None


def _source_label_selectors(ctx: CompileContext) -> list[tuple[str, dict]]:
    """(match id, sourceLabels) of every VirtualService match that selects by source labels, listed once."""
    key = ("source-labels",)
    if key not in ctx.memo:
        found = []
        for vs in ctx.state.of_kind("VirtualService"):
            for section, prefix in (("http", ""), ("tcp", "tcp"), ("tls", "tls")):
                for ri, route in enumerate(vs.spec.get(section) or []):
                    for mi, match in enumerate((route or {}).get("match") or [] if isinstance(route, dict) else []):
                        labels = (match or {}).get("sourceLabels") if isinstance(match, dict) else None
                        if isinstance(labels, dict):
                            found.append((f"{vs.meta.key}/{prefix}{ri}/{mi}", labels))
        ctx.memo[key] = found
    return ctx.memo[key]


def source_label_matches(ctx: CompileContext, pod: Pod) -> frozenset[str]:
    return frozenset(
        ident
        for ident, labels in _source_label_selectors(ctx)
        if all(pod.labels.get(k) == str(v) for k, v in labels.items())
    )


def build_classes(ctx: CompileContext) -> list[SourceClass]:
    classes: dict[tuple, SourceClass] = {}
    for pod in sorted(ctx.local_meshed_pods, key=lambda p: p.meta.key):
        sidecar = sidecar_for(ctx, pod)
        key = (pod.namespace, sidecar.meta.key if sidecar else "", source_label_matches(ctx, pod))
        if key not in classes:
            policy = ctx.mesh.outbound_traffic_policy
            if sidecar is not None:
                policy = (sidecar.spec.get("outboundTrafficPolicy") or {}).get("mode") or policy
            classes[key] = SourceClass(f"c{len(classes)}", pod.namespace, sidecar, key[2], [], policy)
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


def _resolved_virtual_services(ctx: CompileContext) -> list[tuple[IstioObject, list[str], list[str]]]:
    """(VirtualService, exportTo, resolved host patterns) of every mesh VirtualService, computed once."""
    key = ("virtual-services",)
    if key not in ctx.memo:
        found = []
        for vs in ctx.state.of_kind("VirtualService"):
            if "mesh" not in (vs.spec.get("gateways") or ["mesh"]):
                continue
            export_to = [str(e) for e in vs.spec.get("exportTo") or ["*"]]
            raw_hosts = [h for h in vs.spec.get("hosts") or [] if isinstance(h, str)]
            hosts = [ctx.registry.resolve(h, vs.meta.namespace) for h in raw_hosts]
            found.append((vs, export_to, hosts))
        ctx.memo[key] = found
    return ctx.memo[key]


def virtual_service_for(ctx: CompileContext, namespace: str, host: Host) -> IstioObject | None:
    """The VirtualService a client in `namespace` uses for `host`: the oldest one that applies."""
    key = ("vs", namespace, host.fqdn)
    if key not in ctx.memo:
        candidates = [
            vs
            for vs, export_to, patterns in _resolved_virtual_services(ctx)
            if exported_to(export_to, vs.meta.namespace, namespace)
            and any(host_matches(p, host.fqdn) for p in patterns)
        ]
        ctx.memo[key] = by_age(candidates)[0] if candidates else None
    return ctx.memo[key]


def _resolved_destination_rules(ctx: CompileContext) -> dict[str, list[tuple[IstioObject, list[str], str]]]:
    """Namespace → (DestinationRule, exportTo, resolved host pattern) of rules without a workloadSelector."""
    key = ("destination-rules",)
    if key not in ctx.memo:
        by_ns: dict[str, list[tuple[IstioObject, list[str], str]]] = {}
        for dr in ctx.state.of_kind("DestinationRule"):
            raw = dr.spec.get("host")
            if dr.spec.get("workloadSelector") or not isinstance(raw, str):
                continue
            export_to = [str(e) for e in dr.spec.get("exportTo") or ["*"]]
            by_ns.setdefault(dr.meta.namespace, []).append(
                (dr, export_to, ctx.registry.resolve(raw, dr.meta.namespace))
            )
        ctx.memo[key] = by_ns
    return ctx.memo[key]


def destination_rule_for(ctx: CompileContext, namespace: str, host: Host) -> IstioObject | None:
    """Client namespace > the service's namespace > root namespace; exact host before wildcard."""
    key = ("dr", namespace, host.fqdn)
    if key in ctx.memo:
        return ctx.memo[key]
    rules = _resolved_destination_rules(ctx)
    chosen = None
    for scope in (namespace, host.namespace, ctx.mesh.root_namespace):
        found = [
            (0 if pattern == host.fqdn else 1, dr)
            for dr, export_to, pattern in rules.get(scope, [])
            if exported_to(export_to, dr.meta.namespace, namespace) and host_matches(pattern, host.fqdn)
        ]
        if found:
            best = min(p for p, _ in found)
            chosen = by_age([dr for p, dr in found if p == best])[0]
            break
    ctx.memo[key] = chosen
    return chosen
