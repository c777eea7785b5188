"""Per-source outbound views and the classes that share them.

A sidecar's outbound config depends on its pod: namespace (visibility, exportTo,
which DestinationRule applies), the Sidecar resource selecting it, and its labels
(VirtualService sourceLabels). Pods equal on all of these get the same view: one
class. The service account only picks the client certificate, which is chosen per
connection (`tls.source_filter`), so it does not split classes.

Most hosts look the same from every namespace. `host_dependence` finds, once per
host, the namespaces whose clients may see it differently (a VirtualService or
DestinationRule exported to a few namespaces, a DestinationRule in the client's
namespace, sourceNamespace matches); every other class shares one `View` of the
host, so the shared config grows with classes + hosts, not classes times hosts.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import operator
from collections.abc import Callable
from dataclasses import dataclass, field

from dpumesh.compiler.context import CompileContext
from dpumesh.compiler.registry import Host, exported_to
from dpumesh.configfile import compact_json
from dpumesh.state.model import IstioObject, Pod

ANY_NAMESPACE = ""  # the View namespace of clients with no namespace-specific rule for a host


@dataclass
class SourceClass:
    name: str
    namespace: str
    sidecar: IstioObject | None
    source_matches: frozenset[str]  # ids of what selects the pods as clients (`source_label_matches`)
    pods: list[Pod] = field(default_factory=list)
    outbound_policy: str = "ALLOW_ANY"

    @property
    def ips(self) -> list[str]:
        return sorted(p.ip for p in self.pods)

    @property
    def egress_scoped(self) -> bool:
        return self.sidecar is not None and bool(self.sidecar.spec.get("egress"))


@dataclass(frozen=True)
class View:
    """What decides a host's routes for a client: its namespace (or ANY_NAMESPACE), its sourceLabels matches, and
    the host's VirtualServices its Sidecar's egress does not import."""

    namespace: str
    source_matches: frozenset[str] = frozenset()
    not_imported: frozenset[str] = frozenset()  # VirtualService keys


@dataclass(frozen=True)
class Dependence:
    """Which client namespaces see a host differently, and which sourceLabels matches concern it."""

    namespaces: frozenset[str] | None  # None: every namespace (DestinationRule credentials are per namespace)
    source_ids: frozenset[str]


def by_age(objs: list[IstioObject]) -> list[IstioObject]:
    """Istio's conflict order: oldest first, then by namespace/name."""
    return sorted(objs, key=lambda o: (o.meta.created or "~", o.meta.namespace, o.meta.name))


def sidecar_for(ctx: CompileContext, pod: Pod) -> IstioObject | None:
    """Workload Sidecar > namespace Sidecar > root-namespace default, as in Istio."""
    selecting, default = _namespace_sidecars(ctx, pod.namespace)
    for sidecar in selecting:
        if ctx.selects(sidecar, pod, "workloadSelector"):
            return sidecar
    return default


def _namespace_sidecars(ctx: CompileContext, namespace: str) -> tuple[list[IstioObject], IstioObject | None]:
    """The namespace's Sidecars with a workloadSelector, oldest first, and the one for its other pods."""
    key = ("namespace-sidecars", namespace)
    if key not in ctx.memo:
        by_ns = ctx.memo.get(("sidecars",))
        if by_ns is None:
            by_ns = ctx.memo[("sidecars",)] = {}
            for sc in ctx.state.of_kind("Sidecar"):
                by_ns.setdefault(sc.meta.namespace, []).append(sc)
        own = by_ns.get(namespace, [])
        selecting = by_age([s for s in own if s.spec.get("workloadSelector")])
        plain = [s for s in own if not s.spec.get("workloadSelector")]
        root = [s for s in by_ns.get(ctx.mesh.root_namespace, []) if not s.spec.get("workloadSelector")]
        default = by_age(plain or root)[0] if plain or root else None
        ctx.memo[key] = (selecting, default)
    return ctx.memo[key]


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
    """The ids of what selects the pod as a client: VirtualService sourceLabels matches, and DestinationRules
    of its namespace whose workloadSelector picks it."""
    if not _selects_clients(ctx):
        return frozenset()  # the common case, asked for every pod of the cluster
    matches = [
        ident
        for ident, labels in _source_label_selectors(ctx)
        if all(pod.labels.get(k) == str(v) for k, v in labels.items())
    ]
    matches += [
        ident
        for ident, dr, _ in _selected_rules(ctx)
        if dr.meta.namespace == pod.namespace and ctx.selects(dr, pod, "workloadSelector")
    ]
    return frozenset(matches)


