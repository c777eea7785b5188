"""Make-before-break steps between two config versions."""

from __future__ import annotations

import yaml

from dpumesh.bridges import CDS, LDS, bridges


def _version(version: str, clusters: list[str], routes_to: list[str]) -> dict[str, bytes]:
    listener = {"name": "outbound", "routes_to": routes_to}
    return {
        LDS: yaml.safe_dump({"version_info": version, "resources": [listener]}).encode(),
        CDS: yaml.safe_dump({"version_info": version, "resources": [{"name": c} for c in clusters]}).encode(),
        f"envoy/sds/{version}.yaml": b"secret",
    }


def _load(files: dict[str, bytes], rel: str) -> tuple[str, list]:
    doc = yaml.safe_load(files[rel])
    return doc["version_info"], doc["resources"]


def test_clusters_come_before_the_routes_that_use_them_and_go_after() -> None:
    old = _version("v1", ["a", "b"], ["a", "b"])
    new = _version("v2", ["b", "c"], ["b", "c"])
    steps = bridges(old, new, "v2")
    assert [version for version, _ in steps] == ["v2-clusters-first", "v2-routes-moved"]
    first, moved = steps[0][1], steps[1][1]
    assert _load(first, LDS) == ("v2-clusters-first", [{"name": "outbound", "routes_to": ["a", "b"]}])
    assert sorted(c["name"] for c in _load(first, CDS)[1]) == ["a", "b", "c"]
    assert _load(moved, LDS) == ("v2-routes-moved", [{"name": "outbound", "routes_to": ["b", "c"]}])
    assert sorted(c["name"] for c in _load(moved, CDS)[1]) == ["a", "b", "c"]
    for files in (first, moved):  # every SDS file either listener set may use is there
        assert {"envoy/sds/v1.yaml", "envoy/sds/v2.yaml"} <= set(files)


def test_only_the_steps_a_change_needs() -> None:
    old = _version("v1", ["a"], ["a"])
    assert [v for v, _ in bridges(old, _version("v2", ["a", "b"], ["a", "b"]), "v2")] == ["v2-clusters-first"]
    assert [v for v, _ in bridges(old, _version("v3", [], []), "v3")] == ["v3-routes-moved"]
    assert bridges(old, _version("v4", ["a"], ["a"]), "v4") == []
    assert bridges({}, old, "v1") == []  # the first version has nothing to bridge from
