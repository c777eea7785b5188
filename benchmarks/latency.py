"""Latency and proxy CPU of three paths between lab pods, on the same node and across nodes.

- direct:  pods outside the mesh; the DPU dataplane forwards pod to pod, no proxy;
- shared:  meshed pods; the client's node's dpu-proxy (outbound) and the server's node's (inbound), mTLS between;
- sidecar: one Envoy inside each pod (config from `compile_sidecar`), Istio-like capture in the pod's namespace.

The lab comes up from benchmarks/lab_states/latency, where namespace bench-sidecar is outside the mesh
(the DPU steers none of its traffic); its sidecars are compiled from the same state with that namespace
meshed. The server pods run the lab's echo workload. Every case first proves
its path (what the server sees as source and client certificate), then sends a bounded open-loop load
(benchmarks.load) from the same client program in --rounds parts, the three paths of a placement taking
turns, and reads the proxies' request counters and CPU time before and after each part.

    python -m benchmarks.latency [--count 2000] [--rate 200] [--rounds 4]

writes benchmarks/results/latency.json and docs/benchmarks/latency.svg, and leaves the lab down.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import (
    PLOTS_DIR,
    REPO,
    RESULTS_DIR,
    BenchError,
    dpumesh,
    envoy_version,
    lab_lock,
    machine_facts,
    pyplot,
    run_main,
    save_figure,
    stop_processes,
    write_json,
)
from benchmarks.load import PERCENTILES, percentile
from dpumesh import sds_process
from dpumesh.bundle import validate_with_envoy, write_tree
from dpumesh.certs import LabCA, ensure_workload_certs
from dpumesh.compiler import MeshSettings, compile_sidecar
from dpumesh.dataplane.commands import run
from dpumesh.dataplane.model import gateway_ip
from dpumesh.errors import DpumeshError
from dpumesh.lab import paths, proxy, supervisor
from dpumesh.lab.apply import compile_lab
from dpumesh.lab.plan import PodPlan
from dpumesh.lab.preflight import envoy_path
from dpumesh.state import build_state
from dpumesh.state.load import load_manifest_dir
from dpumesh.state.model import ClusterState

STATE_DIR = REPO / "benchmarks" / "lab_states" / "latency"
RESULTS = RESULTS_DIR / "latency.json"
PLOT = PLOTS_DIR / "latency.svg"

PATHS = ("direct", "shared", "sidecar")
NAMESPACES = {"direct": "bench-direct", "shared": "bench-shared", "sidecar": "bench-sidecar"}
PLACEMENTS = {"same-node": "near", "cross-node": "far"}
CLIENT = "client-0"
SERVER_PORT = 8080
SIDECAR_PODS = (CLIENT, "near-0", "far-0")
CLIENT_SA, SERVER_SA = "client", "server"


# -- the lab --------------------------------------------------------------------------------------------------
def foreign_supervisors() -> list[int]:
    """Lab supervisors of other runtime directories (DPUMESH_LAB_DIR): they would fight ours over the namespaces."""
    ours = supervisor.supervisor_pid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == ours:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"dpumesh.lab.supervisor" in cmdline:
            found.append(int(entry.name))
    return found


def check_no_foreign_lab(grace: float = 30.0) -> None:
    """Give a lab that is being brought down `grace` seconds to go; refuse to start while another runs."""
    deadline = time.monotonic() + grace
    while found := foreign_supervisors():
        if time.monotonic() > deadline:
            pids = ", ".join(map(str, found))
            raise BenchError(f"a lab supervisor of another lab directory runs (pid {pids}); bring that lab down first")
        time.sleep(1)


def meshed_variant(state_dir: Path, namespace: str, service_cidr: str) -> ClusterState:
    """The state with `namespace` in the mesh: what its pods' own sidecars would be compiled from."""
    objects = load_manifest_dir(state_dir)
    for obj in objects:
        if obj.get("kind") == "Namespace" and obj["metadata"]["name"] == namespace:
            obj["metadata"].setdefault("labels", {})["istio-injection"] = "enabled"
    return build_state(objects, service_cidr)


