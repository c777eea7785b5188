"""`dpumesh lab apply`: make the lab match a state directory, and `down`: remove all of it.

apply compiles every node first (nothing is touched when the state is bad),
then removes what no longer belongs, builds the hardware, loads each DPU's
dataplane, writes certificates and proxy configs, has the supervisor run Envoy
and the workloads, and returns once every proxy serves the new version.
The lab state file records what exists, so apply and down are exact.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dpumesh.activate import current_version, run_command
from dpumesh.bundle import validation_bootstrap
from dpumesh.compiler import NodeBundle, compile_node
from dpumesh.compiler.settings import MeshSettings
from dpumesh.dataplane.commands import run
from dpumesh.dataplane.linux import render_linux
from dpumesh.dataplane.linux_apply import apply_linux
from dpumesh.dataplane.model import SteeringModel, parse_steering
from dpumesh.errors import DpumeshError
from dpumesh.lab import hardware, paths, proxy, supervisor
from dpumesh.lab.netns import listening_tcp_ports
from dpumesh.lab.plan import LabPlan, PodPlan, build_plan
from dpumesh.lab.preflight import check_ports_free, check_root, envoy_path, preflight
from dpumesh.rejection import rejected_fields
from dpumesh.state import load_state


def state_file() -> Path:
    return paths.lab_dir() / "state.json"


def read_lab_state() -> dict[str, Any]:
    try:
        return json.loads(state_file().read_text())
    except (OSError, json.JSONDecodeError):
        return {"nodes": {}, "pods": {}}


def _save_lab_state(data: dict[str, Any]) -> None:
    state_file().parent.mkdir(parents=True, exist_ok=True)
    tmp = state_file().with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(state_file())


@dataclass
class ApplyResult:
    changes: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)


def node_settings(mesh: MeshSettings, node: str) -> MeshSettings:
    """The mesh settings with the proxy's files where this lab node keeps them."""
    layout = mesh.proxy.under(str(paths.proxy_dir(node)), str(paths.cert_dir(node)))
    return dataclasses.replace(mesh, proxy=dataclasses.replace(layout, sds_socket=str(proxy.sds_socket(node))))


def compile_lab(state_dir: str | Path, mesh: MeshSettings) -> tuple[LabPlan, dict[str, NodeBundle], Any]:
    state = load_state(state_dir, mesh.service_cidr)
    nodes = sorted(n.name for n in state.nodes.values() if n.has_dpu)
    if not nodes:
        raise DpumeshError(f"{state_dir}: no Node carries a DPU (label dpumesh.io/dpu: 'true'); the lab needs one")
    bundles = {node: compile_node(state, node_settings(mesh, node), node) for node in nodes}
    steering = {node: parse_steering(json.loads(b.files["steering.json"])) for node, b in bundles.items()}
    return build_plan(state, steering, mesh.network_mode, mesh.cluster_domain), bundles, state


def _validate_bundles(
    bundles: dict[str, NodeBundle], mesh: MeshSettings, envoy: str, running: dict[str, str], state: Any
) -> None:
    """`envoy --mode validate` with the binary the nodes will run, on each config, before anything is pushed.

    A node already on the bundle's version (the version is the hash of the config) passed this check when it
    was activated, with the binary it runs; a new binary still validates every node.
    """
    for node, bundle in bundles.items():
        if envoy == running.get(node) and current_version(str(paths.proxy_dir(node))) == bundle.version:
            continue
        with tempfile.TemporaryDirectory(prefix="dpumesh-lab-validate-") as staged:
            for rel, data in bundle.files.items():
                (Path(staged) / rel).parent.mkdir(parents=True, exist_ok=True)
                (Path(staged) / rel).write_bytes(data)
            boot = validation_bootstrap(Path(staged), node_settings(mesh, node).proxy.config_dir)
            (Path(staged) / "validate.yaml").write_text(yaml.safe_dump(boot))
            problem = run_command([envoy, "--mode", "validate", "-c", f"{staged}/validate.yaml", "-l", "critical"])
        if problem:
            fields = rejected_fields(state, problem) or ["(no field of the cluster state holds the refused value)"]
            where = "".join(f"\n  {f}" for f in fields)
            raise DpumeshError(f"node {node}: Envoy refused the config, nothing was changed: {problem}{where}")