def _selects_clients(ctx: CompileContext) -> bool:
    """Whether anything picks client pods by their labels (`source_label_matches`), once per state."""
    return bool(_source_label_selectors(ctx) or _selected_rules(ctx))


def class_name(namespace: str, sidecar: str, source_matches: frozenset[str]) -> str:
    """A name that stays the same across nodes and recompiles: the namespace, plus a digest when needed."""
    if not sidecar and not source_matches:
        return namespace
    return f"{namespace}~{digest_of([sidecar, sorted(source_matches)])}"


def digest_of(value: object) -> str:
    """A short, stable name part for a JSON-able value (the same in every process and on every node)."""
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()[:8]


_POD_KEY = operator.attrgetter("meta.key")


def build_classes(ctx: CompileContext, pods: list[Pod] | None = None) -> list[SourceClass]:
    """The classes of `pods` (by default the node's meshed pods), each with its pods."""
    classes: dict[tuple, SourceClass] = {}
    selectors = _selects_clients(ctx)
    same_for_all: dict[str, tuple] = {}  # namespace → (key, Sidecar) where nothing selects pods one by one
    for pod in sorted(ctx.local_meshed_pods if pods is None else pods, key=_POD_KEY):
        found = same_for_all.get(pod.namespace)
        if found is None:
            sidecar = sidecar_for(ctx, pod)
            key = (pod.namespace, sidecar.meta.key if sidecar else "", source_label_matches(ctx, pod))
            if not selectors and not _namespace_sidecars(ctx, pod.namespace)[0]:
                same_for_all[pod.namespace] = (key, sidecar)
        else:
            key, sidecar = found
        if key not in classes:
            policy = ctx.mesh.outbound_traffic_policy
            if sidecar is not None:
                policy = (sidecar.spec.get("outboundTrafficPolicy") or {}).get("mode") or policy
            classes[key] = SourceClass(class_name(*key), pod.namespace, sidecar, key[2], [], policy)
        classes[key].pods.append(pod)
    return sorted(classes.values(), key=lambda c: c.name)


def cluster_classes(ctx: CompileContext) -> list[SourceClass]:
    """Every class of the cluster's meshed pods, once per state."""
    key = ("cluster-classes",)
    if key not in ctx.memo:
        ctx.memo[key] = build_classes(ctx, [p for p in ctx.state.pods if p.meshed])
    return ctx.memo[key]


def egress_entries(ctx: CompileContext, sidecar: IstioObject) -> list[tuple[str, str]]:
    """(namespace or "*", host pattern) of every usable egress host of a Sidecar, parsed once per state."""
    key = ("egress-entries", sidecar.meta.key)
    if key not in ctx.memo:
        entries = []
        for egress in sidecar.spec.get("egress") or []:
            for entry in (egress or {}).get("hosts") or []:
                ns, _, pattern = str(entry).partition("/")
                if not pattern or ns == "~":
                    continue
                entries.append((sidecar.meta.namespace if ns == "." else ns, pattern))
        ctx.memo[key] = entries
    return ctx.memo[key]


def egress_allows(entries: list[tuple[str, str]], host: Host) -> bool:
    for ns, pattern in entries:
        if ns != "*" and ns != host.namespace:
            continue
        if pattern == "*" or fnmatch.fnmatchcase(host.fqdn, pattern):
            return True
    return False