# -- Envoy processes ------------------------------------------------------------------------------------------
@dataclass
class Proxy:
    """One Envoy: where its admin answers and whose CPU it burns."""

    label: str
    netns: str
    pid: int
    admin_port: int

    def stats(self) -> dict[str, int]:
        text = run(["curl", "-sf", "--max-time", "5", f"http://127.0.0.1:{self.admin_port}/stats"], self.netns)
        counters = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            if value.strip().isdigit():
                counters[name] = int(value)
        return counters

    def requests(self) -> dict[str, int]:
        """HTTP requests its outbound and inbound listeners have received."""
        counters = self.stats()
        return {
            side: sum(
                v for k, v in counters.items() if k.startswith(f"http.{side}") and k.endswith(".downstream_rq_total")
            )
            for side in ("outbound", "inbound")
        }

    def cpu_seconds(self) -> float:
        """utime + stime of the whole process (all its threads)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _envoy_pid(pid: int, what: str) -> int:
    comm = Path(f"/proc/{pid}/comm").read_text().strip() if Path(f"/proc/{pid}").exists() else ""
    if comm != "envoy":
        raise BenchError(f"{what}: pid {pid} is {comm or 'gone'}, not Envoy")
    return pid


def lab_proxies(state: ClusterState, admin_port: int) -> dict[str, Proxy]:
    status = supervisor.program_status()
    found = {}
    for node in sorted(n.name for n in state.nodes.values() if n.has_dpu):
        pid = (status.get(f"envoy-{node}") or {}).get("pid")
        if not pid:
            raise BenchError(f"the dpu-proxy of {node} is not running")
        found[node] = Proxy(
            f"dpu-proxy {node}", paths.dpu_netns(node), _envoy_pid(pid, f"dpu-proxy {node}"), admin_port
        )
    return found


def capture_rules(mesh: MeshSettings, inbound_ports: list[int]) -> str:
    """Istio-like capture inside one pod's namespace.

    Outbound: every TCP connection the pod opens goes to the sidecar's outbound port, except
    the sidecar's own upstream connections, which carry the compiler's marks (capture_mark on
    outbound clusters, bypass_mark on inbound ones), and loopback. Inbound: connections that
    arrive on the VF for the pod's service ports go to the inbound port. REDIRECT keeps the
    original destination for SO_ORIGINAL_DST, which the listeners' original_dst filter reads.
    """
    layout = mesh.proxy
    ports = ", ".join(str(p) for p in inbound_ports)
    inbound = (
        [f'    iifname "{paths.POD_DEVICE}" tcp dport {{ {ports} }} redirect to :{layout.inbound_port}']
        if ports
        else []
    )
    return "\n".join(
        [
            "table ip dpumesh_bench_capture {",
            "  chain output {",
            "    type nat hook output priority -100; policy accept;",
            f"    meta mark {{ {layout.capture_mark}, {layout.bypass_mark} }} return",
            '    oifname "lo" return',
            f"    meta l4proto tcp redirect to :{layout.outbound_port}",
            "  }",
            "  chain prerouting {",
            "    type nat hook prerouting priority -100; policy accept;",
            *inbound,
            "  }",
            "}",
            "",
        ]
    )


class Sidecars:
    """One Envoy per bench-sidecar pod, in the pod's namespace, with the pod's compiled sidecar config, and its
    own SDS service (`dpumesh sds` serving that pod's certificate only, as Istio's per-pod agent does)."""

    def __init__(self, state_dir: Path, lab_state: ClusterState, mesh: MeshSettings, workdir: Path):
        self.state_dir, self.lab_state, self.mesh, self.workdir = state_dir, lab_state, mesh, workdir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.agents: list[subprocess.Popen[bytes]] = []
        self.proxies: dict[str, Proxy] = {}

    def start(self, namespace: str, pods: tuple[str, ...]) -> None:
        meshed = meshed_variant(self.state_dir, namespace, self.mesh.service_cidr)
        lab_ips = {p.meta.key: p.ip for p in self.lab_state.pods}
        ca = LabCA.ensure(proxy.ca_dir(), self.mesh.trust_domain)
        for name in pods:
            key = f"{namespace}/{name}"
            pod = next(p for p in meshed.pods if p.meta.key == key)
            if lab_ips.get(key) != pod.ip:
                raise BenchError(f"{key}: IP {pod.ip} in the meshed state, {lab_ips.get(key)} in the lab")
            root = self.workdir / namespace / name
            layout = dataclasses.replace(
                self.mesh.proxy,
                watch_dir="",
                config_dir=str(root / "envoy"),
                cert_dir=str(root / "certs"),
                sds_socket=str(root / "sds.sock"),  # a path: the Envoy in the pod's namespace reaches it
            )
            mesh = dataclasses.replace(self.mesh, proxy=layout)
            bundle = compile_sidecar(meshed, mesh, key)
            write_tree(root, bundle.files, lambda staged, m=mesh: validate_with_envoy(staged, m.proxy.config_dir))
            ensure_workload_certs(root / "certs", ca, self.mesh.trust_domain, [(namespace, pod.service_account)])
            self._start_agent(root / "sds.sock", root / "certs")
            netns = paths.pod_netns(namespace, name)
            ports = [] if name == CLIENT else [SERVER_PORT]
            run(["nft", "-f", "-"], netns, stdin=capture_rules(self.mesh, ports))
            argv = ["ip", "netns", "exec", netns, envoy_path(), "-c", str(root / "envoy" / "bootstrap.yaml")]
            argv += ["--disable-hot-restart", "--log-level", "warning", "--drain-time-s", "1"]
            with (self.workdir / f"envoy-{namespace}-{name}.log").open("wb") as log:
                self.processes[key] = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            self.proxies[key] = Proxy(f"sidecar {key}", netns, self.processes[key].pid, self.mesh.proxy.admin_port)
        for key, sidecar in self.proxies.items():
            self._wait_ready(key, sidecar)

    def _start_agent(self, socket_path: Path, cert_dir: Path) -> None:
        with (socket_path.parent / "sds.log").open("wb") as log:
            agent = subprocess.Popen(sds_process.command(socket_path, cert_dir), stdout=log, stderr=subprocess.STDOUT)
        self.agents.append(agent)
        sds_process.wait_until_serving(socket_path, agent, timeout=30)

    def _wait_ready(self, key: str, sidecar: Proxy, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.processes[key].poll() is not None:
                raise BenchError(f"the sidecar of {key} exited; see {self.workdir}/envoy-*.log")
            try:
                live = run(
                    ["curl", "-sf", "--max-time", "2", f"http://127.0.0.1:{sidecar.admin_port}/ready"], sidecar.netns
                )
                listeners = run(
                    ["curl", "-sf", "--max-time", "2", f"http://127.0.0.1:{sidecar.admin_port}/listeners"],
                    sidecar.netns,
                )
            except DpumeshError:  # not answering yet
                live, listeners = "", ""
            if live.strip() == "LIVE" and {"outbound", "inbound"} <= {ln.split(":")[0] for ln in listeners.split()}:
                _envoy_pid(sidecar.pid, f"sidecar of {key}")
                return
            if time.monotonic() > deadline:
                raise BenchError(f"the sidecar of {key} is not ready after {timeout:.0f} s")
            time.sleep(0.2)

    def stop(self) -> None:
        stop_processes(list(self.processes.values()), group=True)
        stop_processes(self.agents)
        for proxy_ in self.proxies.values():
            run(["nft", "delete", "table", "ip", "dpumesh_bench_capture"], proxy_.netns, check=False)


# -- one case -------------------------------------------------------------------------------------------------
@dataclass
class Bench:
    """Everything the cases share."""

    args: argparse.Namespace
    mesh: MeshSettings
    state: ClusterState
    pods: dict[str, PodPlan]
    proxies: dict[str, Proxy]  # every Envoy of the run, by "node-N" or "ns/pod"

    def pod(self, namespace: str, name: str) -> PodPlan:
        return self.pods[f"{namespace}/{name}"]


def expected_requests(path: str, client: PodPlan, server: PodPlan) -> dict[tuple[str, str], int]:
    """(proxy, listener side) -> how many of the measured requests it must see; every other counter stays."""
    if path == "direct":
        return {}
    if path == "shared":
        return {(client.node, "outbound"): 1, (server.node, "inbound"): 1}
    return {(client.key, "outbound"): 1, (server.key, "inbound"): 1}


def check_answer(bench: Bench, path: str, client: PodPlan, server: PodPlan, answer: dict[str, Any]) -> dict[str, str]:
    """The echo's view of one request: the right server, reached from the right peer, with the right identity."""
    source = str(answer.get("source", "")).rsplit(":", 1)[0]
    xfcc = answer.get("headers", {}).get("x-forwarded-client-cert", "")
    if (answer.get("namespace"), answer.get("pod")) != (server.namespace, server.name):
        raise BenchError(
            f"{path}: {client.key} reached {answer.get('namespace')}/{answer.get('pod')}, not {server.key}"
        )
    # The shared proxy reaches pods from its DPU's gateway address; a sidecar from inside the pod.
    peer = {"direct": client.ip, "shared": gateway_ip(bench.state.nodes[server.node].pod_cidr), "sidecar": server.ip}
    peer = peer[path]
    if source != peer:
        raise BenchError(f"{path}: {server.key} saw the request come from {source}, expected {peer}")
    if path == "direct":
        if xfcc:
            raise BenchError(f"direct: {server.key} got a client certificate header ({xfcc}); a proxy is on the path")
    else:
        client_id = bench.mesh.spiffe(client.namespace, CLIENT_SA)
        server_id = bench.mesh.spiffe(server.namespace, SERVER_SA)
        if f"URI={client_id}" not in xfcc or f"By={server_id}" not in xfcc:
            raise BenchError(f"{path}: x-forwarded-client-cert {xfcc!r} does not show mTLS {client_id} -> {server_id}")
    return {"source": source, "x-forwarded-client-cert": xfcc}


