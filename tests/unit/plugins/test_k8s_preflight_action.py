"""dpumesh_k8s_preflight: each role's variables against its argument specs first, then its settings, every role
checked before the one failure. Runs the real roles' specs, defaults and checks through ansible-playbook."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
ROLES = ["multus", "spiderpool", "istio_dpu_cni"]
# What k8s_common joins from the inventory: one DPU node.
INVENTORY = {"_k8s_common_dpu_inventory": {"nodes": [{"name": "node-1"}], "hosts": {}}}


def run_check(tmp_path: Path, variables: dict, roles: list[str] = ROLES) -> dict:
    task = {"name": "Check the roles", "dpumesh_k8s_preflight": {"roles": roles}}
    play = {"hosts": "localhost", "gather_facts": False, "vars": {**INVENTORY, **variables}, "tasks": [task]}
    playbook = tmp_path / "playbook.yml"
    playbook.write_text(yaml.safe_dump([play]))
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
    )
    command = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
               "-e", f"ansible_python_interpreter={sys.executable}", str(playbook)]  # fmt: skip
    out = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    try:
        return json.loads(out.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError):
        raise AssertionError(f"no JSON result:\n{out.stdout}\n{out.stderr}") from None


def test_the_roles_defaults_pass(tmp_path):
    result = run_check(tmp_path, {})
    assert not result.get("failed") and not result["changed"], result.get("msg")


def test_a_wrong_type_is_reported_by_the_argument_specs_and_its_settings_are_not_checked(tmp_path):
    result = run_check(tmp_path, {"spiderpool_vlan_id": "ten", "multus_max_unavailable": 0})
    assert result["failed"]
    assert "spiderpool: Validation of arguments failed:" in result["msg"]
    assert "spiderpool_vlan_id" in result["msg"] and "int" in result["msg"]
    assert "spiderpool_vlan_id: must be 0-4094" not in result["msg"]
    # the other roles are still checked, in the same failure
    assert "multus inventory problems:\n- multus: multus_max_unavailable must be >= 1" in result["msg"]


def test_settings_problems_of_several_roles_fail_once_each_problem_on_its_line(tmp_path):
    result = run_check(tmp_path, {"spiderpool_vlan_id": 5000, "istio_dpu_cni_vxlan_vni": 0,
                                  "istio_dpu_cni_conf_dir": "etc/cni"})  # fmt: skip
    assert result["failed"]
    assert result["msg"] == (
        "spiderpool inventory problems:\n- spiderpool_vlan_id: must be 0-4094\n"
        "istio-dpu-cni inventory problems:\n- istio_dpu_cni_vxlan_vni: must be 1-16777215\n"
        "- istio_dpu_cni_conf_dir / istio_dpu_cni_bin_dir: must be absolute paths"
    )


def test_role_defaults_are_templated_with_the_inventory_and_no_dpu_node_is_a_problem(tmp_path):
    # istio_dpu_cni_network_mode defaults to dpumesh_network_mode
    result = run_check(tmp_path, {"dpumesh_network_mode": "l2", "_k8s_common_dpu_inventory": {"nodes": []}})
    assert result["failed"]
    assert "istio_dpu_cni_network_mode: unknown value 'l2'" in result["msg"]
    assert "dpu_socs: no host with dpu_soc_node; there is no DPU node to run the CNI on" in result["msg"]


def test_an_unknown_role_is_named(tmp_path):
    result = run_check(tmp_path, {}, roles=["no_such_role"])
    assert result["failed"] and "no role no_such_role" in result["msg"]