def egress_scope(ctx: CompileContext, sidecar: IstioObject) -> set[str]:
    """Every host a Sidecar's egress names (exportTo aside), by namespace and pattern rather than host by host."""
    by_ns = ctx.memo.get(("hosts-by-namespace",))
    if by_ns is None:
        by_ns = ctx.memo[("hosts-by-namespace",)] = {}
        for h in ctx.registry.hosts.values():
            by_ns.setdefault(h.namespace, []).append(h)
    hosts = ctx.registry.hosts
    allowed: set[str] = set()
    for ns, pattern in egress_entries(ctx, sidecar):
        if not any(c in pattern for c in "*?["):  # one host: no fnmatch wildcard
            host = hosts.get(pattern)
            if host is not None and ns in ("*", host.namespace):
                allowed.add(pattern)
            continue
        candidates = hosts.values() if ns == "*" else by_ns.get(ns, [])
        allowed.update(h.fqdn for h in candidates if pattern == "*" or fnmatch.fnmatchcase(h.fqdn, pattern))
    return allowed


def sees(ctx: CompileContext, cls: SourceClass, host: Host) -> bool:
    """Whether the class's pods see the host: exportTo, then the Sidecar's egress hosts."""
    if not host.visible_to(cls.namespace):
        return False
    if not cls.egress_scoped:
        return True
    key = ("egress", cls.sidecar.meta.key, host.fqdn)
    if key not in ctx.memo:
        ctx.memo[key] = egress_allows(egress_entries(ctx, cls.sidecar), host)
    return ctx.memo[key]


def visible_hosts(ctx: CompileContext, cls: SourceClass) -> list[Host]:
    return [h for h in sorted_hosts(ctx) if sees(ctx, cls, h)]


def sorted_hosts(ctx: CompileContext) -> list[Host]:
    key = ("sorted-hosts",)
    if key not in ctx.memo:
        ctx.memo[key] = sorted(ctx.registry.hosts.values(), key=lambda h: h.fqdn)
    return ctx.memo[key]


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


def _matching(ctx: CompileContext, kind: str, entries: Callable[[], list], fqdn: str) -> list:
    """Entries (obj, exportTo, patterns…) whose host patterns match `fqdn`: exact ones from an index."""
    key = ("pattern-index", kind)
    if key not in ctx.memo:
        exact: dict[str, list] = {}
        wildcard = []
        for entry in entries():
            patterns = entry[2] if isinstance(entry[2], list) else [entry[2]]
            for pattern in dict.fromkeys(patterns):
                if pattern.startswith("*"):
                    wildcard.append((pattern, entry))
                else:
                    exact.setdefault(pattern, []).append(entry)
        ctx.memo[key] = (exact, wildcard)
    exact, wildcard = ctx.memo[key]
    found = list(exact.get(fqdn, []))
    found += [entry for pattern, entry in wildcard if host_matches(pattern, fqdn) and entry not in found]
    return found


def virtual_service_candidates(ctx: CompileContext, host: Host) -> list[tuple[IstioObject, list[str], list[str]]]:
    key = ("vs-candidates", host.fqdn)
    if key not in ctx.memo:
        ctx.memo[key] = _matching(ctx, "vs", lambda: _resolved_virtual_services(ctx), host.fqdn)
    return ctx.memo[key]


def virtual_service_for(ctx: CompileContext, view: View, host: Host) -> IstioObject | None:
    """The VirtualService a client with this view uses for `host`: the oldest one exported to its namespace
    and imported by its Sidecar."""
    key = ("vs", view.namespace, view.not_imported, host.fqdn)
    if key not in ctx.memo:
        candidates = [
            vs
            for vs, export_to, _ in virtual_service_candidates(ctx, host)
            if exported_to(export_to, vs.meta.namespace, view.namespace) and vs.meta.key not in view.not_imported
        ]
        ctx.memo[key] = by_age(candidates)[0] if candidates else None
    return ctx.memo[key]


def hosts_overlap(a: str, b: str) -> bool:
    """Whether two host names, either possibly a `*.suffix` wildcard or `*`, can name the same host."""
    if a == b or "*" in (a, b):
        return True
    if a.startswith("*") and b.startswith("*"):
        return a.endswith(b[1:]) or b.endswith(a[1:])
    if a.startswith("*"):
        return b.endswith(a[1:])
    return b.startswith("*") and a.endswith(b[1:])


