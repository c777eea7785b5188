"""dpu-proxy in the lab: the node's compiled files, workload certificates and the Envoy program.

A node's config goes live through the SoC's activation path (`dpumesh.activate`):
staged, swapped with one rename, then health-checked through the supervisor's
Envoy; an unhealthy version is rolled back. Envoy runs with hot restart, so a
new bootstrap or Envoy binary replaces the process without closing its
listening sockets.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from dpumesh import sds_process
from dpumesh.activate import HealthCheck, activate, current_version, proxy_health
from dpumesh.activate import served_versions as parse_served_versions
from dpumesh.bridges import bridges, read_tree
from dpumesh.certs import LabCA, ensure_workload_certs
from dpumesh.compiler import NodeBundle
from dpumesh.configfile import load_config
from dpumesh.errors import DpumeshError
from dpumesh.lab import paths, supervisor
from dpumesh.lab.netns import http_get
from dpumesh.lab.plan import PodPlan

HEALTH_TIMEOUT = 30.0
DRAIN_SECONDS = 5


def ca_dir() -> Path:
    return paths.lab_dir() / "ca"


def write_certs(node: str, trust_domain: str, identities: list[tuple[str, str]]) -> list[str]:
    ca = LabCA.ensure(ca_dir(), trust_domain)
    return ensure_workload_certs(paths.cert_dir(node), ca, trust_domain, identities)


def activate_config(node: str, bundle: NodeBundle, health: HealthCheck) -> dict:
    """Stage the bundle next to the node's versions, swap `current` to it (through make-before-break
    bridges when clusters come or go) and check the proxy serves each step."""
    root = paths.proxy_dir(node)
    root.mkdir(parents=True, exist_ok=True)
    current = root / "current"
    # The version names the content: a node already on it needs no bridges (activate changes nothing).
    moving = current.is_dir() and current_version(str(root)) != bundle.version
    steps = bridges(read_tree(current), bundle.files, bundle.version) if moving else []
    staged = [(version, _stage(root, files)) for version, files in steps]
    return activate(str(root), _stage(root, bundle.files), bundle.version, health=health, bridges=staged)


def _stage(root: Path, files: dict[str, bytes]) -> str:
    staged = Path(tempfile.mkdtemp(prefix=".staged-", dir=root))
    for rel, data in files.items():
        (staged / rel).parent.mkdir(parents=True, exist_ok=True)
        (staged / rel).write_bytes(data)
    return str(staged)


def bootstrap_path(node: str) -> Path:
    return paths.proxy_dir(node) / "current" / "envoy" / "bootstrap.yaml"


def program_name(node: str) -> str:
    return f"envoy-{node}"


def sds_socket(node: str) -> Path:
    return paths.node_dir(node) / "sds.sock"


def sds_program_name(node: str) -> str:
    return f"sds-{node}"


def sds_program(node: str) -> dict:
    """The supervisor spec of a node's SDS service, which hands its proxy each source pod's certificate."""
    argv = sds_process.command(sds_socket(node), paths.cert_dir(node))
    return {"argv": argv, "log": str(paths.logs_dir() / f"sds-{node}.log")}


def base_id(node: str) -> int:
    """Envoy's hot-restart id (shared memory and socket names): one per lab node, stable across applies."""
    return 40000 + int(hashlib.sha256(paths.dpu_netns(node).encode()).hexdigest()[:6], 16) % 20000


def envoy_program(node: str, admin_port: int, envoy: str) -> dict:
    """The supervisor spec of a node's Envoy.

    A new bootstrap or binary hot-restarts it; a re-created DPU namespace restarts it.
    """
    bootstrap = bootstrap_path(node)
    netns = paths.dpu_netns(node)
    namespace = f"{netns}/{_netns_inode(netns)}"
    argv = ["ip", "netns", "exec", netns, envoy, "-c", str(bootstrap)]
    argv += ["--base-id", str(base_id(node)), "--restart-epoch", "{epoch}"]
    # Drained listeners and filter chains (config updates, hot restart) finish their requests for this long.
    argv += ["--log-level", "warning", "--drain-time-s", str(DRAIN_SECONDS)]
    argv += ["--parent-shutdown-time-s", str(DRAIN_SECONDS + 3)]
    incarnation = hashlib.sha256(bootstrap.read_bytes()).hexdigest()[:16] + f"/{namespace}"
    return {
        "argv": argv,
        "log": str(paths.logs_dir() / f"envoy-{node}.log"),
        "env": {"DPUMESH_INCARNATION": incarnation, "DPUMESH_ADMIN_PORT": str(admin_port)},
        "hot_restart": namespace,
    }


