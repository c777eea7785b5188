"""The parity report: for each local pod, each Istio feature that applies to it and how it is kept."""

from __future__ import annotations

import operator
from collections import Counter
from dataclasses import dataclass
from typing import Any

from dpumesh.compiler.context import DIFFERENT, KEPT, UNSUPPORTED, CompileContext, ParityEntry
from dpumesh.compiler.views import SourceClass, sees
from dpumesh.state.model import Meta, Pod


def _applies_to(meta: Meta, spec_selector: dict[str, Any] | None, pod: Pod, root_ns: str) -> bool:
    if meta.namespace not in (pod.namespace, root_ns):
        return False
    labels = (spec_selector or {}).get("matchLabels") or (spec_selector or {}).get("labels") or {}
    return all(pod.labels.get(k) == str(v) for k, v in labels.items())


def collect_class_notes(ctx: CompileContext, classes: list[SourceClass]) -> None:
    """Outbound notes that follow from the state rather than from a compiled route, per class."""
    for host in ctx.registry.hosts.values():
        for hp in host.ports.values():
            if host.sniffs(hp.number):
                ctx.note_classes(
                    frozenset(c.name for c in classes if sees(ctx, c, host)),
                    f"protocol of {host.fqdn}:{hp.number}",
                    KEPT,
                    "detected per connection, as Istio does: HTTP/1.x and h2c are routed as HTTP, the rest as TCP "
                    "(a client that sends nothing first is forwarded as TCP after 15 s, where Istio waits)",
                )
    ctx.note_classes(
        frozenset(c.name for c in classes),
        "upstream peer address",
        DIFFERENT,
        "the application sees the DPU proxy's address as its peer (a sidecar shows 127.0.0.6)",
    )


def collect_pod_notes(ctx: CompileContext) -> None:
    """Notes that follow from the state rather than from a compiled route or policy, per pod."""
    pods = ctx.local_meshed_pods
    for meta in ctx.state.unsupported:
        for pod in pods:
            if _applies_to(meta, None, pod, ctx.mesh.root_namespace):
                ctx.note([pod], f"{meta.kind}/{meta.key}", UNSUPPORTED, f"{meta.kind} is not translated by dpumesh")


@dataclass(frozen=True)
class ClassViews:
    """The outbound features of a set of classes: those most have (`common`), and per class either what it has
    beyond them (`extra`) and which of them it lacks (`missing`), or, for a class that has fewer than half of
    them (a Sidecar that scopes it to a few namespaces), its own full list (`alone`: `extra` holds the common
    features it has, then its own, and `missing` is empty)."""

    common: list[ParityEntry]
    extra: dict[str, list[ParityEntry]]
    missing: dict[str, list[ParityEntry]]
    alone: frozenset[str]
    counts: dict[str, Counter]


def class_views(class_parity: dict[ParityEntry, list[frozenset[str]]], names: list[str]) -> ClassViews:
    everyone = frozenset(names)
    common: list[ParityEntry] = []
    # Entries by the classes that have them, in order: there are few such sets, and each class's lists are made
    # from the sets it is in (or not in), not entry by entry.
    common_by_set: dict[frozenset[str], list[tuple[int, ParityEntry]]] = {}
    extra_by_set: dict[frozenset[str], list[tuple[int, ParityEntry]]] = {}
    for position, entry in enumerate(sorted(class_parity, key=_order)):
        groups = class_parity[entry]
        if all(g is groups[0] for g in groups):
            classes = groups[0]  # most often one set, noted once or more: no new set to make and hash
        else:
            classes = everyone if everyone in groups else frozenset().union(*groups)
        if len(classes) * 2 >= len(everyone):
            common.append(entry)
            common_by_set.setdefault(classes, []).append((position, entry))
        else:
            extra_by_set.setdefault(classes, []).append((position, entry))
    extra: dict[str, list[ParityEntry]] = {}
    missing: dict[str, list[ParityEntry]] = {}
    alone = set()
    for name in sorted(everyone):
        has = [e for classes, entries in common_by_set.items() if name in classes for e in entries]
        own = [e for classes, entries in extra_by_set.items() if name in classes for e in entries]
        own = [entry for _, entry in sorted(own, key=_POSITION)]
        if len(has) * 2 < len(common):
            alone.add(name)  # the common features it has, then its own: as `features_of` lists them otherwise
            extra[name] = [entry for _, entry in sorted(has, key=_POSITION)] + own
            missing[name] = []
        else:
            extra[name] = own
            lacks = [e for classes, entries in common_by_set.items() if name not in classes for e in entries]
            missing[name] = [entry for _, entry in sorted(lacks, key=_POSITION)]
    common_count = _count(common)
    counts = {
        name: _count(extra[name]) if name in alone else common_count - _count(missing[name]) + _count(extra[name])
        for name in everyone
    }
    return ClassViews(common, extra, missing, frozenset(alone), counts)