def request_counts(bench: Bench) -> dict[tuple[str, str], int]:
    return {(name, side): n for name, p in bench.proxies.items() for side, n in p.requests().items()}


def run_load_from(bench: Bench, client: PodPlan, url: str, count: int, samples: bool = False) -> dict[str, Any]:
    args = bench.args
    argv = ["lab", "exec", client.key, "--", sys.executable, "-m", "benchmarks.load", url, "--count", str(count)]
    argv += ["--rate", str(args.rate), "--connections", str(args.connections), "--timeout", str(args.timeout)]
    summary = json.loads(dpumesh(*argv, *(["--samples"] if samples else []), timeout=count / args.rate + 120))
    if summary["errors"]:
        raise BenchError(f"{client.key} -> {url}: {summary['errors']} failed requests {summary['error_kinds']}")
    return summary


@dataclass
class Case:
    """One path in one placement: checked once, then measured in rounds."""

    path: str
    placement: str
    client: PodPlan
    server: PodPlan
    url: str
    seen: dict[str, str]
    expected: dict[tuple[str, str], int]
    samples_ms: list[float] = dataclasses.field(default_factory=list)
    cpu_s: float = 0.0
    max_lag_ms: float = 0.0
    rates: list[float] = dataclasses.field(default_factory=list)

    @property
    def involved(self) -> list[str]:
        return sorted({name for name, _ in self.expected})