def _netns_inode(netns: str) -> int:
    try:
        return Path(f"/run/netns/{netns}").stat().st_ino
    except OSError:
        return 0


def run_envoy(node: str, admin_port: int, envoy: str) -> None:
    """Have the supervisor run this node's Envoy on the current bootstrap and binary; wait until it does."""
    programs = supervisor.current_programs()
    programs[program_name(node)] = envoy_program(node, admin_port, envoy)
    supervisor.set_programs(programs)
    supervisor.wait_for_programs({program_name(node)}, timeout=HEALTH_TIMEOUT)


def envoy_health(node: str, admin_port: int, envoy: str, probe_for: Callable[[str], list[str] | None]) -> HealthCheck:
    """The lab's health check of a node: Envoy on the current files, /ready, both versions, the probe.

    `probe_for(version)` gives the probe that fits that version: a bridge or a rolled-back version
    may not know the pods of the new one.
    """

    def check(version: str) -> str | None:
        probe = probe_for(version)
        try:
            run_envoy(node, admin_port, envoy)
            _wait_for_epoch(node, admin_port)
        except DpumeshError as exc:
            return f"{exc} (see {paths.logs_dir() / f'envoy-{node}.log'})"
        admin = f"http://127.0.0.1:{admin_port}"
        return proxy_health(version, admin, paths.dpu_netns(node), probe, HEALTH_TIMEOUT)

    return check


def _wait_for_epoch(node: str, admin_port: int) -> None:
    """Until the admin port answers from the generation the supervisor started last (not a draining one)."""
    deadline = time.monotonic() + HEALTH_TIMEOUT
    started = supervisor.program_status().get(program_name(node), {})
    while True:
        status = supervisor.program_status().get(program_name(node), {})
        if status.get("restarts") != started.get("restarts"):
            raise DpumeshError(f"dpu-proxy of {node} exited (code {status.get('last_exit')}) while starting")
        epoch = status.get("epoch")
        try:
            info = json.loads(admin_get(node, admin_port, "/server_info"))
            if info["command_line_options"]["restart_epoch"] == epoch:
                return
        except (DpumeshError, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            raise DpumeshError(f"dpu-proxy of {node}: epoch {epoch} does not answer on the admin port")
        time.sleep(0.1)


def probe_command(node: str, pods: list[PodPlan], listeners: list[dict]) -> list[str] | None:
    """A request through this node's proxy only: a meshed local pod calls another one that takes plaintext.

    The call goes client VF -> outbound listener -> inbound listener -> server VF, all on this node, so one
    node's probe does not depend on another node's proxy. Both pods must be known to `listeners` (the
    client as a source of the outbound listener, the server by its inbound chain). None when the node has
    no such pair of pods.
    """
    chains = {fc["name"] for listener in listeners for fc in listener.get("filter_chains", [])}
    sources = {ip for listener in listeners for ips in _source_classes(listener).values() for ip in ips}
    local = [p for p in pods if p.node == node and p.meshed]
    for server in sorted((p for p in local if p.http_ports and not p.upstreams), key=lambda p: p.key):
        port = server.http_ports[0]
        if f"inbound|{server.ip}|{port}|plaintext" not in chains:
            continue
        client = next((p for p in sorted(local, key=lambda p: p.key) if p is not server and p.ip in sources), None)
        if client is not None:
            url = f"http://{server.ip}:{port}/dpumesh-probe"
            return ["ip", "netns", "exec", client.netns, "curl", "-sf", "-m", "2", "-o", "/dev/null", url]
    return None


def _source_classes(listener: dict) -> dict[str, list[str]]:
    """Source class → pod IPs, as the compiler records them on the outbound listener."""
    metadata = ((listener.get("metadata") or {}).get("filter_metadata") or {}).get("dpumesh") or {}
    return metadata.get("source_classes") or {}


def version_listeners(node: str, version: str) -> list[dict]:
    """The listeners of one activated version of the node (none when it is not there)."""
    lds = paths.proxy_dir(node) / "versions" / version / "envoy" / "lds.yaml"
    return load_config(lds.read_text())["resources"] if lds.is_file() else []


def admin_get(node: str, admin_port: int, path: str) -> str:
    return http_get(paths.dpu_netns(node), admin_port, path)


def served_versions(node: str, admin_port: int) -> dict[str, str]:
    """The LDS and CDS versions Envoy has accepted ("" when unknown or unreachable)."""
    try:
        return parse_served_versions(admin_get(node, admin_port, "/stats?filter=version_text"))
    except DpumeshError:
        return {"lds": "", "cds": ""}


def proxy_ready(node: str, admin_port: int) -> bool:
    try:
        return admin_get(node, admin_port, "/ready").strip() == "LIVE"
    except DpumeshError:
        return False
