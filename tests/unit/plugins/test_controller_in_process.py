"""Action plugins that skip the module start when the target is the controller itself (local connection, no
become) give the module's answers. Each task runs twice on this machine: as is (in process) and with become
(which makes the plugin start the module, as for any other target)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
ROLES = ROOT / "roles"


def _run(tmp_path: Path, role: str, tasks: list[dict]) -> dict[str, dict]:
    """Each task of `tasks` in process and as a module: {task name: result}, the module's under "<name> (module)"."""
    both = []
    for task in tasks:
        both += [task, {**task, "name": f"{task['name']} (module)", "become": True}]
    playbook = tmp_path / "playbook.yml"
    playbook.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": both}]))
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_ACTION_PLUGINS=str(ROLES / role / "action_plugins"),
        ANSIBLE_LIBRARY=str(ROLES / role / "library"),
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
    )
    command = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "-i",
        "localhost,",
        "-c",
        "local",
        "-e",
        f"ansible_python_interpreter={sys.executable}",
        str(playbook),
    ]
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False)
    try:
        tasks_run = json.loads(out.stdout)["plays"][0]["tasks"]
    except (ValueError, KeyError, IndexError):
        raise AssertionError(f"no JSON result:\n{out.stdout}\n{out.stderr}") from None
    return {t["task"]["name"]: t["hosts"]["localhost"] for t in tasks_run}


def _same(results: dict[str, dict], name: str, keys: tuple[str, ...]) -> dict:
    in_process, module = results[name], results[f"{name} (module)"]
    assert {k: in_process.get(k) for k in keys} == {k: module.get(k) for k in keys}, name
    return in_process


def test_preflight_probe_in_process_matches_the_module(tmp_path):
    sysfs = tmp_path / "sys"
    (sysfs / "kernel" / "iommu_groups" / "0").mkdir(parents=True)
    (sysfs / "class" / "net" / "pf0" / "device").mkdir(parents=True)
    (sysfs / "class" / "net" / "pf0" / "device" / "sriov_totalvfs").write_text("4\n")
    probe = {"sysfs_root": str(sysfs), "min_free_memory_mb": 1, "min_kernel": "3.0"}
    tasks = [
        {"name": "soc", "dpu_preflight_probe": {**probe, "kind": "soc"}, "ignore_errors": True},
        {
            "name": "host",
            "dpu_preflight_probe": {
                **probe,
                "kind": "host",
                "model": {"name": "Card", "vendor": "0x15b3", "device": "0xa2d6"},
                "pf": "pf0",
                "num_vfs": "8",  # a string, as templating gives: converted like the module does
                "modules": ["no_such_module_here"],
            },
            "ignore_errors": True,
        },
        {"name": "bad kind", "dpu_preflight_probe": {"kind": "card"}, "ignore_errors": True},
    ]
    results = _run(tmp_path, "dpu_preflight", tasks)
    soc = _same(results, "soc", ("changed", "failed", "findings", "facts"))
    assert [f["status"] for f in soc["findings"] if f["check"] == "kernel version"] == ["ok"]
    host = _same(results, "host", ("changed", "failed", "findings", "facts"))
    statuses = {f["check"]: f["status"] for f in host["findings"]}
    assert statuses["SR-IOV VFs"] == "FAIL" and statuses["kernel module no_such_module_here"] == "FAIL"
    assert results["bad kind"]["failed"] and results["bad kind (module)"]["failed"]
    assert "kind" in results["bad kind"]["msg"] and "host, soc" in results["bad kind"]["msg"]


def test_preflight_report_checks_first_then_prints_and_stops_on_a_failed_row(tmp_path):
    """The role's one check task: a malformed configuration stops it before the host is read; otherwise the
    findings table (probe rows, then the inventory's) is its message, and a failed row stops it with the fix."""
    probe = {"kind": "soc", "sysfs_root": str(tmp_path / "sys"), "min_free_memory_mb": 1, "min_kernel": "3.0"}
    relation = {"check": "DPU host of this SoC", "status": "ok", "found": "node-1", "needed": "a host", "fix": ""}
    report = {"host": "node-1-dpu", "title": "node-1-dpu (soc)", "relation": relation, "config_problems": " "}
    pinged = {
        "checked": True,
        "name": "node-1-dpu",
        "in_play": False,
        "ping": {"unreachable": True, "msg": "no route to host"},
    }
    tasks = [
        {"name": "fit", "dpu_preflight_probe": {**probe, "report": report}},
        {
            "name": "malformed",
            # a kind the probe refuses: the configuration problem is reported instead, the host is not read
            "dpu_preflight_probe": {**probe, "kind": "card", "report": {**report, "config_problems": "bad model\n"}},
            "ignore_errors": True,
        },
        {
            "name": "unfit",
            "dpu_preflight_probe": {**probe, "report": {**report, "relation": {**relation, "status": "FAIL"}}},
            "ignore_errors": True,
        },
        {
            "name": "soc down",
            "dpu_preflight_probe": {**probe, "kind": "host", "report": {**report, "soc": pinged}},
            "ignore_errors": True,
        },
    ]
    results = _run(tmp_path, "dpu_preflight", tasks)
    fit = _same(results, "fit", ("changed", "failed", "msg"))
    assert not fit.get("failed") and fit["msg"][0] == "preflight node-1-dpu (soc)"
    assert fit["msg"][1].split() == ["check", "status", "found", "needed"]
    assert fit["msg"][-1].split()[:6] == ["DPU", "host", "of", "this", "SoC", "ok"]
    assert _same(results, "malformed", ("failed", "msg"))["msg"] == "bad model"
    unfit = _same(results, "unfit", ("failed", "msg"))
    assert unfit["failed"] and unfit["msg"].endswith(
        "node-1-dpu cannot take the requested configuration: [DPU host of this SoC: found node-1, needed a host -> ]"
    )
    down = _same(results, "soc down", ("failed", "msg"))
    assert down["failed"] and "[SoC node-1-dpu reachable: found no route to host, needed answers ping" in down["msg"]


