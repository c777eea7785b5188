"""The parity report: for each local pod, each Istio feature that applies to it and how it is kept."""

from __future__ import annotations

from typing import Any

from dpumesh.compiler.context import DIFFERENT, KEPT, UNSUPPORTED, CompileContext
from dpumesh.state.model import Meta, Pod


def _applies_to(meta: Meta, spec_selector: dict[str, Any] | None, pod: Pod, root_ns: str) -> bool:
    if meta.namespace not in (pod.namespace, root_ns):
        return False
    labels = (spec_selector or {}).get("matchLabels") or (spec_selector or {}).get("labels") or {}
    return all(pod.labels.get(k) == str(v) for k, v in labels.items())


def collect_general_notes(ctx: CompileContext) -> None:
    """Notes that follow from the state rather than from a compiled route or policy."""
    pods = ctx.local_meshed_pods
    for meta in ctx.state.unsupported:
        for pod in pods:
            if _applies_to(meta, None, pod, ctx.mesh.root_namespace):
                ctx.note([pod], f"{meta.kind}/{meta.key}", UNSUPPORTED, f"{meta.kind} is not translated by dpumesh")
    for host in ctx.registry.hosts.values():
        for hp in host.ports.values():
            if not hp.explicit and host.kind == "Service":
                users = [p for p in pods if host.visible_to(p.namespace)]
                ctx.note(
                    users,
                    f"protocol of {host.fqdn}:{hp.number}",
                    DIFFERENT,
                    "port has no protocol name/appProtocol: Istio sniffs HTTP, dpumesh treats it as TCP",
                )
    for dr in ctx.state.of_kind("DestinationRule"):
        if dr.spec.get("workloadSelector"):
            affected = [p for p in pods if _applies_to(dr.meta, dr.spec["workloadSelector"], p, "")]
            ctx.note(affected, f"DestinationRule/{dr.meta.key} workloadSelector", UNSUPPORTED, "ignored")
    for sc in ctx.state.of_kind("Sidecar"):
        if sc.spec.get("ingress"):
            affected = [p for p in pods if _applies_to(sc.meta, sc.spec.get("workloadSelector"), p, "")]
            ctx.note(affected, f"Sidecar/{sc.meta.key} ingress", UNSUPPORTED, "custom ingress listeners are ignored")
    for pod in pods:
        ctx.note(
            [pod],
            "upstream peer address",
            DIFFERENT,
            "the application sees the DPU proxy's address as its peer (a sidecar shows 127.0.0.6)",
        )


def report(ctx: CompileContext) -> dict[str, Any]:
    pods = {}
    totals = {KEPT: 0, DIFFERENT: 0, UNSUPPORTED: 0}
    for pod in sorted(ctx.local_pods, key=lambda p: p.meta.key):
        entries = sorted(ctx.parity.get(pod.meta.key, []), key=lambda e: (e.status != UNSUPPORTED, e.feature))
        for e in entries:
            totals[e.status] += 1
        pods[pod.meta.key] = {
            "meshed": pod.meshed,
            "features": [{"feature": e.feature, "status": e.status, "detail": e.detail} for e in entries],
        }
    return {"node": ctx.node, "totals": totals, "pods": pods}


def summary(parity: dict[str, Any]) -> str:
    t = parity["totals"]
    lines = [
        f"Parity report for node {parity['node']}: {t[KEPT]} kept, {t[DIFFERENT]} kept with a difference, "
        f"{t[UNSUPPORTED]} unsupported",
        "",
    ]
    for key, pod in parity["pods"].items():
        if not pod["meshed"]:
            lines.append(f"{key}: not in the mesh (no proxy, as without a sidecar)")
            continue
        lines.append(f"{key}:")
        for f in pod["features"]:
            detail = f" — {f['detail']}" if f["detail"] else ""
            lines.append(f"  [{f['status']}] {f['feature']}{detail}")
    return "\n".join(lines) + "\n"