def imports_virtual_service(ctx: CompileContext, sidecar: IstioObject, vs: IstioObject, hosts: list[str]) -> bool:
    """Whether a Sidecar's egress imports a VirtualService, as istiod selects them: an egress host in the
    VirtualService's namespace (or `*/`) whose name overlaps one of its hosts."""
    key = ("imports-vs", sidecar.meta.key, vs.meta.key)
    if key not in ctx.memo:
        ctx.memo[key] = any(
            ns in ("*", vs.meta.namespace) and any(hosts_overlap(pattern, h) for h in hosts)
            for ns, pattern in egress_entries(ctx, sidecar)
        )
    return ctx.memo[key]


def not_imported(ctx: CompileContext, sidecar: IstioObject | None, host: Host) -> frozenset[str]:
    """The host's VirtualServices a Sidecar's egress leaves out (none without a Sidecar egress section)."""
    if sidecar is None or not sidecar.spec.get("egress"):
        return frozenset()
    key = ("not-imported", sidecar.meta.key, host.fqdn)
    if key not in ctx.memo:
        ctx.memo[key] = frozenset(
            vs.meta.key
            for vs, _, hosts in virtual_service_candidates(ctx, host)
            if not imports_virtual_service(ctx, sidecar, vs, hosts)
        )
    return ctx.memo[key]


def _resolved_destination_rules(ctx: CompileContext) -> dict[str, list[tuple[IstioObject, list[str], str]]]:
    """Namespace → (DestinationRule, exportTo, resolved host pattern) of rules without a workloadSelector;
    the rules of one host with the same exportTo merged into one (`merge_destination_rules`)."""
    key = ("destination-rules",)
    if key not in ctx.memo:
        by_ns: dict[str, list[tuple[IstioObject, list[str], str]]] = {}
        for (namespace, pattern, export_to), rules in destination_rule_groups(ctx).items():
            by_ns.setdefault(namespace, []).append((merge_destination_rules(rules), list(export_to), pattern))
        ctx.memo[key] = by_ns
    return ctx.memo[key]


def destination_rule_groups(ctx: CompileContext) -> dict[tuple[str, str, tuple[str, ...]], list[IstioObject]]:
    """(namespace, resolved host, exportTo) → its DestinationRules without a workloadSelector, oldest first."""
    key = ("destination-rule-groups",)
    if key not in ctx.memo:
        groups: dict[tuple[str, str, tuple[str, ...]], list[IstioObject]] = {}
        for dr in by_age(ctx.state.of_kind("DestinationRule")):
            raw = dr.spec.get("host")
            if dr.spec.get("workloadSelector") or not isinstance(raw, str):
                continue
            export_to = tuple(str(e) for e in dr.spec.get("exportTo") or ["*"])
            pattern = ctx.registry.resolve(raw, dr.meta.namespace)
            groups.setdefault((dr.meta.namespace, pattern, export_to), []).append(dr)
        ctx.memo[key] = groups
    return ctx.memo[key]


def merge_destination_rules(rules: list[IstioObject]) -> IstioObject:
    """Several DestinationRules for one host in one namespace, merged as istiod merges them: the traffic policy
    of the oldest that has one, and every subset whose name no older rule took. One rule is itself."""
    first, *newer = rules
    if not newer:
        return first
    spec = dict(first.spec)
    subsets = [s for s in first.spec.get("subsets") or [] if isinstance(s, dict)]
    names = {s.get("name") for s in subsets}
    for dr in newer:
        if not spec.get("trafficPolicy") and dr.spec.get("trafficPolicy"):
            spec["trafficPolicy"] = dr.spec["trafficPolicy"]
        for subset in dr.spec.get("subsets") or []:
            if isinstance(subset, dict) and subset.get("name") not in names:
                subsets.append(subset)
                names.add(subset.get("name"))
    if subsets:
        spec["subsets"] = subsets
    return IstioObject(first.meta, spec)


