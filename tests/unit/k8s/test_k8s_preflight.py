"""The stage playbooks stop in preflight on bad inventory, before anything is rendered or applied."""

from __future__ import annotations

import shutil

import pytest

CASES = {
    "unknown network mode": (
        {"dpumesh_network_mode": "vxlan"},
        "dpumesh_network_mode: unknown value 'vxlan'; use one of: underlay, overlay",
    ),
    "VF range outside the PF's VFs": (
        {"sriov_resource_pools": [{"resource_name": "dpumesh_vf", "pfs": [{"name": "lab-pf1", "vfs": "0-8"}]}]},
        "sriov_resource_pools[0] (dpumesh_vf): PF lab-pf1: VF range 0-8 is outside the PF's VFs on node-1 "
        "(dpu_host_num_vfs 8: VFs 0-7)",
    ),
    "pool CIDR overlapping the pod CIDR": (
        {"spiderpool_vf_cidr": "10.244.200.0/22"},
        "spiderpool_vf_cidr: 10.244.200.0/22 overlaps dpumesh_pod_cidr (10.244.0.0/16)",
    ),
    "pool CIDR overlapping the service CIDR": (
        {"spiderpool_vf_cidr": "10.96.0.0/24"},
        "spiderpool_vf_cidr: 10.96.0.0/24 overlaps dpumesh_service_cidr (10.96.0.0/16)",
    ),
    "missing image tag": (
        {"k8s_common_download_overrides": {"istio_dpu_adapter": {"tag": ""}}},
        "downloads table entry 'istio_dpu_adapter': missing image tag (set 'tag' or 'digest')",
    ),
    "unknown sriov mode": ({"sriov_mode": "cni-only"}, "sriov_mode"),
    "unknown apply mode": (
        {"dpumesh_k8s_apply_mode": "gitops"},
        "dpumesh_k8s_apply_mode: unknown value 'gitops'; use one of: apply, render",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("playbook", ["playbooks/k8s_addons.yml", "playbooks/mesh_components.yml"])
def test_bad_inventory_stops_before_anything_is_written(tmp_path, run_stages, case, playbook):
    extra, message = CASES[case]
    render_dir = tmp_path / "manifests"
    vars_ = {"dpumesh_k8s_apply_mode": "render", "dpumesh_k8s_render_dir": str(render_dir), **extra}
    result = run_stages("lab", vars_, playbooks=[playbook])
    assert result.returncode != 0
    assert message in result.stdout, result.stdout[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    assert not render_dir.exists(), "preflight failed but something was rendered"


def test_apply_mode_with_a_missing_kubeconfig_stops_in_preflight(tmp_path, run_stages):
    vars_ = {
        "dpumesh_k8s_apply_mode": "apply",
        "dpumesh_kubeconfig": str(tmp_path / "missing.kubeconfig"),
        "dpumesh_k8s_render_dir": str(tmp_path / "unused"),
    }
    result = run_stages("lab", vars_, playbooks=["playbooks/mesh_components.yml"])
    assert result.returncode != 0
    assert f"dpumesh_kubeconfig: {tmp_path}/missing.kubeconfig does not exist on the control host" in result.stdout


@pytest.mark.skipif(bool(shutil.which("helm")), reason="helm is installed here; the missing-helm path cannot be shown")
def test_apply_mode_without_helm_stops_before_any_api_call(tmp_path, run_stages):
    # A kubeconfig for a port nothing listens on: reaching the API would fail differently.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {token: t}}]\n"
    )
    vars_ = {
        "dpumesh_k8s_apply_mode": "apply",
        "dpumesh_kubeconfig": str(kubeconfig),
        "dpumesh_k8s_render_dir": str(tmp_path / "unused"),
    }
    result = run_stages("lab", vars_)
    assert result.returncode != 0
    assert "spiderpool installs a Helm chart with kubernetes.core.helm, which needs helm 3" in result.stdout
    assert "127.0.0.1:9" not in result.stdout, "an API call was attempted before the preflight finished"
