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


def render_results(run_stages, out, options=(), **extra) -> dict[str, list[dict]]:
    """Results of the validate-and-write tasks per component, in the order they ran (each mesh role's task also
    checks the dpumesh namespace), after asserting the run succeeded."""
    vars_ = {"dpumesh_k8s_apply_mode": "render", "dpumesh_k8s_render_dir": str(out), **extra}
    run = run_stages("lab", vars_, playbooks=[PLAYBOOK], options=options, json_output=True)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    results: dict[str, list[dict]] = {}
    for play in json.loads(run.stdout)["plays"]:
        for task in play["tasks"]:
            if TASK in task["task"]["name"]:
                result = task["hosts"]["lab-api"]
                for component in result.get("components", [result]):
                    results.setdefault(component["component"], []).append(component)
    return results


def every(results: dict[str, list[dict]], names=None) -> list[dict]:
    """Every result of the named components (all components without names)."""
    return [r for name, runs in results.items() if names is None or name in names for r in runs]


def controller_config(out):
    return out / "istio_dpu_controller" / "configmap.dpumesh-system.istio-dpu-controller.yaml"


def test_unchanged_components_are_verified_and_changes_take_the_full_path(tmp_path, run_stages):
    out = tmp_path / "manifests"
    first = render_results(run_stages, out)
    assert set(first) == {"namespace", "istio_dpu_controller", "istio_dpu_adapter", "istio_dpu_cni"}
    assert all(runs[0]["validated"] and runs[0]["changed"] for runs in first.values()), first
    # The namespace, written by the first role, is only verified by the next two.
    assert len(first["namespace"]) == 3
    assert all(r["verified"] and not r["validated"] and not r["changed"] for r in first["namespace"][1:]), first
    assert all((out / name / ".dpumesh-fingerprint").is_file() for name in first)

    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    second = render_results(run_stages, out)
    assert all(r["verified"] and not r["validated"] and not r["changed"] for r in every(second)), second
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps, "an unchanged run must write nothing"

    checked = render_results(run_stages, out, options=("--check", "--diff"))
    assert all(r["validated"] and not r["changed"] for r in every(checked)), "check mode validates everything"

    config = controller_config(out)
    assert "logLevel: info" in config.read_text()
    changed = render_results(run_stages, out, istio_dpu_controller_log_level="debug")
    (controller,) = changed["istio_dpu_controller"]
    assert controller["validated"] and controller["changed"]
    assert config.name in controller["written"]
    assert "logLevel: debug" in config.read_text()
    assert all(r["verified"] for r in every(changed, ("namespace", "istio_dpu_adapter", "istio_dpu_cni")))

    wanted = config.read_text()
    config.write_text(wanted.replace("logLevel: debug", "logLevel: trace"))
    repaired = render_results(run_stages, out, istio_dpu_controller_log_level="debug")
    (controller,) = repaired["istio_dpu_controller"]
    assert controller["validated"]
    assert controller["written"] == [config.name]
    assert config.read_text() == wanted

    (out / "istio_dpu_cni" / "stray.yaml").write_text("kind: ConfigMap\n")
    pruned = render_results(run_stages, out, istio_dpu_controller_log_level="debug")
    (cni,) = pruned["istio_dpu_cni"]
    assert cni["validated"] and cni["removed"] == ["stray.yaml"]
    assert not (out / "istio_dpu_cni" / "stray.yaml").exists()


def run_action(args: dict, check: bool = False) -> dict:
    """dpumesh_k8s_manifests on localhost, alone (ad hoc), as apply mode calls it when given no render_dir."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_LOAD_CALLBACK_PLUGINS="1")
    env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.builtin.json"
    cmd = [str(BIN / "ansible"), "localhost", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}"]
    cmd += ["-M", str(ROOT / "roles/k8s_common/library"), "-m", "dpumesh_k8s_manifests", "-a", json.dumps(args)]
    out = subprocess.run(cmd + (["--check"] if check else []), cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120, check=False)  # fmt: skip
    return json.loads(out.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]


def test_without_a_render_dir_the_objects_are_only_validated():
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}}
    args = {"kubernetes_versions": ["1.33"]}
    good = run_action({**args, "components": [{"component": "demo", "objects": [namespace]}]})
    assert good["components"][0]["validated"] and not good["changed"] and not good.get("failed")
    bad_objects = [{**namespace, "metadata": {"name": "Not_A_Name"}}]
    bad = run_action({**args, "components": [{"component": "demo", "objects": bad_objects}]})
    assert bad["failed"] and bad["msg"].startswith("demo: rendered manifests are invalid:")
    assert "Not_A_Name" in bad["msg"]


def test_several_components_are_all_validated_before_any_is_written(tmp_path):
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}}
    other = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}
    bad = {**other, "metadata": {"name": "Not_A_Name"}}
    args = {"kubernetes_versions": ["1.33"], "render_dir": str(tmp_path)}

    refused = run_action({**args, "components": [{"component": "a", "objects": [namespace]},
                                                  {"component": "b", "objects": [bad]}]})  # fmt: skip
    assert refused["failed"] and refused["msg"].startswith("b: rendered manifests are invalid:")
    assert "Not_A_Name" in refused["msg"]
    assert not (tmp_path / "a").exists(), "a valid component was written although another was invalid"

    both = {**args, "components": [{"component": "a", "objects": [namespace]}, {"component": "b", "objects": [other]}]}
    written = run_action(both)
    assert written["changed"] and not written.get("failed")
    assert [(c["component"], c["validated"], c["changed"]) for c in written["components"]] == [
        ("a", True, True),
        ("b", True, True),
    ]
    assert (tmp_path / "a" / "namespace.demo.yaml").is_file() and (tmp_path / "b" / "namespace.other.yaml").is_file()
    assert len(written["diff"]) == 4  # each component's object and kustomization

    again = run_action(both)
    assert not again["changed"] and all(c["verified"] and not c["validated"] for c in again["components"])

    (tmp_path / "b" / "namespace.other.yaml").write_text("kind: Namespace\n")
    repaired = run_action(both)
    assert repaired["changed"]
    assert [(c["component"], c["validated"]) for c in repaired["components"]] == [("a", False), ("b", True)]
    assert repaired["components"][1]["written"] == ["namespace.other.yaml"]

    validated = run_action({"kubernetes_versions": ["1.33"], "components": both["components"]})
    assert not validated["changed"] and all(c["validated"] for c in validated["components"])
    assert not any((tmp_path / name).exists() for name in ("namespace", "demo"))