def test_render_dir_unchanged_in_process_and_changes_through_the_module(tmp_path):
    target = tmp_path / "out"
    files = [{"name": "a.yaml", "content": "a\n"}, {"name": "b.yaml", "content": "b\n"}]
    write = {"path": str(target), "files": files, "fingerprint": "f1"}
    first = _run(tmp_path, "k8s_common", [{"name": "write", "dpumesh_k8s_render_dir": write}])
    assert first["write"]["changed"] and first["write"]["written"] == ["a.yaml", "b.yaml"]
    assert first["write (module)"]["changed"] is False  # the module, right after: already written

    keys = ("changed", "verified", "written", "removed", "failed")
    again = _run(tmp_path, "k8s_common", [{"name": "unchanged", "dpumesh_k8s_render_dir": write}])
    assert _same(again, "unchanged", keys)["verified"] is True

    # Drift: an edited file, a stale file, another fingerprint; each is seen in process and handed to the module.
    (target / "a.yaml").write_text("edited\n")
    (target / "stale.yaml").write_text("old\n")
    drift = _run(tmp_path, "k8s_common", [{"name": "drift", "dpumesh_k8s_render_dir": write}])
    assert drift["drift"]["changed"] and drift["drift"]["written"] == ["a.yaml"]
    assert drift["drift"]["removed"] == ["stale.yaml"] and (target / "a.yaml").read_text() == "a\n"
    refingerprint = {**write, "fingerprint": "f2"}
    recorded = _run(tmp_path, "k8s_common", [{"name": "new fingerprint", "dpumesh_k8s_render_dir": refingerprint}])
    assert recorded["new fingerprint"]["verified"] is False  # the module ran and recorded f2
    assert (target / ".dpumesh-fingerprint").read_text() == "f2"
    assert recorded["new fingerprint (module)"]["verified"] is True

    bad = {"path": str(target), "files": [{"name": "../escape.yaml", "content": "x"}]}
    refused = _run(tmp_path, "k8s_common", [{"name": "bad", "dpumesh_k8s_render_dir": bad, "ignore_errors": True}])
    assert _same(refused, "bad", ("failed",))["failed"] and "plain file name" in refused["bad"]["msg"]


def test_dir_modes_in_process_match_the_stat_command(tmp_path):
    (tmp_path / "open").mkdir(mode=0o755)
    (tmp_path / "private").mkdir()
    (tmp_path / "private").chmod(0o700)
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").touch()
    (tmp_path / "link").symlink_to("open")
    paths = [
        f"{tmp_path}/",
        f"{tmp_path}/open",
        f"{tmp_path}/private",
        f"{tmp_path}/file",
        f"{tmp_path}/empty",
        f"{tmp_path}/link",
        f"{tmp_path}/missing",
    ]
    results = _run(tmp_path, "dpu_soc", [{"name": "read", "dpu_soc_dir_modes": {"paths": paths}}])
    found = _same(results, "read", ("changed", "failed", "stdout_lines"))["stdout_lines"]
    assert f"0700:directory:{tmp_path}/private" in found and f"0755:directory:{tmp_path}/open" in found
    assert len(found) == 6 and not any(line.endswith("/missing") for line in found)


def test_lab_command_in_process_matches_command(tmp_path):
    argv = ["sh", "-c", "echo out; echo err >&2; exit 3"]
    results = _run(tmp_path, "lab", [{"name": "fails", "lab_command": {"argv": argv}, "ignore_errors": True}])
    found = _same(results, "fails", ("rc", "stdout", "stderr", "stdout_lines", "stderr_lines", "failed", "changed"))
    assert found["rc"] == 3 and found["stdout"] == "out" and found["failed"]
