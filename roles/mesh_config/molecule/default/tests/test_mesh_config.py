"""The SoC holds versioned configs: `current` and `previous` point at complete versions, old ones are pruned."""

import json

import yaml

testinfra_hosts = ["mesh-config-soc"]
ROOT = "/etc/dpumesh/proxy"


def _version(host, link):
    return host.file(f"{ROOT}/{link}").linked_to.rsplit("/", 1)[-1]


def test_current_is_a_complete_version(host):
    current = host.file(f"{ROOT}/current")
    assert current.is_symlink
    manifest = json.loads(host.file(f"{ROOT}/current/MANIFEST.json").content_string)
    assert manifest["node"] == "node-1"
    assert manifest["version"] == _version(host, "current")
    for rel in manifest["files"]:
        assert host.file(f"{ROOT}/current/{rel}").is_file, rel
    lds = yaml.safe_load(host.file(f"{ROOT}/current/envoy/lds.yaml").content_string)
    assert {listener["name"] for listener in lds["resources"]} == {"outbound", "inbound"}


def test_previous_is_the_version_before_and_old_ones_are_pruned(host):
    versions = host.file(f"{ROOT}/versions").listdir()
    assert len(versions) == 2, versions  # the make-before-break bridges went too
    assert _version(host, "previous") in versions and _version(host, "current") in versions
    assert _version(host, "previous") != _version(host, "current")
    basic = json.loads(host.file(f"{ROOT}/previous/MANIFEST.json").content_string)
    assert basic["stats"]["local_pods"] == 4


def test_no_staging_left_behind(host):
    assert not [n for n in host.file(ROOT).listdir() if n.startswith(".staging")]
