"""What the rendered Roles and ClusterRoles grant, flattened so it can be compared and reviewed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

_ROLE_KINDS = ("ClusterRole", "Role")
_BINDING_KINDS = ("ClusterRoleBinding", "RoleBinding")


@dataclass(frozen=True, order=True)
class Grant:
    """One verb on one resource, granted by one role (``namespace`` is empty for a ClusterRole)."""

    role_kind: str
    namespace: str
    role: str
    api_group: str  # "" is the core group
    resource: str
    verb: str
    resource_names: tuple[str, ...] = ()


def grants(manifests: Iterable[Mapping]) -> set[Grant]:
    found: set[Grant] = set()
    for manifest in manifests:
        if manifest.get("kind") not in _ROLE_KINDS:
            continue
        meta = manifest.get("metadata") or {}
        for rule in manifest.get("rules") or []:
            names = tuple(sorted(rule.get("resourceNames") or ()))
            for group in rule.get("apiGroups") or []:
                for resource in rule.get("resources") or []:
                    for verb in rule.get("verbs") or []:
                        found.add(
                            Grant(
                                manifest["kind"],
                                meta.get("namespace", ""),
                                meta["name"],
                                group,
                                resource,
                                verb,
                                names,
                            )
                        )
    return found


def rbac_problems(manifests: Iterable[Mapping]) -> list[str]:
    """Wildcards, non-resource URLs, and bindings to roles or service accounts not rendered."""
    manifests = list(manifests)
    problems: list[str] = []
    roles = set()
    accounts = set()
    for m in manifests:
        meta = m.get("metadata") or {}
        if m.get("kind") in _ROLE_KINDS:
            roles.add((m["kind"], meta.get("namespace", ""), meta.get("name")))
            for index, rule in enumerate(m.get("rules") or []):
                where = f"{m['kind']} {meta.get('name')}: rules[{index}]"
                for field in ("apiGroups", "resources", "verbs"):
                    if "*" in (rule.get(field) or []) or any("*" in str(v) for v in rule.get(field) or []):
                        problems.append(f"{where}.{field}: wildcard '*' is not allowed; list what is needed")
                if rule.get("nonResourceURLs"):
                    problems.append(f"{where}.nonResourceURLs: not needed by any dpumesh component")
        elif m.get("kind") == "ServiceAccount":
            accounts.add((meta.get("namespace"), meta.get("name")))
    for m in manifests:
        if m.get("kind") not in _BINDING_KINDS:
            continue
        meta = m.get("metadata") or {}
        ref = m.get("roleRef") or {}
        where = f"{m['kind']} {meta.get('name')}"
        role_ns = meta.get("namespace", "") if ref.get("kind") == "Role" else ""
        if (ref.get("kind"), role_ns, ref.get("name")) not in roles:
            problems.append(f"{where}: roleRef {ref.get('kind')} {ref.get('name')} is not one of the rendered roles")
        for subject in m.get("subjects") or []:
            if subject.get("kind") != "ServiceAccount":
                problems.append(f"{where}: subject {subject.get('kind')} {subject.get('name')} is not a ServiceAccount")
            elif (subject.get("namespace"), subject.get("name")) not in accounts:
                problems.append(
                    f"{where}: ServiceAccount {subject.get('namespace')}/{subject.get('name')} is not rendered"
                )
    return problems