_POSITION = operator.itemgetter(0)


def pod_entries(ctx: CompileContext) -> dict[str, tuple[dict[str, Any], Counter]]:
    """Each local pod's own features (`report`), and their count by status: what the outbound side does not
    decide."""
    class_of = {pod: name for name, pods in ctx.class_pods.items() for pod in pods}
    out = {}
    for pod in sorted(ctx.local_pods, key=lambda p: p.meta.key):
        own = sorted(ctx.parity.get(pod.meta.key, []), key=_order)
        view = class_of.get(pod.meta.key)
        out[pod.meta.key] = ({"meshed": pod.meshed, "view": view, "features": _entries(own)}, _count(own))
    return out


def report(ctx: CompileContext, views: ClassViews, pods: dict[str, tuple[dict[str, Any], Counter]]) -> dict[str, Any]:
    """Outbound features once for the node and per class (`class_views`), then each pod's own (`pod_entries`).

    Every pod of a class shares its outbound view, so the view's features are written per class,
    not per pod: `common` holds those most classes have, and each of `views` lists what it has
    beyond them (`features`) and which of them it lacks (`missing`), or, with `"alone": true`, every
    feature it has (`features`): a view with fewer than half the common features.
    """
    totals = {KEPT: 0, DIFFERENT: 0, UNSUPPORTED: 0}
    for entry, own in pods.values():
        for status, n in (own + (views.counts[entry["view"]] if entry["view"] else Counter())).items():
            totals[status] += n
    return {
        "node": ctx.node,
        "totals": totals,
        "common": _entries(views.common),
        "views": {name: _view(views, name, ctx.class_pods[name]) for name in sorted(ctx.class_pods)},
        "pods": {key: entry for key, (entry, _) in pods.items()},
    }


def _view(views: ClassViews, name: str, pods: list[str]) -> dict[str, Any]:
    view: dict[str, Any] = {"pods": pods}
    if name in views.alone:
        view["alone"] = True
    view["features"] = _entries(views.extra[name])
    if name not in views.alone:
        view["missing"] = _entries(views.missing[name])
    return view


def features_of(parity: dict[str, Any], pod: str) -> list[dict[str, str]]:
    """Every feature that applies to one pod: the common ones its view has, its view's own, and the pod's."""
    entry = parity["pods"][pod]
    if not entry["view"]:
        return entry["features"]
    view = parity["views"][entry["view"]]
    if view.get("alone"):
        return view["features"] + entry["features"]
    lacking = {_key(f) for f in view["missing"]}  # whole entries: a feature may be common with two statuses
    return [f for f in parity["common"] if _key(f) not in lacking] + view["features"] + entry["features"]


def _key(feature: dict[str, str]) -> tuple[str, str, str]:
    return feature["feature"], feature["status"], feature["detail"]


def _count(entries: list[ParityEntry]) -> Counter:
    return Counter(map(_STATUS, entries))


_STATUS = operator.attrgetter("status")


def _order(e: ParityEntry) -> tuple[bool, str]:
    return (e.status != UNSUPPORTED, e.feature)


def _entries(entries: list[ParityEntry]) -> list[dict[str, str]]:
    return [{"feature": e.feature, "status": e.status, "detail": e.detail} for e in entries]


def summary(parity: dict[str, Any]) -> bytes:
    """The readable form of the report (`parity.txt`), as UTF-8."""
    t = parity["totals"]
    lines = [
        f"Parity report for node {parity['node']}: {t[KEPT]} kept, {t[DIFFERENT]} kept with a difference, "
        f"{t[UNSUPPORTED]} unsupported (counted per pod)",
        "",
        f"Most outbound views of the node ({len(parity['common'])} features; each view below says what it lacks,"
        " or lists all it has):",
        *_lines(parity["common"]),
    ]
    for name, view in parity["views"].items():
        pods = ", ".join(view["pods"])
        if view.get("alone"):
            lines += ["", f"Outbound view {name} ({pods}), all its features:", *_lines(view["features"])]
            continue
        lines += ["", f"Outbound view {name} ({pods}):", *_lines(view["features"])]
        lines += _lines(view["missing"], "  [does not apply] ")
    lines.append("")
    for key, pod in parity["pods"].items():
        if not pod["meshed"]:
            lines.append(f"{key}: not in the mesh (no proxy, as without a sidecar)")
            continue
        lines.append(f"{key} (view {pod['view']}):")
        lines += _lines(pod["features"])
    # Encoded line by line: a few lines are not ASCII (the dash of the details), and one such character would
    # make the whole joined text slower to build and to encode.
    return b"\n".join([line.encode() for line in lines]) + b"\n"


def _lines(features: list[dict[str, str]], prefix: str = "  ") -> list[str]:
    return [f"{prefix}[{f['status']}] {f['feature']}" + (f" — {f['detail']}" if f["detail"] else "") for f in features]
