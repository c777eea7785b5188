"""The downloads table: references, mirror rewrite, the list to mirror."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile

import pytest

from dpumesh.errors import DpumeshError
from dpumesh.k8s.downloads import (
    EXAMPLE_DIGEST,
    archive_digest_problems,
    check_table,
    format_mirror_list,
    images_report,
    load_downloads_table,
    mirror_list,
    resolve,
    service_images,
    table_problems,
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
    with pytest.raises(DpumeshError, match=r"downloads_overrides\.nope: no such entry"):
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
        "downloads table entry 'b': field 'digest': 'md5:1' is not sha256:<64 lower-case hex digits>",
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
    assert text[0].split() == ["TYPE", "KEY", "VERSION", "DIGEST", "ARCHIVE", "SOURCE", "TARGET"]
    assert text[1].split() == ["image", "cni", "v1.0", "-", "-", "ghcr.io/org/cni:v1.0", "mirror.local/org/cni:v1.0"]


def test_the_project_table_is_complete_and_pinned():
    table = load_downloads_table()
    assert check_table(table) == []
    refs = images_report(fmt="refs").splitlines()
    assert "ghcr.io/k8snetworkplumbingwg/multus-cni:v4.2.2-thick" in refs
    assert all(":latest" not in ref for ref in refs)
    assert table["spiderpool_chart"]["version"].startswith("1.2.")
    # The SoC services are entries of the same table, with the archive an air-gapped SoC loads.
    assert "ghcr.io/dpumesh/dpu-proxy:0.1.0" in refs and "ghcr.io/dpumesh/dataplane:0.1.0" in refs
    assert table["dpu_proxy"]["archive"] == "dpu-proxy-0.1.0.tar"


DIGEST = "sha256:" + "b" * 64


def test_a_digest_pins_the_reference_after_the_tag():
    pinned = resolve(TABLE, "mirror.local", overrides={"cni": {"digest": DIGEST}})
    assert pinned["cni"]["ref"] == f"mirror.local/org/cni:v1.0@{DIGEST}"
    assert pinned["cni"]["image_path"] == "org/cni" and pinned["cni"]["tag"] == "v1.0"


def test_required_digests_name_each_unpinned_or_example_entry():
    table = {**TABLE, "example": {**TABLE["cni"], "digest": EXAMPLE_DIGEST}}
    assert table_problems(table) == []
    assert table_problems(table, require_digests=True) == [
        "downloads table entry 'cni': field 'digest' is not set, and dpumesh_require_image_digests is true: pin "
        "the image with the registry's digest (skopeo inspect --format '{{.Digest}}' docker://ghcr.io/org/cni:v1.0)",
        "downloads table entry 'example': field 'digest' is the example value, and dpumesh_require_image_digests "
        "is true: pin the image with the registry's digest (skopeo inspect --format '{{.Digest}}' "
        "docker://ghcr.io/org/cni:v1.0)",
    ]
    assert table_problems(table, {"cni": {"digest": DIGEST}, "example": {"digest": DIGEST}}, "", True) == []
    assert table_problems(TABLE, {"cni": {"archive": "../x.tar"}}) == [
        "downloads table entry 'cni': field 'archive': '../x.tar' is not a plain file name"
    ]
    assert table_problems(TABLE, {"nope": {}}) == [
        "downloads_overrides.nope: no such entry in the downloads table (known: cni, oci, pinned, web)"
    ]


def _tar(path, files: dict[str, bytes]):
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_pinned_archives_must_be_oci_archives_holding_the_digest(tmp_path):
    index = {
        "schemaVersion": 2,
        "manifests": [{"digest": DIGEST, "mediaType": "application/vnd.oci.image.manifest.v1+json"}],
    }
    _tar(tmp_path / "oci.tar", {"oci-layout": b"{}", "index.json": json.dumps(index).encode()})
    _tar(tmp_path / "docker.tar", {"manifest.json": b"[]"})
    entry = {"type": "image", "registry": "ghcr.io", "repository": "org/p", "tag": "1"}
    assert archive_digest_problems({"p": {**entry, "digest": DIGEST, "archive": "oci.tar"}}, tmp_path) == []
    assert archive_digest_problems({"p": {**entry, "digest": "", "archive": "docker.tar"}}, tmp_path) == []
    wrong = archive_digest_problems({"p": {**entry, "digest": "sha256:" + "c" * 64, "archive": "oci.tar"}}, tmp_path)
    assert wrong == [
        f"downloads table entry 'p': field 'digest': archive {tmp_path}/oci.tar holds {DIGEST}, "
        f"not the pinned sha256:{'c' * 64}"
    ]
    (docker,) = archive_digest_problems({"p": {**entry, "digest": DIGEST, "archive": "docker.tar"}}, tmp_path)
    assert docker.startswith(f"downloads table entry 'p': field 'digest': {DIGEST} is pinned but archive ")
    assert f"skopeo copy --preserve-digests docker://ghcr.io/org/p:1@{DIGEST} oci-archive:docker.tar:" in docker


def test_service_images_pick_their_entries():
    table = {**TABLE, "proxy": {**TABLE["cni"], "repository": "org/proxy", "archive": "proxy.tar"}}
    found = service_images(table, {"proxy": {"digest": DIGEST}}, ["p"], {"p": "proxy"}, "m.local", True)
    assert found["problems"] == []
    assert found["images"]["p"]["ref"] == f"m.local/org/proxy:v1.0@{DIGEST}"
    assert found["images"]["p"]["archive"] == "proxy.tar" and found["images"]["p"]["key"] == "proxy"
    bad = service_images(table, {}, ["a", "b", "c", "d"], {"b": "nope", "c": "web", "d": "cni"}, need_archive=True)
    assert bad["problems"] == [
        "dpu_soc_image_entries.a: not set; name the downloads table entry of the service's image",
        "dpu_soc_image_entries.b: 'nope' is not an entry of the downloads table",
        "dpu_soc_image_entries.c: downloads table entry 'web' is a chart, not an image",
        "downloads table entry 'cni': field 'archive' is not set (the image is loaded from one)",
    ]


def test_images_cli_applies_an_inventory_vars_file(tmp_path):
    vars_file = tmp_path / "images.yml"
    vars_file.write_text(
        f"downloads_overrides:\n  dpu_proxy: {{digest: '{DIGEST}'}}\ndpumesh_registry_mirror: m.local:5000\n"
    )
    run = [sys.executable, "-m", "dpumesh.cli", "images", "--format", "refs", "--vars", str(vars_file)]
    refs = subprocess.run(run, capture_output=True, text=True, check=True).stdout.splitlines()
    assert f"ghcr.io/dpumesh/dpu-proxy:0.1.0@{DIGEST}" in refs
    vars_file.write_text("dpumesh_require_image_digests: true\n")
    failed = subprocess.run(run, capture_output=True, text=True, check=False)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "downloads table entry 'multus': field 'digest' is not set" in failed.stderr