def prepare_case(bench: Bench, path: str, placement: str) -> Case:
    """Prove the path with one request (server, peer, certificate) and warm it up."""
    namespace = NAMESPACES[path]
    client, server = bench.pod(namespace, CLIENT), bench.pod(namespace, f"{PLACEMENTS[placement]}-0")
    # Outside the mesh there is no kube-proxy: pods reach each other by pod IP. In the mesh, by Service name.
    host = server.ip if path == "direct" else PLACEMENTS[placement]
    url = f"http://{host}:{SERVER_PORT}/"
    print(f"{placement} {path}: {client.key} -> {url} ({server.key})", flush=True)
    answer = json.loads(dpumesh("lab", "exec", client.key, "--", "curl", "-sf", "--max-time", "5", url))
    seen = check_answer(bench, path, client, server, answer)
    if bench.args.warmup:
        run_load_from(bench, client, url, bench.args.warmup)
    return Case(path, placement, client, server, url, seen, expected_requests(path, client, server))


def measure_round(bench: Bench, case: Case, count: int) -> None:
    """`count` requests on the case's path; every proxy's counters must show exactly the expected ones."""
    counts_before = request_counts(bench)
    cpu_before = {name: bench.proxies[name].cpu_seconds() for name in case.involved}
    summary = run_load_from(bench, case.client, case.url, count, samples=True)
    case.cpu_s += sum(bench.proxies[name].cpu_seconds() - cpu_before[name] for name in case.involved)
    counts_after = request_counts(bench)
    for key in counts_before:
        got, want = counts_after[key] - counts_before[key], case.expected.get(key, 0) * count
        if got != want:
            raise BenchError(
                f"{case.placement} {case.path}: {key[1]} listener of {key[0]} counted {got} requests, not {want}"
            )
    case.samples_ms += summary["samples_ms"]
    case.max_lag_ms = max(case.max_lag_ms, summary["max_schedule_lag_ms"])
    case.rates.append(summary["achieved_rate"])


