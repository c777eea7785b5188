"""The table of renamed and removed inventory variables stays true to the roles."""

from __future__ import annotations

from pathlib import Path

import yaml

from dpumesh.k8s.renamed import RENAMED, renamed_variable_problems

ROOT = Path(__file__).resolve().parents[3]


def _role_defaults() -> set[str]:
    names: set[str] = set()
    for path in ROOT.glob("roles/*/defaults/main.yml"):
        names |= set(yaml.safe_load(path.read_text()) or {})
    return names


def _inventory_vars() -> set[str]:
    names: set[str] = set()
    for path in ROOT.glob("inventories/*/*_vars/**/*.yml"):
        names |= set(yaml.safe_load(path.read_text()) or {})
    return names


def test_no_old_name_is_still_a_role_default_or_set_by_a_sample_inventory():
    assert not RENAMED.keys() & (_role_defaults() | _inventory_vars())


def test_every_new_name_is_a_variable_the_roles_read():
    readable = _role_defaults() | _inventory_vars()
    assert {entry.new for entry in RENAMED.values() if entry.new} - readable == set()


def test_each_old_name_set_gets_one_message_naming_old_and_new():
    problems = renamed_variable_problems(["downloads_table", "k8s_common_registry_mirror", "spiderpool_vf_cidr"])
    assert len(problems) == 2
    assert problems[0].startswith("k8s_common_registry_mirror is no longer read: renamed to dpumesh_registry_mirror")
    assert problems[1].startswith("spiderpool_vf_cidr is no longer read: each DPU node's VF address pool")
    assert "dpumesh_node_pod_cidr" in problems[1]


def test_current_names_pass():
    assert renamed_variable_problems(sorted(_role_defaults())) == []