def lab_apply(
    state_dir: str | Path, mesh: MeshSettings, validate: bool = True, envoy: str | None = None
) -> ApplyResult:
    old = read_lab_state()
    # A lab already running in this network mode shows the kernel has what the probe looks for.
    preflight(mesh.network_mode, probe_kernel=old.get("network_mode") != mesh.network_mode or not old.get("nodes"))
    envoy = envoy or old.get("envoy") or envoy_path()
    plan, bundles, state = compile_lab(state_dir, mesh)
    if validate:
        running = {node: record.get("envoy", "") for node, record in old.get("nodes", {}).items()}
        _validate_bundles(bundles, mesh, envoy, running, state)
    result = ApplyResult()
    programs = supervisor.program_status()
    _check_proxy_ports(plan, mesh, programs)

    wanted_pods = {p.key: p for p in plan.pods}
    # Pods that move are rebuilt now; pods that go keep running until no proxy sends them requests.
    leaving = {key: record for key, record in old.get("pods", {}).items() if key not in wanted_pods}
    for key, record in sorted(old.get("pods", {}).items()):
        if key in wanted_pods and wanted_pods[key].hardware != {k: v for k, v in record.items() if k != "meshed"}:
            result.changes += hardware.remove_pod_hardware(record["netns"], record["node"], record["representor"])
    wanted_nodes = {n.name for n in plan.nodes}
    for node in sorted(set(old.get("nodes", {})) - wanted_nodes):
        if hardware.delete_netns(paths.dpu_netns(node)):
            result.changes.append(f"removed DPU namespace of {node}")

    result.changes += hardware.ensure_fabric()
    for node in plan.nodes:
        result.changes += hardware.ensure_dpu(node, plan.fabric_prefix)
    for pod in plan.pods:
        result.changes += hardware.ensure_pod(pod)
    for node in plan.nodes:
        dataplane = render_linux(_with_leaving_pods(node.name, node.steering, leaving))
        result.changes += [f"{node.name}: {c}" for c in apply_linux(dataplane, node.netns, prune=not leaving)]

    for node in plan.nodes:
        identities = sorted({(p.namespace, p.service_account) for p in state.pods if p.node == node.name and p.meshed})
        result.changes += proxy.write_certs(node.name, mesh.trust_domain, identities)

    # Workloads first (a node's probe request needs them), keeping the proxies of the nodes that stay.
    proxies = {proxy.program_name(n.name) for n in plan.nodes}
    wanted_programs = {name: spec for name, spec in supervisor.current_programs().items() if name in proxies}
    wanted_programs |= {_echo_name(p): _echo_program(p) for p in plan.pods}
    wanted_programs |= {proxy.sds_program_name(n.name): proxy.sds_program(n.name) for n in plan.nodes}
    leaving_names = {_echo_name_of(key) for key in leaving}
    leaving_programs = {n: s for n, s in supervisor.current_programs().items() if n in leaving_names}
    if {n: s for n, s in supervisor.current_programs().items() if n not in proxies} != {
        n: s for n, s in wanted_programs.items() if n not in proxies
    }:
        result.changes.append("updated supervised programs")
    supervisor.ensure_supervisor()
    supervisor.set_programs(wanted_programs | leaving_programs)
    supervisor.wait_for_programs({_echo_name(p) for p in plan.pods})
    _wait_for_workloads(plan.pods)

    failures = []
    records = {}
    for node in plan.nodes:
        rollout = _NodeRollout(node.name, bundles[node.name], mesh.proxy.admin_port, plan.pods)
        running = old.get("nodes", {}).get(node.name, {}).get("envoy", envoy)
        problem, runs = rollout.run(running, envoy, result.changes)
        if problem:
            failures.append(problem)
        version = current_version(str(paths.proxy_dir(node.name))) or ""
        records[node.name] = {"netns": node.netns, "fabric_ip": node.fabric_ip, "version": version, "envoy": runs}
        result.versions[node.name] = version
    if failures:  # a node back on its old config may still send them requests: they go next time
        wanted_pods_record = {**leaving, **{p.key: _pod_record(p) for p in plan.pods}}
    else:
        wanted_pods_record = {p.key: _pod_record(p) for p in plan.pods}
    if leaving and not failures:
        supervisor.set_programs({n: s for n, s in supervisor.current_programs().items() if n not in leaving_programs})
        for record in leaving.values():
            result.changes += hardware.remove_pod_hardware(record["netns"], record["node"], record["representor"])
        for node in plan.nodes:
            result.changes += [f"{node.name}: {c}" for c in apply_linux(render_linux(node.steering), node.netns)]
    _save_lab_state(
        {
            "state_dir": str(Path(state_dir).resolve()),
            "network_mode": plan.network_mode,
            "nodes": records,
            "pods": wanted_pods_record,
            "admin_port": mesh.proxy.admin_port,
            "envoy": old.get("envoy", envoy) if failures else envoy,  # what the next apply aims for
        }
    )
    if failures:
        raise DpumeshError("\n".join(failures))
    return result


def _with_leaving_pods(node: str, steering: SteeringModel, leaving: dict[str, Any]) -> SteeringModel:
    """`steering` plus the capture rules of the node's leaving pods, from the version it runs now.

    Proxies still send those pods requests until their new configs are in: without the rules, packets of a
    proxy's open connection to such a pod would go straight to it and be reset.
    """
    current = paths.proxy_dir(node) / "current" / "steering.json"
    if not leaving or not current.is_file():
        return steering
    kept = [p for p in parse_steering(json.loads(current.read_text())).pods if p.key in leaving]
    return dataclasses.replace(steering, pods=steering.pods + tuple(kept))


