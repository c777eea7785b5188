"""Renders the Kubernetes stages with the real playbooks once per session, into temporary dirs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
STAGES = ["playbooks/k8s_addons.yml", "playbooks/mesh_components.yml"]


def run_playbooks(
    inventory: str, extra: dict, playbooks=STAGES, options: tuple[str, ...] = (), json_output: bool = False
) -> subprocess.CompletedProcess:
    """ansible-playbook on the k8s_api host only, locally, with extra vars from a file; `options` are more
    command-line options (e.g. --check), `json_output` prints the results as JSON (ansible.posix.json)."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), PATH=f"{BIN}:{os.environ['PATH']}")
    env.pop("ANSIBLE_STDOUT_CALLBACK", None)
    if json_output:
        env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
    extra = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, **extra}
    extra_file = Path(extra["dpumesh_k8s_render_dir"]).parent / f"{Path(extra['dpumesh_k8s_render_dir']).name}.json"
    extra_file.write_text(json.dumps(extra))
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", f"inventories/{inventory}", "-e", f"@{extra_file}", *options, *playbooks],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def render(tmp_path_factory, inventory: str, **extra) -> Path:
    out = tmp_path_factory.mktemp(inventory) / "manifests"
    result = run_playbooks(inventory, {"dpumesh_k8s_apply_mode": "render", "dpumesh_k8s_render_dir": str(out), **extra})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return out


def _load_objects(render_dir: Path) -> list[dict]:
    return [
        yaml.safe_load(path.read_text())
        for path in sorted(render_dir.glob("*/*.yaml"))
        if path.name != "kustomization.yaml"
    ]


@pytest.fixture(scope="session")
def load_objects():
    """Every rendered object of a render dir (not kustomizations or Helm values)."""
    return _load_objects


@pytest.fixture(scope="session")
def run_stages():
    """Runs the stage playbooks: run_stages(inventory, extra_vars, playbooks=...)."""
    return run_playbooks


# The other path through every switch: overlay (staging), operator, plain NAD, mirror, pull secrets.
STAGING_EXTRA = {
    "sriov_mode": "operator",
    "spiderpool_attachment_kind": "NetworkAttachmentDefinition",
    "spiderpool_chart_archive": "/srv/charts/spiderpool-1.2.2.tgz",
    "dpumesh_registry_mirror": "registry.example:5000/mirror",
    "multus_image_pull_secret": "regcred",
    "sriov_image_pull_secret": "regcred",
    "spiderpool_image_pull_secret": "regcred",
    "istio_dpu_controller_image_pull_secret": "regcred",
    "istio_dpu_adapter_image_pull_secret": "regcred",
    "istio_dpu_cni_image_pull_secret": "regcred",
}


@pytest.fixture(scope="session")
def renders(tmp_path_factory) -> dict[str, Path]:
    """Both inventories, rendered by two ansible-playbook runs side by side (each keeps one core busy)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        lab = pool.submit(render, tmp_path_factory, "lab")
        staging = pool.submit(render, tmp_path_factory, "staging", **STAGING_EXTRA)
        return {"lab": lab.result(), "staging": staging.result()}


@pytest.fixture(scope="session")
def lab_render(renders) -> Path:
    """The lab inventory as it is: underlay, device plugin, SpiderMultusConfig."""
    return renders["lab"]


@pytest.fixture(scope="session")
def staging_render(renders) -> Path:
    return renders["staging"]


@pytest.fixture(scope="session", params=["lab", "staging"])
def rendered(request, renders) -> Path:
    return renders[request.param]


def pytest_terminal_summary(terminalreporter):
    """Say it in capitals when the upstream CRD check did not run."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "upstream_crds" in r.nodeid]
    if skipped:
        terminalreporter.write_sep(
            "!",
            "SKIPPED: rendered custom resources were not checked against upstream CRDs (DPUMESH_TEST_CRD_DIR unset)",
        )
