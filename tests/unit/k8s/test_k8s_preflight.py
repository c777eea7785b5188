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
    "node pod CIDR outside the pod CIDR": (
        {"dpumesh_pod_cidr": "10.245.0.0/16"},
        "host node-1 (dpu_hosts): dpumesh_node_pod_cidr 10.244.1.0/24 is not inside dpumesh_pod_cidr 10.245.0.0/16",
    ),
    "node pod CIDR overlapping the service CIDR": (
        {"dpumesh_pod_cidr": "10.244.1.0/24", "dpumesh_service_cidr": "10.244.2.0/24"},
        "host node-2 (dpu_hosts): dpumesh_node_pod_cidr 10.244.2.0/24 overlaps dpumesh_service_cidr 10.244.2.0/24",
    ),
    "former VF address space": (
        {"spiderpool_vf_cidr": "10.250.0.0/16"},
        "spiderpool_vf_cidr is no longer read: each DPU node's VF address pool is its pod CIDR",
    ),
    "renamed downloads table": (
        {"k8s_common_downloads": {}},
        "k8s_common_downloads is no longer read: renamed to downloads_table (the table moved to role downloads; "
        "change entries with downloads_overrides)",
    ),
    "renamed download overrides": (
        {"k8s_common_download_overrides": {"multus": {"tag": "v4.2.0-thick"}}},
        "k8s_common_download_overrides is no longer read: renamed to downloads_overrides",
    ),
    "renamed registry mirror": (
        {"k8s_common_registry_mirror": "registry.example:5000/mirror"},
        "k8s_common_registry_mirror is no longer read: renamed to dpumesh_registry_mirror",
    ),
    "former coordinator mode": (
        {"spiderpool_coordinator_mode": "overlay"},
        "spiderpool_coordinator_mode is no longer read: the spiderpool coordinator is always off",
    ),
    "malformed digest": (
        {"downloads_overrides": {"multus": {"digest": "sha256:12AB"}}},
        "downloads table entry 'multus': field 'digest': 'sha256:12AB' is not sha256:<64 lower-case hex digits>",
    ),
    "missing image tag": (
        {"downloads_overrides": {"istio_dpu_adapter": {"tag": ""}}},
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


def test_a_vf_pool_that_is_not_the_node_pod_cidr_stops_before_anything_is_written(tmp_path, run_stages):
    state = tmp_path / "state"
    state.mkdir()
    (state / "nodes.yaml").write_text(
        "apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\nspec: {podCIDR: 10.244.1.0/24}\n---\n"
        "apiVersion: v1\nkind: Node\nmetadata: {name: node-2}\nspec: {podCIDR: 10.244.9.0/24}\n"
    )
    render_dir = tmp_path / "manifests"
    vars_ = {
        "dpumesh_k8s_apply_mode": "render",
        "dpumesh_k8s_render_dir": str(render_dir),
        "dpumesh_state_dir": str(state),
    }
    result = run_stages("lab", vars_, playbooks=["playbooks/k8s_addons.yml"])
    assert result.returncode != 0
    assert (
        "node node-2: dpumesh_node_pod_cidr 10.244.2.0/24 (its VF address pool) differs from spec.podCIDR "
        f"10.244.9.0/24 in dpumesh_state_dir {state}, which the compiler and dataplane route; set "
        "dpumesh_node_pod_cidr: 10.244.9.0/24 in host_vars/node-2.yml"
    ) in result.stdout, result.stdout[-3000:]
    assert "node-1:" not in result.stdout.split("Pod CIDR problems:")[-1]
    assert not render_dir.exists()


def test_the_production_sample_stops_until_every_image_is_pinned(tmp_path, run_stages):
    render_dir = tmp_path / "manifests"
    vars_ = {"dpumesh_k8s_apply_mode": "render", "dpumesh_k8s_render_dir": str(render_dir)}
    result = run_stages("production", vars_, playbooks=["playbooks/k8s_addons.yml"])
    assert result.returncode != 0
    for message in (
        "downloads table entry 'multus': field 'digest' is not set, and dpumesh_require_image_digests is true",
        "downloads table entry 'dpu_proxy': field 'digest' is the example value, and dpumesh_require_image_digests",
    ):
        assert message in result.stdout, result.stdout[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    assert not render_dir.exists()


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
