"""dpu-proxy in the lab: the node's compiled files, workload certificates and the Envoy program."""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from pathlib import Path

from dpumesh.activate import activate
from dpumesh.certs import LabCA, ensure_workload_certs
from dpumesh.compiler import NodeBundle
from dpumesh.dataplane.commands import run
from dpumesh.errors import DpumeshError
from dpumesh.lab import paths
from dpumesh.lab.preflight import envoy_path


def ca_dir() -> Path:
    return paths.lab_dir() / "ca"


def write_certs(node: str, trust_domain: str, identities: list[tuple[str, str]]) -> list[str]:
    ca = LabCA.ensure(ca_dir(), trust_domain)
    return ensure_workload_certs(paths.cert_dir(node), ca, trust_domain, identities)


def write_proxy_files(node: str, bundle: NodeBundle) -> list[str]:
    """Stage the bundle next to the node's versions and swap `current` to it (the SoC's activation path)."""
    root = paths.proxy_dir(node)
    root.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=".staged-", dir=root))
    for rel, data in bundle.files.items():
        (staged / rel).parent.mkdir(parents=True, exist_ok=True)
        (staged / rel).write_bytes(data)
    outcome = activate(str(root), str(staged), bundle.version)
    if outcome["error"]:
        raise DpumeshError(f"node {node}: config {bundle.version} not activated: {outcome['error']}")
    return [f"activated config {bundle.version}"] if outcome["changed"] else []


def bootstrap_path(node: str) -> Path:
    return paths.proxy_dir(node) / "current" / "envoy" / "bootstrap.yaml"


def envoy_program(node: str, admin_port: int) -> dict:
    """The supervisor spec of a node's Envoy; a new bootstrap or DPU namespace changes it (restart)."""
    bootstrap = bootstrap_path(node)
    netns = paths.dpu_netns(node)
    incarnation = hashlib.sha256(bootstrap.read_bytes()).hexdigest()[:16] + f"/{_netns_inode(netns)}"
    argv = ["ip", "netns", "exec", netns, envoy_path(), "-c", str(bootstrap), "--disable-hot-restart"]
    argv += ["--log-level", "warning", "--drain-time-s", "1", "--parent-shutdown-time-s", "2"]
    return {
        "argv": argv,
        "log": str(paths.logs_dir() / f"envoy-{node}.log"),
        "env": {"DPUMESH_INCARNATION": incarnation, "DPUMESH_ADMIN_PORT": str(admin_port)},
    }


def _netns_inode(netns: str) -> int:
    try:
        return Path(f"/run/netns/{netns}").stat().st_ino
    except OSError:
        return 0


def admin_get(node: str, admin_port: int, path: str) -> str:
    return run(["curl", "-sf", "--max-time", "2", f"http://127.0.0.1:{admin_port}{path}"], paths.dpu_netns(node))


def served_versions(node: str, admin_port: int) -> dict[str, str]:
    """The LDS and CDS versions Envoy has accepted ("" when unknown or unreachable)."""
    try:
        stats = admin_get(node, admin_port, "/stats?filter=version_text")
    except DpumeshError:
        return {"lds": "", "cds": ""}
    found = {"lds": "", "cds": ""}
    for line in stats.splitlines():
        name, _, value = line.partition(": ")
        for kind in found:
            if name.endswith(f"{kind}.version_text"):
                found[kind] = value.strip().strip('"')
    return found


def proxy_ready(node: str, admin_port: int) -> bool:
    try:
        return admin_get(node, admin_port, "/ready").strip() == "LIVE"
    except DpumeshError:
        return False


def wait_for_version(node: str, admin_port: int, version: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        served = served_versions(node, admin_port)
        if served == {"lds": version, "cds": version} and proxy_ready(node, admin_port):
            return
        if time.monotonic() > deadline:
            log = paths.logs_dir() / f"envoy-{node}.log"
            raise DpumeshError(
                f"dpu-proxy of {node} serves {json.dumps(served)}, not version {version}, after {timeout:.0f} s "
                f"(see {log})"
            )
        time.sleep(0.2)
