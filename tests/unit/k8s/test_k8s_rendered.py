"""What the roles render: valid for every supported Kubernetes version, and the right content."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from dpumesh.dataplane.model import gateway_ip
from dpumesh.k8s.downloads import EXAMPLE_DIGEST, load_downloads_table, load_inventory_settings, resolve
from dpumesh.k8s.manifests import file_name
from dpumesh.k8s.validate import SUPPORTED_VERSIONS, validate_manifests

ROOT = Path(__file__).resolve().parents[3]


def test_supported_versions_are_1_26_to_1_33():
    assert tuple(f"1.{minor}" for minor in range(26, 34)) == SUPPORTED_VERSIONS


def test_every_rendered_manifest_is_valid_for_every_supported_version(rendered, load_objects):
    objects = load_objects(rendered)
    assert len(objects) >= 25
    assert validate_manifests(objects, SUPPORTED_VERSIONS) == []


def test_validation_rejects_what_kubernetes_rejects(lab_render):
    daemonset = yaml.safe_load((lab_render / "multus/daemonset.kube-system.kube-multus-ds.yaml").read_text())
    typo = copy.deepcopy(daemonset)
    typo["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    wrong_type = copy.deepcopy(daemonset)
    wrong_type["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] = [1]
    problems = validate_manifests([typo], ["1.26"]) + validate_manifests([wrong_type], ["1.26"])
    assert any("imagePullPolcy" in p for p in problems), problems
    assert any("maxUnavailable" in p for p in problems), problems
    assert all(p.startswith("DaemonSet kube-system/kube-multus-ds: Kubernetes 1.26:") for p in problems)
    assert validate_manifests([daemonset, daemonset], ["1.26"]) == [
        "DaemonSet kube-system/kube-multus-ds: rendered twice"
    ]


def test_file_names_are_kind_namespace_name(rendered):
    for path in rendered.glob("*/*.yaml"):
        if path.name != "kustomization.yaml":
            assert path.name == file_name(yaml.safe_load(path.read_text()))


def test_kustomization_lists_exactly_the_files_in_apply_order(rendered):
    for kustomization in rendered.glob("*/kustomization.yaml"):
        listed = yaml.safe_load(kustomization.read_text())["resources"]
        present = sorted(p.name for p in kustomization.parent.glob("*.yaml") if p.name != "kustomization.yaml")
        assert sorted(listed) == present
        kinds = [name.split(".")[0] for name in listed]
        if "customresourcedefinition" in kinds:
            assert kinds.index("customresourcedefinition") < kinds.index("daemonset")


def test_every_image_comes_from_the_downloads_table(rendered, load_objects):
    staging = "staging" in str(rendered)
    mirror = "registry.example:5000/mirror" if staging else ""
    images_file = ROOT / "inventories" / ("staging" if staging else "lab") / "group_vars/all/images.yml"
    overrides = load_inventory_settings([images_file] if images_file.exists() else []).get("downloads_overrides")
    table = resolve(load_downloads_table(), mirror, overrides)
    allowed = {entry["ref"] for entry in table.values() if entry["type"] == "image"}
    images = set()
    for obj in load_objects(rendered):
        spec = obj.get("spec", {}).get("template", {}).get("spec", {})
        images |= {c["image"] for c in spec.get("containers", []) + spec.get("initContainers", [])}
    assert images and images <= allowed
    if mirror:
        assert all(image.startswith(mirror + "/") for image in images)
    if staging:  # the sample pins the dpumesh images by digest: tag and digest both in the reference
        assert f"{mirror}/dpumesh/istio-dpu-cni:0.1.0@{EXAMPLE_DIGEST}" in images


def test_lab_components_and_modes(lab_render):
    components = sorted(p.name for p in lab_render.iterdir())
    assert components == [
        "istio_dpu_adapter",
        "istio_dpu_cni",
        "istio_dpu_controller",
        "multus",
        "namespace",
        "spiderpool",
        "sriov",
    ]
    smc = yaml.safe_load((lab_render / "spiderpool/spidermultusconfig.dpumesh-system.dpumesh-vf.yaml").read_text())
    assert smc["spec"]["enableCoordinator"] is False
    assert smc["spec"]["sriov"]["resourceName"] == "dpumesh.io/dpumesh_vf"
    assert smc["spec"]["sriov"]["ippools"] == {"ipv4": ["dpumesh-vf-node-1", "dpumesh-vf-node-2"]}
    pool = yaml.safe_load((lab_render / "spiderpool/spiderippool.dpumesh-vf-node-2.yaml").read_text())["spec"]
    assert pool == {
        "ipVersion": 4,
        "subnet": "10.244.2.0/24",
        "gateway": "10.244.2.1",
        "ips": ["10.244.2.2-10.244.2.254"],
        "nodeName": ["node-2"],
        "multusName": ["dpumesh-system/dpumesh-vf"],
    }
    dp = yaml.safe_load((lab_render / "sriov/configmap.kube-system.sriovdp-config.yaml").read_text())
    selectors = json.loads(dp["data"]["config.json"])["resourceList"][0]["selectors"]
    assert selectors == {"drivers": ["veth"], "pfNames": ["lab-pf1#0-7", "lab-pf2#0-7"]}
    cni = yaml.safe_load((lab_render / "istio_dpu_cni/configmap.dpumesh-system.istio-dpu-cni.yaml").read_text())
    assert yaml.safe_load(cni["data"]["config.yaml"])["network"] == {
        "mode": "underlay",
        "podCIDR": "10.244.0.0/16",
        "serviceCIDR": "10.96.0.0/16",
    }
    controller = yaml.safe_load(
        (lab_render / "istio_dpu_controller/configmap.dpumesh-system.istio-dpu-controller.yaml").read_text()
    )
    config = yaml.safe_load(controller["data"]["config.yaml"])
    assert config["istiod"]["address"] == "istiod.istio-system.svc:15012"
    assert config["mesh"]["trustDomain"] == "cluster.local"
    assert config["nodes"] == [
        {"name": "node-1", "socAddress": "node-1-dpu", "fabricIP": "192.168.250.1", "podCIDR": "10.244.1.0/24"},
        {"name": "node-2", "socAddress": "node-2-dpu", "fabricIP": "192.168.250.2", "podCIDR": "10.244.2.0/24"},
    ]


@pytest.mark.parametrize("component", ["istio_dpu_cni", "istio_dpu_controller"])
@pytest.mark.parametrize("inventory", ["lab", "staging"])
def test_each_node_pod_cidr_reaches_the_mesh_component_configs(renders, inventory, component):
    """The per-node pod CIDR the VF pools use (dpumesh_node_pod_cidr) is the one the CNI and controller get."""
    rendered = renders[inventory]
    host_vars = ROOT / "inventories" / inventory / "host_vars"
    expected = {}
    for path in sorted(host_vars.glob("*.yml")):
        values = yaml.safe_load(path.read_text())
        if "dpumesh_node_pod_cidr" in values:
            expected[path.stem] = values["dpumesh_node_pod_cidr"]
    name = component.replace("_", "-")
    configmap = yaml.safe_load((rendered / f"{component}/configmap.dpumesh-system.{name}.yaml").read_text())
    nodes = yaml.safe_load(configmap["data"]["config.yaml"])["nodes"]
    assert {node["name"]: node["podCIDR"] for node in nodes} == expected
    pools = {
        obj["spec"]["nodeName"][0]: obj["spec"]["subnet"]
        for obj in map(yaml.safe_load, (p.read_text() for p in rendered.glob("spiderpool/spiderippool.*.yaml")))
    }
    assert pools == expected, "the VF pools and the mesh components must see the same per-node CIDRs"


def test_staging_takes_the_other_switches(staging_render):
    assert not (staging_render / "sriov/daemonset.kube-system.sriov-device-plugin.yaml").exists()
    policy = yaml.safe_load(
        (staging_render / "sriov/sriovnetworknodepolicy.sriov-network-operator.dpumesh-vf.yaml").read_text()
    )
    assert policy["spec"]["numVfs"] == 32
    assert policy["spec"]["nicSelector"] == {"pfNames": ["ens1f0np0#0-31"]}
    assert policy["spec"]["externallyManaged"] is True
    chart = yaml.safe_load((staging_render / "sriov/helm/sriov-network-operator.chart.yaml").read_text())
    assert chart["chart"] == "oci://registry.example:5000/mirror/k8snetworkplumbingwg/sriov-network-operator-chart"
    values = yaml.safe_load((staging_render / "sriov/helm/sriov-network-operator.values.yaml").read_text())
    assert values["images"]["sriovCni"] == "registry.example:5000/mirror/k8snetworkplumbingwg/sriov-cni:v2.9.0"
    sp_chart = yaml.safe_load((staging_render / "spiderpool/helm/spiderpool.chart.yaml").read_text())
    assert sp_chart["archive"] == "/srv/charts/spiderpool-1.2.2.tgz"
    sp_values = yaml.safe_load((staging_render / "spiderpool/helm/spiderpool.values.yaml").read_text())
    assert sp_values["spiderpoolAgent"]["image"]["registry"] == "registry.example:5000"
    assert sp_values["spiderpoolAgent"]["image"]["repository"] == "mirror/spidernet-io/spiderpool/spiderpool-agent"
    assert sp_values["coordinator"]["mode"] == "disabled"
    assert sp_values["multus"]["multusCNI"]["install"] is False
    nad = yaml.safe_load(
        (staging_render / "spiderpool/networkattachmentdefinition.dpumesh-system.dpumesh-vf.yaml").read_text()
    )
    config = json.loads(nad["spec"]["config"])
    assert config["plugins"][0]["type"] == "sriov"
    assert config["plugins"][0]["ipam"]["default_ipv4_ippool"] == [
        "dpumesh-vf-worker-1.stg.example.net",
        "dpumesh-vf-worker-2.stg.example.net",
    ]
    assert nad["metadata"]["annotations"]["k8s.v1.cni.cncf.io/resourceName"] == "dpumesh.io/dpumesh_vf"
    cni = yaml.safe_load((staging_render / "istio_dpu_cni/configmap.dpumesh-system.istio-dpu-cni.yaml").read_text())
    assert yaml.safe_load(cni["data"]["config.yaml"])["network"]["tunnel"] == {
        "type": "vxlan",
        "vni": 4242,
        "dstPort": 4789,
    }


@pytest.mark.parametrize("component", ["istio_dpu_controller", "istio_dpu_adapter", "istio_dpu_cni"])
def test_mesh_daemonsets(staging_render, component):
    name = component.replace("_", "-")
    ds = yaml.safe_load((staging_render / f"{component}/daemonset.dpumesh-system.{name}.yaml").read_text())
    pod = ds["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    # staging pins the dpumesh images by (example) digest
    assert container["image"] == f"registry.example:5000/mirror/dpumesh/{name}:0.1.0@{EXAMPLE_DIGEST}"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"]
    assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
    expected = (
        {"node-role.kubernetes.io/control-plane": ""} if name == "istio-dpu-controller" else {"dpumesh.io/dpu": "true"}
    )
    assert pod["nodeSelector"] == expected


@pytest.mark.parametrize("inventory", ["lab", "staging"])
def test_the_vf_network_routes_everything_through_the_dpu_as_the_dataplane_model_assumes(renders, inventory):
    """One VF, default route to the DPU (the first address of the node's pod CIDR), nothing else.

    The steering model sends ClusterIPs and every pod CIDR through the VF to the DPU; spiderpool's coordinator
    (underlay and overlay mode alike) would route the cluster pod CIDR and the service CIDR to the host instead.
    """
    rendered = renders[inventory]
    for path in rendered.glob("spiderpool/spiderippool.*.yaml"):
        spec = yaml.safe_load(path.read_text())["spec"]
        assert spec["gateway"] == gateway_ip(spec["subnet"]), path.name
        assert "routes" not in spec, path.name
    values = yaml.safe_load((rendered / "spiderpool/helm/spiderpool.values.yaml").read_text())
    assert values["coordinator"]["mode"] == "disabled"
    smc = rendered / "spiderpool/spidermultusconfig.dpumesh-system.dpumesh-vf.yaml"
    nad = rendered / "spiderpool/networkattachmentdefinition.dpumesh-system.dpumesh-vf.yaml"
    assert smc.exists() != nad.exists()
    if smc.exists():
        spec = yaml.safe_load(smc.read_text())["spec"]
        assert spec["enableCoordinator"] is False and "coordinator" not in spec
    else:
        plugins = json.loads(yaml.safe_load(nad.read_text())["spec"]["config"])["plugins"]
        assert [plugin["type"] for plugin in plugins] == ["sriov"]
