"""The stage playbooks stop in preflight on bad inventory, before anything is rendered or applied."""

from __future__ import annotations

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
