"""dpumesh_role_check: a role's variables against its argument specs first, then its settings, in one task."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]

SPEC = {"demo_port": {"type": "int", "default": 80}, "demo_mode": {"type": "str", "choices": ["a", "b"]}}
# Compares demo_port with a number: a string there would be a template error, not a problem, if it came first.
PROBLEMS = "{{ [] if demo_port < 65536 else ['demo_port: ' ~ demo_port ~ ' is not a port'] }}"


def run_check(tmp_path: Path, variables: dict) -> dict:
    task = {
        "name": "Check the demo role",
        "dpumesh_role_check": {"argument_spec": SPEC, "problems_var": "_demo_problems", "fail_msg": "demo problems"},
        "vars": {"_demo_problems": PROBLEMS},
    }
    playbook = tmp_path / "playbook.yml"
    playbook.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "vars": variables,
                                         "tasks": [task]}]))  # fmt: skip
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
    )
    command = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
               "-e", f"ansible_python_interpreter={sys.executable}", str(playbook)]  # fmt: skip
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    try:
        return json.loads(out.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError):
        raise AssertionError(f"no JSON result:\n{out.stdout}\n{out.stderr}") from None


def test_good_variables_and_settings_pass(tmp_path):
    result = run_check(tmp_path, {"demo_port": 8080, "demo_mode": "a"})
    assert not result.get("failed") and not result["changed"] and result["problems"] == []


def test_a_wrong_type_is_reported_by_the_argument_specs_before_the_settings_are_evaluated(tmp_path):
    result = run_check(tmp_path, {"demo_port": "eighty", "demo_mode": "a"})
    assert result["failed"]
    assert result["msg"].startswith("Validation of arguments failed:")
    assert "demo_port" in result["msg"] and "int" in result["msg"]
    assert "problems" not in result


def test_a_bad_choice_is_named(tmp_path):
    result = run_check(tmp_path, {"demo_port": 80, "demo_mode": "c"})
    assert result["failed"] and "demo_mode" in result["msg"] and "a, b" in result["msg"]


def test_problems_with_the_settings_fail_with_each_problem_on_its_line(tmp_path):
    result = run_check(tmp_path, {"demo_port": 70000, "demo_mode": "b"})
    assert result["failed"]
    assert result["msg"] == "demo problems:\n- demo_port: 70000 is not a port"
    assert result["problems"] == ["demo_port: 70000 is not a port"]
