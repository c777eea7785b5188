"""dpu-proxy in the lab: the node's compiled files, workload certificates and the Envoy program."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from dpumesh.certs import LabCA, ensure_workload_certs, write_atomic
from dpumesh.compiler import NodeBundle
from dpumesh.dataplane.commands import run
from dpumesh.errors import DpumeshError
from dpumesh.lab import paths
from dpumesh.lab.preflight import envoy_path

# Envoy reads secrets, then clusters, then listeners: writing in this order never points at a missing one.
_WRITE_ORDER = ("envoy/sds/", "envoy/cds.yaml", "envoy/lds.yaml", "envoy/bootstrap.yaml")


def ca_dir() -> Path:
    return paths.lab_dir() / "ca"


def write_certs(node: str, trust_domain: str, identities: list[tuple[str, str]]) -> list[str]:
    ca = LabCA.ensure(ca_dir(), trust_domain)
    return ensure_workload_certs(paths.cert_dir(node), ca, trust_domain, identities)


def write_proxy_files(node: str, bundle: NodeBundle) -> list[str]:
    """Move each envoy/* file of the bundle into the node's proxy dir (atomic renames, watched by Envoy)."""
    target = paths.proxy_dir(node)
    changed = []
    envoy_files = {rel: data for rel, data in bundle.files.items() if rel.startswith("envoy/")}
    ordered = sorted(envoy_files, key=lambda rel: next(i for i, p in enumerate(_WRITE_ORDER) if rel.startswith(p)))
    for rel in ordered:
        if write_atomic(target / rel.removeprefix("envoy/"), envoy_files[rel]):
            changed.append(rel)
    other = {rel: data for rel, data in bundle.files.items() if not rel.startswith("envoy/")}
    for rel, data in other.items():
        write_atomic(paths.node_dir(node) / "bundle" / rel, data)
    wanted = {target / rel.removeprefix("envoy/") for rel in envoy_files}
    for stale in sorted(p for p in target.rglob("*.yaml") if p not in wanted):
        stale.unlink()
        changed.append(f"removed {stale.name}")
    return changed


def envoy_program(node: str, admin_port: int) -> dict:
    """The supervisor spec of a node's Envoy; a new bootstrap or DPU namespace changes it (restart)."""
    bootstrap = paths.proxy_dir(node) / "bootstrap.yaml"
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
