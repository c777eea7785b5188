"""Custom resources against dpumesh's field schemas, and (when available) the upstream CRDs."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

from dpumesh.k8s.crd_schemas import CUSTOM_RESOURCES
from dpumesh.k8s.crds import load_crd_schemas, validate_against_crds
from dpumesh.k8s.validate import validate_manifests

CUSTOM_KINDS = {kind for _api, kind in CUSTOM_RESOURCES}


def _custom(objects):
    return [o for o in objects if o["kind"] in CUSTOM_KINDS]


def test_both_renders_cover_every_custom_kind(lab_render, staging_render, load_objects):
    kinds = {o["kind"] for o in _custom(load_objects(lab_render) + load_objects(staging_render))}
    assert kinds == CUSTOM_KINDS


@pytest.mark.parametrize(
    ("kind", "mutate", "expected"),
    [
        ("SpiderIPPool", lambda o: o["spec"].update(subnets="10.0.0.0/8"), "Additional properties"),
        ("SpiderIPPool", lambda o: o["spec"].pop("subnet"), "'subnet' is a required property"),
        ("SpiderIPPool", lambda o: o["spec"].update(ipVersion=5), "spec.ipVersion"),
        ("SpiderIPPool", lambda o: o["metadata"].update(namespace="x"), "must be empty for a cluster-scoped"),
        ("SpiderMultusConfig", lambda o: o["spec"].update(coordinator={"mode": "bridged"}), "spec.coordinator.mode"),
        ("SpiderMultusConfig", lambda o: o["spec"]["sriov"].update(vlanID=5000), "spec.sriov.vlanID"),
        ("SpiderMultusConfig", lambda o: o["metadata"].pop("namespace"), "required for a namespaced"),
        ("SriovNetworkNodePolicy", lambda o: o["spec"].pop("numVfs"), "'numVfs' is a required property"),
        ("SriovNetworkNodePolicy", lambda o: o["spec"].update(priority=100), "spec.priority"),
        ("SriovNetworkNodePolicy", lambda o: o["spec"]["nicSelector"].update(pfName="x"), "Additional properties"),
        ("NetworkAttachmentDefinition", lambda o: o["spec"].update(config="{not json"), "not a JSON CNI"),
    ],
)
def test_field_schemas_reject_bad_custom_resources(lab_render, staging_render, load_objects, kind, mutate, expected):
    good = next(o for o in _custom(load_objects(lab_render) + load_objects(staging_render)) if o["kind"] == kind)
    assert validate_manifests([good]) == []
    bad = copy.deepcopy(good)
    mutate(bad)
    problems = validate_manifests([bad])
    assert any(expected in p for p in problems), problems


CRD_DIR = os.environ.get("DPUMESH_TEST_CRD_DIR", "")


@pytest.mark.skipif(
    not CRD_DIR,
    reason="SKIPPED LOUDLY: DPUMESH_TEST_CRD_DIR is not set, so rendered custom resources were NOT checked "
    "against the upstream CRDs (set it to a directory of spiderpool, multus and sriov-network-operator CRDs)",
)
def test_rendered_custom_resources_match_upstream_crds(lab_render, staging_render, load_objects):
    schemas = load_crd_schemas(Path(CRD_DIR))
    objects = _custom(load_objects(lab_render) + load_objects(staging_render))
    missing = sorted({(o["apiVersion"], o["kind"]) for o in objects} - set(schemas))
    assert not missing, f"no upstream CRD in {CRD_DIR} for {missing}"
    assert validate_against_crds(objects, schemas) == []
    # The upstream schemas are strict here too: a typo must fail.
    bad = copy.deepcopy(next(o for o in objects if o["kind"] == "SpiderIPPool"))
    bad["spec"]["gatway"] = bad["spec"].pop("gateway")
    assert any("gatway" in p for p in validate_against_crds([bad], schemas))
