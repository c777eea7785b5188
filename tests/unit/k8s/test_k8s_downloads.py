"""The downloads table: references, mirror rewrite, the list to mirror."""

from __future__ import annotations

import pytest

from dpumesh.errors import DpumeshError
from dpumesh.k8s.downloads import (
    check_table,
    format_mirror_list,
    images_report,
    load_downloads_table,
    mirror_list,
    resolve,
)

TABLE = {
    "cni": {"type": "image", "registry": "ghcr.io", "repository": "org/cni", "tag": "v1.0", "digest": ""},
    "pinned": {
        "type": "image",
        "registry": "quay.io",
        "repository": "org/p",
        "tag": "",
        "digest": "sha256:" + "a" * 64,
    },
    "web": {"type": "chart", "repo_url": "https://charts.example", "chart": "web", "version": "1.2.3"},
    "oci": {"type": "chart", "oci_ref": "oci://ghcr.io/org/chart", "chart": "chart", "version": "0.9.0"},
}


def test_references_and_mirror_rewrite():
    plain = resolve(TABLE)
    assert plain["cni"]["ref"] == "ghcr.io/org/cni:v1.0"
    assert plain["pinned"]["ref"] == "quay.io/org/p@sha256:" + "a" * 64
    mirrored = resolve(TABLE, "mirror.local:5000/dpumesh")
    assert mirrored["cni"]["ref"] == "mirror.local:5000/dpumesh/org/cni:v1.0"
    assert mirrored["cni"]["image_registry"] == "mirror.local:5000"
    assert mirrored["cni"]["image_path"] == "dpumesh/org/cni"
    assert mirrored["oci"]["chart_ref"] == "oci://mirror.local:5000/dpumesh/org/chart"
    assert mirrored["web"]["chart_repo_url"] == "https://charts.example"


def test_overrides_change_fields_and_refuse_unknown_entries():
    assert resolve(TABLE, overrides={"cni": {"tag": "v2.0"}})["cni"]["ref"] == "ghcr.io/org/cni:v2.0"
    with pytest.raises(DpumeshError, match=r"k8s_common_download_overrides\.nope: no such entry"):
        resolve(TABLE, overrides={"nope": {"tag": "x"}})


def test_table_problems_name_entry_and_field():
    bad = {
        "a": {"type": "image", "registry": "ghcr.io", "repository": "x", "tag": "", "digest": ""},
        "b": {"type": "image", "registry": "", "repository": "x", "tag": "bad tag", "digest": "md5:1"},
        "c": {"type": "chart", "chart": "c", "version": "1"},
        "d": {"type": "tarball"},
    }
    assert check_table(bad) == [
        "downloads table entry 'a': missing image tag (set 'tag' or 'digest')",
        "downloads table entry 'b': field 'registry' is empty",
        "downloads table entry 'b': tag 'bad tag' is not a valid image tag",
        "downloads table entry 'b': digest 'md5:1' is not sha256:<64 hex>",
        "downloads table entry 'c': set 'repo_url' (HTTP repository) or 'oci_ref' (OCI registry)",
        "downloads table entry 'd': type 'tarball' is not 'image' or 'chart'",
    ]
    with pytest.raises(DpumeshError, match=r"dpumesh_registry_mirror: 'https://x' is not"):
        resolve(TABLE, "https://x")


def test_mirror_list_and_formats():
    items = mirror_list(TABLE, "mirror.local")
    assert [(i.type, i.key) for i in items] == [
        ("image", "cni"),
        ("image", "pinned"),
        ("chart", "oci"),
        ("chart", "web"),
    ]
    assert items[0].source == "ghcr.io/org/cni:v1.0" and items[0].target == "mirror.local/org/cni:v1.0"
    assert format_mirror_list(items, "refs").splitlines()[0] == "ghcr.io/org/cni:v1.0"
    text = format_mirror_list(items).splitlines()
    assert text[0].split() == ["TYPE", "KEY", "VERSION", "DIGEST", "SOURCE", "TARGET"]
    assert text[1].split() == ["image", "cni", "v1.0", "-", "ghcr.io/org/cni:v1.0", "mirror.local/org/cni:v1.0"]


def test_the_project_table_is_complete_and_pinned():
    table = load_downloads_table()
    assert check_table(table) == []
    refs = images_report(fmt="refs").splitlines()
    assert "ghcr.io/k8snetworkplumbingwg/multus-cni:v4.2.2-thick" in refs
    assert all(":latest" not in ref for ref in refs)
    assert table["spiderpool_chart"]["version"].startswith("1.2.")
