"""Readiness of objects the roles wait for, explained in one sentence when not ready."""

from __future__ import annotations

from collections.abc import Mapping


def daemonset_problem(daemonset: Mapping | None, ref: str) -> str:
    """Empty when the DaemonSet is fully rolled out, else what is missing."""
    if not daemonset:
        return f"DaemonSet {ref} does not exist"
    status = daemonset.get("status") or {}
    generation = (daemonset.get("metadata") or {}).get("generation")
    if status.get("observedGeneration") != generation:
        return (
            f"DaemonSet {ref}: controller has not seen generation {generation} "
            f"(observed {status.get('observedGeneration')}); is kube-controller-manager running?"
        )
    desired = status.get("desiredNumberScheduled") or 0
    updated = status.get("updatedNumberScheduled") or 0
    ready = status.get("numberReady") or 0
    unavailable = status.get("numberUnavailable") or 0
    if updated == desired and ready == desired and not unavailable:
        return ""
    return (
        f"DaemonSet {ref} is not rolled out: {desired} pods desired, {updated} updated, "
        f"{ready} ready, {unavailable} unavailable"
    )


def crd_problem(crd: Mapping | None, name: str) -> str:
    if not crd:
        return f"CustomResourceDefinition {name} does not exist"
    for condition in (crd.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Established" and condition.get("status") == "True":
            return ""
    return f"CustomResourceDefinition {name} is not Established"
