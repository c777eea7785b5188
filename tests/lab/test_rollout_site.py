"""The whole site.yml on the lab inventory: a second run changes nothing (every role, every host)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from dpumesh.lab import paths, proxy

ROOT = Path(__file__).parents[2]
APP = ROOT / "examples" / "lab-app"
RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


def _play(playbook: str, *args: str, failing: bool = False) -> tuple[dict[str, dict[str, int]], str]:
    # The SoCs' config directories follow the lab directory these tests run in.
    lab = str(paths.lab_dir())
    extra = {"mesh_config_root": f"{lab}/nodes/{{{{ dpu_soc_node }}}}/proxy",
             "mesh_config_cert_dir": f"{lab}/nodes/{{{{ dpu_soc_node }}}}/certs"}  # fmt: skip
    command = str(Path(sys.executable).parent / "ansible-playbook")
    argv = [command, "-i", "inventories/lab", playbook, "-e", json.dumps(extra), *args]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False, env=os.environ)
    assert (done.returncode == 0) != failing, done.stdout[-3000:] + done.stderr[-2000:]
    recap = {m[0]: dict(zip(("ok", "changed", "unreachable", "failed"), map(int, m[1:]), strict=True))
             for m in RECAP.findall(done.stdout)}  # fmt: skip
    return recap, done.stdout


def test_a_second_site_run_changes_nothing() -> None:
    _play("playbooks/site.yml")
    second, output = _play("playbooks/site.yml")
    assert {"lab", "node-1", "node-1-dpu", "node-2", "node-2-dpu"} <= set(second), output[-3000:]
    assert {host: r["changed"] for host, r in second.items() if r["changed"] or r["failed"]} == {}


def _changed_state(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    shutil.copytree(APP, state)
    shop = state / "10-shop.yaml"
    # jason's route matches alice instead, and no route uses v1 any more: the v1 clusters go (bridges).
    text = shop.read_text().replace("exact: jason", "exact: alice")
    assert text.count("subset: v1") == 2, "the routes of examples/lab-app changed: update this test"
    shop.write_text(text.replace("subset: v1", "subset: v3", 1).replace("subset: v1", "subset: v2"))
    return state


def test_check_diff_shows_the_config_change_per_node_and_changes_nothing(tmp_path: Path) -> None:
    state = _changed_state(tmp_path)
    current = {node: os.readlink(paths.proxy_dir(node) / "current") for node in ("node-1", "node-2")}
    recap, output = _play("playbooks/mesh_config.yml", "--check", "--diff", "-e", f"dpumesh_state_dir={state}")
    assert recap["node-1-dpu"]["changed"] == 1 and recap["node-2-dpu"]["changed"] == 1
    # One line per route, readable: the VirtualService route whose match moved from jason to alice.
    assert "-      route shop/catalog/0: / end-user=jason -> outbound|8080|v3|" in output
    assert "+      route shop/catalog/0: / end-user=alice -> outbound|8080|v3|" in output
    assert "@type" not in output  # no raw Envoy JSON
    assert {node: os.readlink(paths.proxy_dir(node) / "current") for node in current} == current


def test_a_version_failing_its_health_check_is_rolled_back_by_the_play(tmp_path: Path) -> None:
    state = _changed_state(tmp_path)
    nodes = ("node-1", "node-2")
    current = {node: os.readlink(paths.proxy_dir(node) / "current") for node in nodes}
    failing_probe = json.dumps({"mesh_config_probe_command": ["/bin/false"], "mesh_config_health_timeout": 3})
    recap, output = _play(
        "playbooks/mesh_config.yml", "-e", f"dpumesh_state_dir={state}", "-e", failing_probe, failing=True
    )
    assert recap["node-1-dpu"]["failed"] == 1 and recap["node-2-dpu"]["failed"] == 1  # each node on its own
    assert "failed its health check: the probe request through the proxy fails" in output
    assert f"rolled back to {os.path.basename(current['node-1'])}" in output
    assert {node: os.readlink(paths.proxy_dir(node) / "current") for node in nodes} == current
    for node in nodes:
        version = os.path.basename(current[node])
        assert proxy.served_versions(node, 15000) == {"lds": version, "cds": version}

    recap, output = _play("playbooks/mesh_config.yml", "-e", f"dpumesh_state_dir={state}")
    for node in nodes:  # without the failing probe the same version goes live and is served
        version = os.path.basename(os.readlink(paths.proxy_dir(node) / "current"))
        assert version != os.path.basename(current[node])
        assert proxy.served_versions(node, 15000) == {"lds": version, "cds": version}