def _destination_rule_index(ctx: CompileContext, scope: str) -> tuple[dict[str, list], list]:
    """The rules of one namespace: by exact host, and those with a wildcard host."""
    key = ("destination-rule-index", scope)
    if key not in ctx.memo:
        exact: dict[str, list] = {}
        wildcard = []
        for entry in _resolved_destination_rules(ctx).get(scope, []):
            if entry[2].startswith("*"):
                wildcard.append(entry)
            else:
                exact.setdefault(entry[2], []).append(entry)
        ctx.memo[key] = (exact, wildcard)
    return ctx.memo[key]


def selected_rules_for(ctx: CompileContext, fqdn: str) -> list[tuple[str, IstioObject]]:
    """(id, DestinationRule) of the rules with a workloadSelector for `fqdn`: exact host first, each by age."""
    key = ("selected-rules-for", fqdn)
    if key not in ctx.memo:
        exact = [(ident, dr) for ident, dr, pattern in _selected_rules(ctx) if pattern == fqdn]
        wildcard = [
            (i, dr) for i, dr, pattern in _selected_rules(ctx) if pattern != fqdn and host_matches(pattern, fqdn)
        ]
        ctx.memo[key] = exact + wildcard
    return ctx.memo[key]


def _selected_rules(ctx: CompileContext) -> list[tuple[str, IstioObject, str]]:
    """(id, DestinationRule, resolved host) of every rule with a workloadSelector, oldest first.

    Its id joins the source ids of the pods it selects (`source_label_matches`), so those pods get classes and
    views of their own, and `destination_rule_for` gives them the rule.
    """
    key = ("selected-destination-rules",)
    if key not in ctx.memo:
        ctx.memo[key] = [
            (f"dr:{dr.meta.key}", dr, ctx.registry.resolve(dr.spec["host"], dr.meta.namespace))
            for dr in by_age(ctx.state.of_kind("DestinationRule"))
            if dr.spec.get("workloadSelector") and isinstance(dr.spec.get("host"), str)
        ]
    return ctx.memo[key]


def destination_rule_for(
    ctx: CompileContext, namespace: str, host: Host, source_ids: frozenset[str] = frozenset()
) -> IstioObject | None:
    """A rule with a workloadSelector that selects the client (its id in `source_ids`), as istiod prefers it;
    otherwise client namespace > the service's namespace > root namespace, exact host before wildcard."""
    if source_ids:
        for ident, dr in selected_rules_for(ctx, host.fqdn):
            if ident in source_ids:
                return dr
    key = ("dr", namespace, host.fqdn)
    if key in ctx.memo:
        return ctx.memo[key]
    chosen = None
    for scope in (namespace, host.namespace, ctx.mesh.root_namespace):
        exact, wildcard = _destination_rule_index(ctx, scope)
        candidates = exact.get(host.fqdn, []) + [e for e in wildcard if host_matches(e[2], host.fqdn)]
        found = [
            (0 if pattern == host.fqdn else 1, dr)
            for dr, export_to, pattern in candidates
            if exported_to(export_to, dr.meta.namespace, namespace)
        ]
        if found:
            best = min(p for p, _ in found)
            chosen = by_age([dr for p, dr in found if p == best])[0]
            break
    ctx.memo[key] = chosen
    return chosen


def _export_namespaces(export_to: list[str], owner: str) -> frozenset[str] | None:
    """The namespaces an exportTo list names (None: every namespace)."""
    if not export_to or "*" in export_to:
        return None
    return frozenset(owner if e == "." else e for e in export_to) | {owner}


def _destination_hosts(ctx: CompileContext, vs: IstioObject) -> set[str]:
    """Every host a VirtualService sends to or mirrors to, resolved in its namespace."""
    key = ("vs-destinations", vs.meta.key)
    if key not in ctx.memo:
        found: set[str] = set()

        def walk(node: object) -> None:
            if isinstance(node, dict):
                for k, v in node.items():
                    if k in ("destination", "mirror") and isinstance(v, dict) and isinstance(v.get("host"), str):
                        found.add(ctx.registry.resolve(v["host"], vs.meta.namespace))
                    walk(v)
            elif isinstance(node, list):
                for item in node:
                    walk(item)

        for section in ("http", "tcp", "tls"):
            walk(vs.spec.get(section))
        ctx.memo[key] = found
    return ctx.memo[key]


