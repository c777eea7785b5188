"""playbooks/mesh_config.yml over several SoC hosts compiles once per batch on the controller, then activates
each host's own bundle; a problem in the state fails every host before any of them received anything."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
APP = ROOT / "examples" / "lab-app"
# Two hosts per node, each with its own root: per-host settings differ, as the lab's per-node roots do.
HOSTS = {"soc-a": "node-1", "soc-b": "node-2", "soc-c": "node-1", "soc-d": "node-2"}
BROKEN_RULE = """
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: broken, namespace: shop}
spec:
  host: inventory
  trafficPolicy: {tls: {mode: BOGUS}}
"""


def _run(tmp_path: Path, state: Path, *options: str) -> tuple[int, dict, str]:
    """The mesh_config playbook over HOSTS on this machine, then a play that reports what the role left in
    each host's variables; returns the exit status, the JSON callback's output and stderr."""
    roots = tmp_path / "socs"
    inventory = {
        "all": {
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                "dpumesh_state_dir": str(state),
                "mesh_config_root": f"{roots}/{{{{ inventory_hostname }}}}/proxy",
                "mesh_config_cert_dir": f"{roots}/{{{{ inventory_hostname }}}}/certs",
                "mesh_config_keep_versions": 2,
                "mesh_config_health_check": False,  # no proxy runs here; tests/lab checks it against Envoy
            },
            "children": {"dpu_socs": {"hosts": {host: {"dpu_soc_node": node} for host, node in HOSTS.items()}}},
        }
    }
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    playbook = [
        {"ansible.builtin.import_playbook": str(ROOT / "playbooks" / "mesh_config.yml")},
        {
            "name": "Report what the role left",
            "hosts": "dpu_socs",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Report",
                    "ansible.builtin.debug": {
                        "msg": {
                            "build": "{{ _mesh_config_build }}",
                            "result": "{{ _mesh_config_result }}",
                            "build_dir_left": "{{ _mesh_config_build.build_dir is exists }}",
                        }
                    },
                }
            ],
        },
    ]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(playbook, sort_keys=False))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    argv = [str(BIN / "ansible-playbook"), "-i", str(tmp_path / "inventory.yml"), str(tmp_path / "play.yml"), *options]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    return done.returncode, json.loads(done.stdout), done.stderr


def _results(output: dict, task: str) -> dict[str, dict]:
    """Every host's result of the task named `task` (over all batches)."""
    found = {}
    for play in output["plays"]:
        for entry in play["tasks"]:
            if entry["task"]["name"].endswith(task):
                found |= entry["hosts"]
    return found


def _reports(output: dict) -> dict[str, dict]:
    return {host: result["msg"] for host, result in _results(output, "Report").items()}


def _current(tmp_path: Path, host: str) -> dict:
    return json.loads((tmp_path / "socs" / host / "proxy" / "current" / "MANIFEST.json").read_text())


def test_one_compile_per_batch_serves_every_host_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    status, output, stderr = _run(tmp_path, APP, "-e", "dpumesh_mesh_config_serial=2")
    assert status == 0, json.dumps(output)[-3000:] + stderr[-2000:]
    reports = _reports(output)
    assert set(reports) == set(HOSTS)
    batches = {}
    for host, report in reports.items():
        batches.setdefault(report["build"]["build_dir"], set()).add(host)
    # serial: 2 makes two batches, each compiled once into one build directory for both its hosts.
    assert sorted(map(sorted, batches.values())) == [["soc-a", "soc-b"], ["soc-c", "soc-d"]]
    for host, report in reports.items():
        build = report["build"]
        assert set(build["bundles"]) == batches[build["build_dir"]]
        assert build["state_loads"] == 1
        assert build["setting_groups"] == 1  # each host its own root, one shared build: roots are not settings
        assert report["build_dir_left"] is False  # removed once the batch was activated
        bundle = build["bundles"][host]
        assert bundle["node"] == HOSTS[host]
        assert report["result"]["version"] == bundle["version"] == _current(tmp_path, host)["version"]
        assert _current(tmp_path, host)["node"] == HOSTS[host]
    compiles = _results(output, "Compile the config of every node of this batch on the controller")
    assert len(compiles) == 2, compiles  # one host ran it per batch
    assert {host: stats["changed"] for host, stats in output["stats"].items()} == dict.fromkeys(HOSTS, 1)

    status, output, stderr = _run(tmp_path, APP)
    assert status == 0, json.dumps(output)[-3000:] + stderr[-2000:]
    assert {report["build"]["build_dir"] for report in _reports(output).values()} != {None}
    assert len({report["build"]["build_dir"] for report in _reports(output).values()}) == 1  # one batch
    assert {host: stats["changed"] for host, stats in output["stats"].items()} == dict.fromkeys(HOSTS, 0)


def test_a_state_error_fails_every_host_before_anything_is_pushed(tmp_path: Path) -> None:
    status, output, stderr = _run(tmp_path, APP)
    assert status == 0, json.dumps(output)[-3000:] + stderr[-2000:]
    before = {host: _current(tmp_path, host) for host in HOSTS}
    versions = {host: sorted(os.listdir(tmp_path / "socs" / host / "proxy" / "versions")) for host in HOSTS}
    state = tmp_path / "state"
    shutil.copytree(APP, state)
    (state / "10-shop.yaml").write_text((state / "10-shop.yaml").read_text() + BROKEN_RULE)
    status, output, stderr = _run(tmp_path, state)
    assert status != 0
    assert {host: stats["failures"] for host, stats in output["stats"].items()} == dict.fromkeys(HOSTS, 1)
    failed = _results(output, "Stop every host of the batch when the compile failed")
    assert set(failed) == set(HOSTS)
    (message,) = {result["msg"] for result in failed.values()}
    assert "DestinationRule shop/broken: spec.trafficPolicy.tls.mode: 'BOGUS' is not a TLS mode" in message
    assert "nothing was pushed to any node of this batch" in message
    assert "Traceback" not in json.dumps(output) + stderr
    assert not _results(output, "Validate and activate the config of node node-1")  # no host got that far
    assert not _reports(output)  # and none went on to the next play
    assert {host: _current(tmp_path, host) for host in HOSTS} == before
    assert {host: sorted(os.listdir(tmp_path / "socs" / host / "proxy" / "versions")) for host in HOSTS} == versions
