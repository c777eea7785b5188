"""Render mode skips validating a component whose recorded fingerprint and files on disk are this run's.

A changed variable, an edited or missing file and check mode take the full path: validate, then write.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
PLAYBOOK = "playbooks/mesh_components.yml"
TASK = "Validate, and in render mode write, the manifests of"


def render_results(run_stages, out, options=(), **extra) -> dict[str, dict]:
    """Result of the validate-and-write task per component, after asserting the run succeeded."""
    vars_ = {"dpumesh_k8s_apply_mode": "render", "dpumesh_k8s_render_dir": str(out), **extra}
    run = run_stages("lab", vars_, playbooks=[PLAYBOOK], options=options, json_output=True)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    results = {}
    for play in json.loads(run.stdout)["plays"]:
        for task in play["tasks"]:
            if TASK in task["task"]["name"]:
                result = task["hosts"]["lab-api"]
                results[result["component"]] = result
    return results


def controller_config(out):
    return out / "istio_dpu_controller" / "configmap.dpumesh-system.istio-dpu-controller.yaml"


def test_unchanged_components_are_verified_and_changes_take_the_full_path(tmp_path, run_stages):
    out = tmp_path / "manifests"
    first = render_results(run_stages, out)
    assert set(first) == {"namespace", "istio_dpu_controller", "istio_dpu_adapter", "istio_dpu_cni"}
    assert all(r["validated"] and r["changed"] for r in first.values()), first
    assert all((out / name / ".dpumesh-fingerprint").is_file() for name in first)

    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    second = render_results(run_stages, out)
    assert all(r["verified"] and not r["validated"] and not r["changed"] for r in second.values()), second
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps, "an unchanged run must write nothing"

    checked = render_results(run_stages, out, options=("--check", "--diff"))
    assert all(r["validated"] and not r["changed"] for r in checked.values()), "check mode validates everything"

    config = controller_config(out)
    assert "logLevel: info" in config.read_text()
    changed = render_results(run_stages, out, istio_dpu_controller_log_level="debug")
    assert changed["istio_dpu_controller"]["validated"] and changed["istio_dpu_controller"]["changed"]
    assert config.name in changed["istio_dpu_controller"]["written"]
    assert "logLevel: debug" in config.read_text()
    assert all(changed[name]["verified"] for name in ("namespace", "istio_dpu_adapter", "istio_dpu_cni"))

    wanted = config.read_text()
    config.write_text(wanted.replace("logLevel: debug", "logLevel: trace"))
    repaired = render_results(run_stages, out, istio_dpu_controller_log_level="debug")
    assert repaired["istio_dpu_controller"]["validated"]
    assert repaired["istio_dpu_controller"]["written"] == [config.name]
    assert config.read_text() == wanted

    (out / "istio_dpu_cni" / "stray.yaml").write_text("kind: ConfigMap\n")
    pruned = render_results(run_stages, out, istio_dpu_controller_log_level="debug")
    assert pruned["istio_dpu_cni"]["validated"] and pruned["istio_dpu_cni"]["removed"] == ["stray.yaml"]
    assert not (out / "istio_dpu_cni" / "stray.yaml").exists()


def run_action(args: dict, check: bool = False) -> dict:
    """dpumesh_k8s_manifests on localhost, alone (ad hoc), as apply mode calls it when given no path."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_LOAD_CALLBACK_PLUGINS="1")
    env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.builtin.json"
    cmd = [str(BIN / "ansible"), "localhost", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}"]
    cmd += ["-M", str(ROOT / "roles/k8s_common/library"), "-m", "dpumesh_k8s_manifests", "-a", json.dumps(args)]
    out = subprocess.run(cmd + (["--check"] if check else []), cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120, check=False)  # fmt: skip
    return json.loads(out.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]


def test_without_a_path_the_objects_are_only_validated():
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}}
    args = {"component": "demo", "kubernetes_versions": ["1.33"]}
    good = run_action({**args, "objects": [namespace]})
    assert good["validated"] and not good["changed"] and not good.get("failed")
    bad = run_action({**args, "objects": [{**namespace, "metadata": {"name": "Not_A_Name"}}]})
    assert bad["failed"] and bad["msg"].startswith("demo: rendered manifests are invalid:")
    assert "Not_A_Name" in bad["msg"]