def run_placement(bench: Bench, placement: str) -> list[dict[str, Any]]:
    """The three paths measured in interleaved rounds (the order rotating each round), so that a change in
    what else runs on the machine falls on every path alike instead of on whichever case was running."""
    cases = [prepare_case(bench, path, placement) for path in PATHS]
    rounds = bench.args.rounds
    for index in range(rounds):
        count = bench.args.count // rounds + (1 if index < bench.args.count % rounds else 0)
        for case in cases[index % len(cases) :] + cases[: index % len(cases)]:
            measure_round(bench, case, count)
    return [case_result(bench, case) for case in cases]


def case_result(bench: Bench, case: Case) -> dict[str, Any]:
    ordered = sorted(case.samples_ms)
    latency = {f"p{p:g}": percentile(ordered, p) for p in PERCENTILES}
    latency["mean"] = round(sum(ordered) / len(ordered), 3)
    latency["max"] = ordered[-1]
    return {
        "path": case.path,
        "placement": case.placement,
        "client": case.client.key,
        "server": case.server.key,
        "url": case.url,
        "proxies": [bench.proxies[name].label for name in case.involved],
        "verified": {
            "server_saw": case.seen,
            "requests_counted_by": {
                f"{n} {side}": c * bench.args.count for (n, side), c in sorted(case.expected.items())
            },
        },
        "latency_ms": latency,
        "achieved_rate": round(min(case.rates), 1),
        "max_schedule_lag_ms": case.max_lag_ms,
        "completed": len(ordered),
        "proxy_cpu_s": round(case.cpu_s, 3),
        "proxy_cpu_s_per_1000_requests": round(case.cpu_s / len(ordered) * 1000, 4),
    }


# -- report ---------------------------------------------------------------------------------------------------
PERCENTILE_KEYS = ("p50", "p90", "p99")


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b > 0 else None


