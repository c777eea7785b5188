"""The render-mode writer: atomic per file, unchanged files untouched, stale files pruned, check mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def run_module(args: dict, check: bool = False) -> dict:
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
    )
    cmd = [
        str(Path(sys.executable).parent / "ansible"),
        "localhost",
        "-c",
        "local",
        "-e",
        f"ansible_python_interpreter={sys.executable}",
        "-M",
        str(ROOT / "roles/k8s_common/library"),
        "-m",
        "dpumesh_k8s_render_dir",
        "-a",
        json.dumps(args),
    ]
    if check:
        cmd.append("--check")
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    return json.loads(out.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]


def test_writes_prunes_and_leaves_unchanged_files_alone(tmp_path):
    target = tmp_path / "out"
    first = run_module(
        {"path": str(target), "files": [{"name": "a.yaml", "content": "a\n"}, {"name": "b.yaml", "content": "b\n"}]}
    )
    assert first["changed"] and first["written"] == ["a.yaml", "b.yaml"]
    (target / "stale.yaml").write_text("old\n")
    (target / "notes.txt").write_text("kept\n")
    inode = (target / "a.yaml").stat().st_ino
    checked = run_module({"path": str(target), "files": [{"name": "a.yaml", "content": "a\n"}]}, check=True)
    assert checked["changed"] and checked["removed"] == ["b.yaml", "stale.yaml"]
    assert (target / "stale.yaml").exists(), "check mode must not remove"
    second = run_module({"path": str(target), "files": [{"name": "a.yaml", "content": "a\n"}]})
    assert second["written"] == [] and second["removed"] == ["b.yaml", "stale.yaml"]
    assert sorted(p.name for p in target.iterdir()) == ["a.yaml", "notes.txt"]
    assert (target / "a.yaml").stat().st_ino == inode
    third = run_module({"path": str(target), "files": [{"name": "a.yaml", "content": "a\n"}]})
    assert third["changed"] is False
    replaced = run_module({"path": str(target), "files": [{"name": "a.yaml", "content": "new\n"}]})
    assert replaced["written"] == ["a.yaml"] and (target / "a.yaml").read_text() == "new\n"
    assert not [p for p in target.iterdir() if p.name.startswith(".")], "temporary file left behind"


def test_refuses_paths_in_names(tmp_path):
    result = run_module({"path": str(tmp_path), "files": [{"name": "../escape.yaml", "content": "x"}]})
    assert result.get("failed") and "plain file name" in result["msg"]


def test_verify_only_as_a_module_and_in_process_agree(tmp_path):
    """Remote targets run verify_only as a module; the controller as target calls the module's verify()."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "render_dir", ROOT / "roles/k8s_common/library/dpumesh_k8s_render_dir.py"
    )
    render_dir = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render_dir)
    target, files = tmp_path / "out", [{"name": "a.yaml", "content": "a\n"}]
    run_module({"path": str(target), "files": files, "fingerprint": "f1"})
    cases = {
        "recorded": ("f1", files),
        "other fingerprint": ("f2", files),
        "edited file": ("f1", [{"name": "a.yaml", "content": "edited\n"}]),
        "extra file": ("f1", []),
        "no fingerprint": ("", files),
    }
    outcomes = {}
    for case, (fingerprint, wanted) in cases.items():
        args = {"path": str(target), "files": wanted, "fingerprint": fingerprint, "verify_only": True}
        as_module = run_module(args)
        in_process = render_dir.verify(str(target), wanted, fingerprint)
        assert {k: as_module[k] for k in in_process} == in_process, case
        outcomes[case] = in_process["verified"]
    assert outcomes == {case: case == "recorded" for case in cases}
    assert (target / "a.yaml").read_text() == "a\n", "verify_only writes nothing"
