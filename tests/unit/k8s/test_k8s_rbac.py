"""Rendered Roles/ClusterRoles grant exactly what docs/k8s-addons.md writes down."""

from __future__ import annotations

import re
from pathlib import Path

from dpumesh.k8s.rbac import Grant, grants, rbac_problems

DOC = Path(__file__).resolve().parents[3] / "docs" / "k8s-addons.md"


def documented_grants(namespace: str) -> set[Grant]:
    """Rows of the RBAC table: | role | kind | api group | resources | verbs | why |."""
    section = DOC.read_text().split("## RBAC", 1)[1].split("\n## ", 1)[0]
    found = set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or cells[1] not in ("Role", "ClusterRole"):
            continue
        role, kind, group, resources, verbs, _why = cells
        group = "" if group == "core" else group
        for resource in re.split(r",\s*", resources):
            for verb in re.split(r",\s*", verbs):
                found.add(Grant(kind, namespace if kind == "Role" else "", role, group, resource, verb))
    return found


def test_rendered_rbac_is_exactly_the_documented_table(rendered, load_objects):
    documented = documented_grants("dpumesh-system")
    assert len(documented) > 40
    assert grants(load_objects(rendered)) == documented


def test_no_wildcards_and_bindings_resolve(rendered, load_objects):
    objects = load_objects(rendered)
    assert rbac_problems(objects) == []
    for obj in objects:
        for rule in obj.get("rules", []):
            assert "*" not in str(rule)


def test_rbac_check_finds_wildcards_and_dangling_bindings():
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "too-much"},
        "rules": [{"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "b"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "missing"},
        "subjects": [{"kind": "ServiceAccount", "name": "nobody", "namespace": "x"}],
    }
    problems = rbac_problems([role, binding])
    assert problems == [
        "ClusterRole too-much: rules[0].resources: wildcard '*' is not allowed; list what is needed",
        "ClusterRoleBinding b: roleRef ClusterRole missing is not one of the rendered roles",
        "ClusterRoleBinding b: ServiceAccount x/nobody is not rendered",
    ]