def comparisons(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Per placement: shared vs sidecar, and the latency each adds over the direct path."""
    out: dict[str, Any] = {}
    for placement in PLACEMENTS:
        by_path = {c["path"]: c for c in cases if c["placement"] == placement}
        if set(by_path) != set(PATHS):
            continue
        direct, shared, sidecar = (by_path[p] for p in PATHS)
        added = {
            path: {k: round(by_path[path]["latency_ms"][k] - direct["latency_ms"][k], 3) for k in PERCENTILE_KEYS}
            for path in ("shared", "sidecar")
        }
        out[placement] = {
            "shared_over_sidecar_latency": {
                k: _ratio(shared["latency_ms"][k], sidecar["latency_ms"][k]) for k in PERCENTILE_KEYS
            },
            "added_over_direct_ms": added,
            "shared_over_sidecar_added_latency": {
                k: _ratio(added["shared"][k], added["sidecar"][k]) for k in PERCENTILE_KEYS
            },
            "shared_over_sidecar_proxy_cpu": _ratio(
                shared["proxy_cpu_s_per_1000_requests"], sidecar["proxy_cpu_s_per_1000_requests"]
            ),
            "target_shared_adds_no_more_than_sidecar": {
                k: added["shared"][k] <= added["sidecar"][k] for k in PERCENTILE_KEYS
            },
        }
    return out


def report(args: argparse.Namespace, cases: list[dict[str, Any]], command: str, machine: dict) -> dict[str, Any]:
    return {
        "benchmark": "latency",
        "command": command,
        "machine": machine,
        "parameters": {
            "count": args.count,
            "rate": args.rate,
            "connections": args.connections,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "timeout_s": args.timeout,
        },
        "environment": {
            "cpus": os.cpu_count(),
            "cpu_time_resolution_s": 1 / os.sysconf("SC_CLK_TCK"),
            "envoy": envoy_version(),
            "load_generator": "benchmarks.load: Python asyncio, open loop, HTTP/1.1 keep-alive; the same for all paths",
            "note": "one run on a shared machine: absolute figures are noisy, compare the ratios",
        },
        "cases": cases,
        "comparisons": comparisons(cases),
    }


def plot(result: dict[str, Any], target: Path) -> Path:
    plt = pyplot()
    cases = {(c["placement"], c["path"]): c for c in result["cases"]}
    colours = {"direct": "#9e9e9e", "shared": "#1f77b4", "sidecar": "#ff7f0e"}
    labels = {"direct": "(a) direct", "shared": "(b) shared dpu-proxy", "sidecar": "(c) sidecar pair"}
    figure, axes = plt.subplots(1, 3, figsize=(13, 4.2), gridspec_kw={"width_ratios": [3, 3, 2]})
    width = 0.27
    for axis, placement in zip(axes[:2], PLACEMENTS, strict=True):
        for i, path in enumerate(PATHS):
            case = cases.get((placement, path))
            if case is None:
                continue
            values = [case["latency_ms"][k] for k in PERCENTILE_KEYS]
            bars = axis.bar(
                [x + (i - 1) * width for x in range(3)], values, width, color=colours[path], label=labels[path]
            )
            axis.bar_label(bars, fmt="%.1f", fontsize=7)
        axis.set_xticks(range(3), PERCENTILE_KEYS)
        axis.set_ylabel("latency (ms)")
        axis.set_title(f"{placement}")
    axes[0].legend(fontsize=8, loc="upper left")
    axis = axes[2]
    for i, path in enumerate(PATHS):
        values = [cases[(p, path)]["proxy_cpu_s_per_1000_requests"] if (p, path) in cases else 0 for p in PLACEMENTS]
        bars = axis.bar([x + (i - 1) * width for x in range(2)], values, width, color=colours[path])
        axis.bar_label(bars, fmt="%.2f", fontsize=7)
    axis.set_xticks(range(2), list(PLACEMENTS))
    axis.set_ylabel("proxy CPU s / 1000 requests")
    axis.set_title("proxy CPU")
    params = result["parameters"]
    figure.suptitle(
        f"dpumesh lab: {params['count']} requests at {params['rate']:g}/s per case, one run on a shared "
        f"{result['environment']['cpus']}-core machine (noisy: compare ratios)",
        fontsize=10,
    )
    return save_figure(figure, target)


# -- entry point ----------------------------------------------------------------------------------------------
def bench_state(state_dir: Path, mesh: MeshSettings) -> tuple[ClusterState, dict[str, PodPlan]]:
    """The lab state and its pods as the lab will build them, checked before the lab is touched."""
    plan, _, state = compile_lab(state_dir, mesh)
    pods = {p.key: p for p in plan.pods}
    wanted = {
        f"{ns}/{name}" for ns in NAMESPACES.values() for name in (CLIENT, *(f"{s}-0" for s in PLACEMENTS.values()))
    }
    if wanted - set(pods):
        raise BenchError(f"{state_dir}: the benchmark needs pods {', '.join(sorted(wanted - set(pods)))}")
    return state, pods


def measure(
    args: argparse.Namespace, mesh: MeshSettings, state: ClusterState, pods: dict[str, PodPlan]
) -> list[dict[str, Any]]:
    """Bring the lab up, run every case, and leave the lab down whatever happens."""
    check_no_foreign_lab()
    dpumesh("lab", "down")
    workdir = Path(tempfile.mkdtemp(prefix="dpumesh-bench-latency-"))
    sidecars: Sidecars | None = None
    try:
        print(f"lab apply {args.state}", flush=True)
        dpumesh("lab", "apply", str(args.state), timeout=180)
        sidecars = Sidecars(args.state, state, mesh, workdir)
        sidecars.start(NAMESPACES["sidecar"], SIDECAR_PODS)
        proxies = {**lab_proxies(state, mesh.proxy.admin_port), **sidecars.proxies}
        bench = Bench(args, mesh, state, pods, proxies)
        return [result for placement in PLACEMENTS for result in run_placement(bench, placement)]
    finally:
        if sidecars is not None:
            sidecars.stop()
        dpumesh("lab", "down", timeout=180)
        shutil.rmtree(workdir, ignore_errors=True)


def run_benchmark(args: argparse.Namespace, argv: list[str] | None) -> int:
    machine = machine_facts()
    mesh = MeshSettings()
    state, pods = bench_state(args.state, mesh)
    with lab_lock(args.lock_wait):
        started = time.monotonic()
        cases = measure(args, mesh, state, pods)
    command = "python -m benchmarks.latency " + " ".join(argv if argv is not None else sys.argv[1:])
    result = report(args, cases, command.strip(), machine)
    write_json(args.json, result)
    plot(result, args.plot)
    for placement, comparison in result["comparisons"].items():
        print(
            f"{placement}: shared/sidecar latency {comparison['shared_over_sidecar_latency']}, "
            f"proxy CPU {comparison['shared_over_sidecar_proxy_cpu']}"
        )
    print(f"wrote {args.json} and {args.plot} ({time.monotonic() - started:.0f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="measured requests per case (default 2000)")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second (default 200)")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections per case (default 8)")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured requests before each case (default 200)")
    parser.add_argument(
        "--rounds", type=int, default=4, help="interleaved rounds the requests of each case are split into (default 4)"
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per request (default 5)")
    parser.add_argument("--lock-wait", type=float, default=900, help="seconds to wait for the lab lock (default 900)")
    parser.add_argument("--state", type=Path, default=STATE_DIR, help="lab state directory")
    parser.add_argument(
        "--json", type=Path, default=RESULTS, help=f"results file (default {RESULTS.relative_to(REPO)})"
    )
    parser.add_argument("--plot", type=Path, default=PLOT, help=f"plot file (default {PLOT.relative_to(REPO)})")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.count < args.rounds or args.rate <= 0 or args.connections < 1:
        parser.error("--rounds and --connections must be at least 1, --count at least --rounds, --rate positive")
    if args.warmup < 0 or args.timeout <= 0:
        parser.error("--warmup must be >= 0 and --timeout positive")
    if os.geteuid() != 0:
        parser.error("needs root: the lab builds network namespaces and nftables rules")
    return run_main("latency", lambda: run_benchmark(args, argv), "sidecars, servers and the lab were stopped")


if __name__ == "__main__":
    sys.exit(main())
