"""Run the real Envoy on compiled listeners/clusters: `--mode validate`, or serving traffic.

Files are written relative to one root directory; compile with
`ProxyLayout(config_dir=f"{root}/envoy", cert_dir=f"{root}/certs")` so the paths the
compiled config references land inside it. Secrets come from the SDS service
(`dpumesh sds`), which `sds_service` runs for a test that serves traffic.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from dpumesh import sds_process
from dpumesh.compiler.bootstrap import sds_cluster
from dpumesh.compiler.settings import ProxyLayout

ENVOY = Path(sys.executable).parent / "envoy"


def static_bootstrap(
    listeners: list[dict[str, Any]], clusters: list[dict[str, Any]], admin_port: int = 0, sds_socket: str = ""
) -> dict[str, Any]:
    """The config with the cluster of the node's SDS service, which the compiled TLS contexts name."""
    sds = sds_cluster(sds_socket or ProxyLayout().sds_socket)
    return {
        "node": {"id": "test", "cluster": "test"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {"listeners": listeners, "clusters": [*clusters, sds]},
    }


def write_config(
    root: Path,
    listeners: list[dict[str, Any]],
    clusters: list[dict[str, Any]],
    files: dict[str, bytes] | None = None,
    admin_port: int = 0,
    sds_socket: str = "",
) -> Path:
    """Write `files` (paths relative to root) and a static bootstrap; returns the bootstrap path."""
    for rel, data in (files or {}).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    config = root / "envoy" / "static.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump(static_bootstrap(listeners, clusters, admin_port, sds_socket), sort_keys=False))
    return config


def validate(
    root: Path,
    listeners: list[dict[str, Any]],
    clusters: list[dict[str, Any]],
    files: dict[str, bytes] | None = None,
) -> None:
    """`envoy --mode validate` on the config; fails the test with Envoy's own message."""
    config = write_config(root, listeners, clusters, files)
    result = validate_file(config)
    assert result.returncode == 0, f"envoy rejected {config}:\n{result.stdout}\n{result.stderr}"


def validate_file(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ENVOY), "--mode", "validate", "-c", str(config), "-l", "error", "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(config: Path, admin_port: int, log: Path, netns: str | None = None) -> Iterator[subprocess.Popen]:
    """Envoy serving `config` (optionally inside a network namespace) until the block ends."""
    command = [str(ENVOY), "-c", str(config), "--disable-hot-restart", "--concurrency", "1", "-l", "info"]
    if netns:
        command = ["ip", "netns", "exec", netns, *command]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_ready(process, admin_port, log, netns)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def admin_get(admin_port: int, path: str, netns: str | None = None) -> str:
    """GET from Envoy's admin interface (inside `netns` via curl when given)."""
    url = f"http://127.0.0.1:{admin_port}{path}"
    if netns:
        result = subprocess.run(
            ["ip", "netns", "exec", netns, "curl", "-s", "--max-time", "5", url],
            capture_output=True,
            text=True,
            check=False,
        )
        return result.stdout
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def _wait_ready(process: subprocess.Popen, admin_port: int, log: Path, netns: str | None) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"envoy exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if admin_get(admin_port, "/ready", netns).strip() == "LIVE":
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"envoy not ready after 30 s:\n{log.read_text()[-4000:]}")


def listener_stats(admin_port: int, netns: str | None = None) -> dict[str, int]:
    raw = admin_get(admin_port, "/stats?format=json", netns)
    return {s["name"]: s.get("value", 0) for s in json.loads(raw)["stats"] if "value" in s}


@contextlib.contextmanager
def sds_service(socket_path: Path, cert_dir: str) -> Iterator[subprocess.Popen]:
    """The node's SDS service on `socket_path` for as long as the block runs."""
    proc = subprocess.Popen(sds_process.command(socket_path, cert_dir))
    try:
        sds_process.wait_until_serving(socket_path, proc)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)