@dataclass
class _NodeRollout:
    node: str
    bundle: NodeBundle
    admin_port: int
    pods: list[PodPlan]

    def health(self, envoy: str):
        def probe_for(version: str) -> list[str] | None:
            return proxy.probe_command(self.node, self.pods, proxy.version_listeners(self.node, version))

        return proxy.envoy_health(self.node, self.admin_port, envoy, probe_for)

    def run(self, running: str, envoy: str, changes: list[str]) -> tuple[str | None, str]:
        """Activate the config on the Envoy the node runs, then move it to `envoy` if that differs.

        Returns why the node failed (its proxy is back on what it served before) and the binary it runs.
        """
        node, version = self.node, self.bundle.version
        spec_before = supervisor.current_programs().get(proxy.program_name(node))
        outcome = proxy.activate_config(node, self.bundle, self.health(running))
        if outcome["error"]:
            return f"node {node}: {outcome['error']}", running
        if outcome["changed"]:
            changes.append(f"{node}: activated config {version}")
        elif spec_before != proxy.envoy_program(node, self.admin_port, running):
            problem = self.health(running)(version)
            if problem:
                return f"node {node}: dpu-proxy not healthy: {problem}", running
            changes.append(f"{node}: restarted dpu-proxy")
        if envoy == running:
            return None, running
        # Side by side: the new binary starts next to the old one (hot restart) and takes over its sockets.
        problem = self.health(envoy)(version)
        if problem is None:
            changes.append(f"{node}: dpu-proxy moved to {envoy}")
            return None, envoy
        again = self.health(running)(version)
        back = f"back on {running}" + (f", which is not healthy either: {again}" if again else "")
        return f"node {node}: the new dpu-proxy {envoy} is not healthy ({problem}); {back}", running


def _check_proxy_ports(plan: LabPlan, mesh: MeshSettings, programs: dict[str, Any]) -> None:
    """Before starting a node's Envoy, its ports must be free in its DPU namespace."""
    layout = mesh.proxy
    existing = hardware.existing_netns()
    for node in plan.nodes:
        if node.netns not in existing or programs.get(proxy.program_name(node.name), {}).get("state") == "running":
            continue
        ports = [layout.outbound_port, layout.inbound_port, layout.admin_port]
        check_ports_free(node.netns, ports, f"dpu-proxy of {node.name}")


def _pod_record(pod: PodPlan) -> dict[str, Any]:
    return {**pod.hardware, "meshed": pod.meshed}


def _echo_name(pod: PodPlan) -> str:
    return _echo_name_of(pod.key)


def _echo_name_of(key: str) -> str:
    namespace, name = key.split("/", 1)
    return f"echo-{namespace}-{name}"


def _echo_program(pod: PodPlan) -> dict[str, Any]:
    config = {
        "pod": pod.name,
        "namespace": pod.namespace,
        "node": pod.node,
        "version": pod.version,
        "http_ports": list(pod.http_ports),
        "tcp_ports": list(pod.tcp_ports),
        "upstreams": list(pod.upstreams),
    }
    config_path = paths.pod_dir(pod.namespace, pod.name) / "echo.json"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(config, indent=2, sort_keys=True)
    if not config_path.is_file() or config_path.read_text() != text:
        config_path.write_text(text)
    inode = Path(f"/run/netns/{pod.netns}").stat().st_ino
    return {
        "argv": ["ip", "netns", "exec", pod.netns, sys.executable, "-m", "dpumesh.lab.echo", str(config_path)],
        "log": str(paths.logs_dir() / "pods" / pod.namespace / f"{pod.name}.log"),
        "env": {"DPUMESH_INCARNATION": f"{inode}/{text}", "PYTHONUNBUFFERED": "1"},
    }


def _wait_for_workloads(pods: list[PodPlan], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    for pod in pods:
        want = set(pod.http_ports) | set(pod.tcp_ports)
        while not want <= listening_tcp_ports(pod.netns):
            if time.monotonic() > deadline:
                raise DpumeshError(f"workload of {pod.key} is not listening on {sorted(want)} after {timeout:.0f} s")
            time.sleep(0.1)


def lab_down(every_lab_namespace: bool = False) -> list[str]:
    """Remove the processes, namespaces, files and nftables tables this lab created; safe to run again.

    Only the namespaces the runtime directory records go (others named dpumesh-* may belong to someone
    else); `every_lab_namespace` also removes every dpumesh-* one, for a lab whose runtime directory is lost.
    """
    check_root()
    removed = []
    if supervisor.supervisor_pid():
        removed.append("stopped the supervisor and its programs")
    supervisor.stop_supervisor()
    doomed = hardware.created_netns() | (hardware.leftover_lab_netns() if every_lab_namespace else set())
    for netns in sorted(doomed):
        if hardware.delete_netns(netns):
            removed.append(f"removed namespace {netns}")
    for directory in hardware.leftover_etc_dirs():
        if every_lab_namespace or directory.name in doomed:
            hardware.remove_etc(directory.name)
    if paths.lab_dir().exists():
        run(["rm", "-rf", "--one-file-system", str(paths.lab_dir())])
        removed.append(f"removed {paths.lab_dir()}")
    return removed