def _names_credentials(ctx: CompileContext, dr: IstioObject) -> bool:
    """Whether a DestinationRule names a credentialName anywhere (asked once per rule)."""
    key = ("names-credentials", dr.meta.key)
    if key not in ctx.memo:
        ctx.memo[key] = b"credentialName" in compact_json(dr.spec)
    return ctx.memo[key]


def _rule_dependence(ctx: CompileContext, fqdn: str) -> frozenset[str] | None:
    """Client namespaces whose DestinationRule for `fqdn` may differ from the one every namespace gets."""
    key = ("dr-dependence", fqdn)
    if key in ctx.memo:
        return ctx.memo[key]
    host = ctx.registry.hosts.get(fqdn)
    shared_scopes = {ctx.mesh.root_namespace, host.namespace if host else ""}

    def entries() -> list:
        return [e for scope in _resolved_destination_rules(ctx).values() for e in scope]

    found: set[str] = set()
    result: frozenset[str] | None = frozenset()
    for dr, export_to, _ in _matching(ctx, "dr", entries, fqdn):
        if _names_credentials(ctx, dr):
            result = None  # the client namespace's own secrets: a cluster per namespace
            break
        if dr.meta.namespace not in shared_scopes:
            found.add(dr.meta.namespace)  # consulted first by its own namespace's clients only
        named = _export_namespaces(export_to, dr.meta.namespace)
        if named is not None:
            found |= named
    if result is not None:
        result = frozenset(found)
    ctx.memo[key] = result
    return result


def host_dependence(ctx: CompileContext, host: Host) -> Dependence:
    """What makes the routes of `host` differ between client classes (computed once per host)."""
    key = ("host-dependence", host.fqdn)
    if key in ctx.memo:
        return ctx.memo[key]
    namespaces: set[str] = set()
    every = False
    source_ids: set[str] = set()
    destinations = {host.fqdn}
    for vs, export_to, _ in virtual_service_candidates(ctx, host):
        named = _export_namespaces(export_to, vs.meta.namespace)
        if named is not None:
            namespaces |= named
        source_ids |= _source_ids(ctx, vs)
        namespaces |= _source_namespaces(vs)
        destinations |= _destination_hosts(ctx, vs)
    for fqdn in destinations:
        source_ids.update(ident for ident, _ in selected_rules_for(ctx, fqdn))
        rule = _rule_dependence(ctx, fqdn)
        if rule is None:
            every = True
        elif not every:
            namespaces |= rule
    result = Dependence(None if every else frozenset(namespaces), frozenset(source_ids))
    ctx.memo[key] = result
    return result


def _source_ids(ctx: CompileContext, vs: IstioObject) -> frozenset[str]:
    key = ("vs-source-ids",)
    if key not in ctx.memo:
        by_vs: dict[str, set[str]] = {}
        for ident, _ in _source_label_selectors(ctx):
            by_vs.setdefault(ident.rsplit("/", 2)[0], set()).add(ident)
        ctx.memo[key] = {k: frozenset(v) for k, v in by_vs.items()}
    return ctx.memo[key].get(vs.meta.key, frozenset())


def _source_namespaces(vs: IstioObject) -> set[str]:
    found = set()
    for section in ("http", "tcp", "tls"):
        for route in vs.spec.get(section) or []:
            for match in (route or {}).get("match") or [] if isinstance(route, dict) else []:
                if isinstance(match, dict) and isinstance(match.get("sourceNamespace"), str):
                    found.add(match["sourceNamespace"])
    return found


def view_of(ctx: CompileContext, cls: SourceClass, host: Host) -> View:
    """The class's View of the host: shared by every class the host does not single out."""
    dep = host_dependence(ctx, host)
    namespace = cls.namespace if dep.namespaces is None or cls.namespace in dep.namespaces else ANY_NAMESPACE
    matches = cls.source_matches & dep.source_ids if dep.source_ids else frozenset()
    return View(namespace, matches, not_imported(ctx, cls.sidecar, host))
