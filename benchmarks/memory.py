"""Memory and config size: one shared Envoy for a node's N pods vs N sidecar Envoys, one per pod.

A generated cluster (default 200 services) is compiled for node-1 holding N pods (the node's
shared config) and for each of those pods alone (`compile_sidecar`, the config its own sidecar would
need). Every config runs in a real Envoy, each in its own network namespace (they all bind the same
listener ports). Every Envoy gets its secrets from the same node SDS service (`dpumesh sds`, one process
on one Unix socket, serving one certificate directory a lab CA fills with the identities of node-1's pods),
as a node's dpu-proxy does. Once an Envoy has loaded its listeners and clusters (listeners warm only once
their certificates came from the SDS service), its memory is read from /proc: RSS, and PSS, which splits
the pages Envoys share (the binary) among them instead of counting them N times. The SDS service's own
memory is recorded apart.

For each N the cluster is the same; only the node of node-1's surplus pods changes (pod IPs pinned), so
each pod's sidecar config is the same for every N and is compiled once.

    python -m benchmarks.memory --pods-per-node 10,30,60 --services 200 --max-seconds 3600
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import (
    PLOTS_DIR,
    RESULTS_DIR,
    BenchError,
    Deadline,
    machine_facts,
    pyplot,
    run_bounded,
    run_main,
    save_figure,
    stop_processes,
    write_json,
)
from benchmarks.compiler_scale import bundle_sizes
from benchmarks.generate import Generator, Sizes
from dpumesh import sds_process
from dpumesh.bundle import envoy_binary, write_tree
from dpumesh.certs import LabCA, ensure_workload_certs
from dpumesh.compiler import MeshSettings, ProxyLayout, compile_node, compile_sidecar
from dpumesh.errors import DpumeshError
from dpumesh.state import build_state

NODE = "node-1"
SPARE_NODE = "node-2"
READY_SECONDS = 600.0  # a shared config of tens of MB takes minutes to load on a busy machine
SETTLE_SECONDS = 2.0
PR_SET_PDEATHSIG = 1
INOTIFY_INSTANCES = 8192


class OutOfTime(BenchError):
    """--max-seconds passed: what is measured so far is kept."""


# -- the cluster -----------------------------------------------------------------------------------
def cluster_objects(services: int, pods_per_node: int, nodes: int, seed: int) -> list[dict[str, Any]]:
    sizes = Sizes(
        services=services,
        pods=pods_per_node * nodes,
        nodes=nodes,
        virtual_services=services // 5,
        destination_rules=services // 5,
        seed=seed,
    )
    objects = Generator(sizes).objects()
    state = build_state(objects)
    ips = {p.meta.key: p.ip for p in state.pods}
    for obj in objects:
        if obj["kind"] == "Pod":
            obj["status"] = {"podIP": ips[f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"]}
    return objects


def with_pods_on_node(objects: list[dict[str, Any]], keep: list[str]) -> list[dict[str, Any]]:
    """The same cluster with only the pods `keep` left on NODE (the others move, keeping their IPs)."""
    moved = copy.deepcopy(objects)
    for obj in moved:
        key = f"{obj['metadata'].get('namespace')}/{obj['metadata']['name']}"
        if obj["kind"] == "Pod" and obj["spec"]["nodeName"] == NODE and key not in keep:
            obj["spec"]["nodeName"] = SPARE_NODE
    return moved


def cert_dir_of(workdir: Path) -> Path:
    """The one certificate directory every proxy's secrets come from."""
    return workdir / "certs"


def sds_socket_of(workdir: Path) -> Path:
    return workdir / "sds.sock"


def layout_for(root: Path, workdir: Path) -> ProxyLayout:
    """Config paths inside `root` (every proxy its own tree); certificates and SDS socket shared by all."""
    return ProxyLayout(
        config_dir=str(root / "envoy"),
        watch_dir=str(root / "envoy"),
        cert_dir=str(cert_dir_of(workdir)),
        sds_socket=str(sds_socket_of(workdir)),
    )


def mesh_for(root: Path, workdir: Path) -> MeshSettings:
    return dataclasses.replace(MeshSettings(), proxy=layout_for(root, workdir))


def compile_all(objects, pods_per_node: list[int], workdir: Path, report) -> None:
    """Runs in a child process: writes every proxy tree under `workdir`, reports each one's stats."""
    full = build_state(objects)
    local = sorted(p.meta.key for p in full.pods if p.node == NODE and p.meshed)
    report("local_pods", {"pods": local})
    for n in pods_per_node:
        state = build_state(with_pods_on_node(objects, local[:n]))
        root = workdir / f"shared-{n:03d}"
        started = time.perf_counter()
        bundle = compile_node(state, mesh_for(root, workdir), NODE)
        seconds = time.perf_counter() - started
        write_tree(root, bundle.files)
        report("shared", {"n": n, "root": str(root), "seconds": seconds, **_summary(bundle, state, NODE)})
    for index, key in enumerate(local[: max(pods_per_node)]):
        root = workdir / f"sidecar-{index:03d}"
        started = time.perf_counter()
        bundle = compile_sidecar(full, mesh_for(root, workdir), key)
        seconds = time.perf_counter() - started
        write_tree(root, bundle.files)
        report("sidecar", {"pod": key, "root": str(root), "seconds": seconds, **_summary(bundle, full, NODE, key)})


def _summary(bundle, state, node: str, only: str = "") -> dict[str, Any]:
    pods = [p for p in state.pods if p.node == node and p.meshed and (not only or p.meta.key == only)]
    identities = sorted({(p.namespace, p.service_account) for p in pods})
    static = yaml.safe_load(bundle.files["envoy/bootstrap.yaml"])["static_resources"].get("clusters", [])
    stats = {**bundle.stats, "static_clusters": len(static)}
    return {"stats": stats, **bundle_sizes(bundle.files), "identities": identities}


# -- Envoy in a network namespace ------------------------------------------------------------------
@dataclasses.dataclass
class Proxy:
    label: str
    root: Path
    stats: dict[str, int]
    process: subprocess.Popen | None = None


@contextlib.contextmanager
def inotify_instances(at_least: int) -> Iterator[int]:
    """Raise fs.inotify.max_user_instances for the run, then put it back.

    Envoy opens an inotify instance per watched directory (its LDS/CDS directory; secrets come from
    the SDS service, no file watch), and some of its own: 60 sidecars hold a few each. The limit (128
    by default) counts every process of the user, the lab's and other tests' included, and an Envoy
    aborts once it is reached.
    """
    knob = Path("/proc/sys/fs/inotify/max_user_instances")
    before = int(knob.read_text())
    if before < at_least:
        knob.write_text(f"{at_least}\n")
    try:
        yield max(before, at_least)
    finally:
        if before < at_least:
            knob.write_text(f"{before}\n")


def _die_with_parent() -> None:
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@contextlib.contextmanager
def sds_service(socket_path: Path, cert_dir: Path) -> Iterator[subprocess.Popen]:
    """`dpumesh sds` on `socket_path` (a path, so Envoys in other network namespaces reach it) until the block ends."""
    with (socket_path.parent / "sds.log").open("wb") as log:
        process = subprocess.Popen(
            sds_process.command(socket_path, cert_dir),
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
    try:
        try:
            sds_process.wait_until_serving(socket_path, process, timeout=30)
        except DpumeshError as exc:
            raise BenchError(f"{exc}: {_last_line(socket_path.parent)}") from exc
        yield process
    finally:
        stop_processes([process])


def _last_line(workdir: Path) -> str:
    lines = (workdir / "sds.log").read_text(errors="replace").splitlines()
    return lines[-1] if lines else "no output"


def start(proxy: Proxy, concurrency: int) -> None:
    """Envoy in a network namespace of its own, without a name: nothing else can delete it, and the kernel
    removes it with the process however the run ends."""
    envoy = [envoy_binary(), "-c", str(proxy.root / "envoy" / "bootstrap.yaml"), "--disable-hot-restart"]
    envoy += ["--concurrency", str(concurrency), "-l", "warning"]
    # unshare and sh exec in place: the process id is Envoy's own.
    command = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "envoy", *envoy]
    with (proxy.root / "envoy.log").open("wb") as log:
        proxy.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)


def admin(proxy: Proxy, path: str) -> str:
    """GET from the admin interface (127.0.0.1:15000 inside the proxy's namespace)."""
    assert proxy.process is not None
    done = subprocess.run(
        ["nsenter", f"--net=/proc/{proxy.process.pid}/ns/net", "curl", "-sf", "--max-time", "10",
         f"http://127.0.0.1:15000{path}"],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )  # fmt: skip
    return done.stdout if done.returncode == 0 else ""


def manager_stats(proxy: Proxy) -> dict[str, int]:
    raw = admin(proxy, "/stats?format=json&filter=^(listener_manager|cluster_manager|server)%5C.")
    if not raw:
        return {}
    return {s["name"]: s["value"] for s in json.loads(raw).get("stats", []) if "value" in s}


def loaded(proxy: Proxy, stats: dict[str, int]) -> bool:
    """Ready, and every listener and cluster of its config active (none warming)."""
    return (
        stats.get("listener_manager.lds.update_success", 0) >= 1
        and stats.get("cluster_manager.cds.update_success", 0) >= 1
        and stats.get("listener_manager.total_listeners_active") == proxy.stats["listeners"]
        and stats.get("listener_manager.total_listeners_warming", 1) == 0
        and stats.get("cluster_manager.active_clusters") == proxy.stats["clusters"] + proxy.stats["static_clusters"]
        and stats.get("cluster_manager.warming_clusters", 1) == 0
        and admin(proxy, "/ready").strip() == "LIVE"
    )


def wait_loaded(proxies: list[Proxy], deadline: Deadline, sds: subprocess.Popen) -> dict[str, dict[str, int]]:
    waiting = {p.label: p for p in proxies}
    final: dict[str, dict[str, int]] = {}
    give_up = time.monotonic() + READY_SECONDS
    while waiting:
        if sds.poll() is not None:
            raise BenchError(f"dpumesh sds exited with {sds.returncode}: the Envoys cannot get their secrets")
        if deadline.passed():
            label, proxy = next(iter(waiting.items()))
            raise OutOfTime(
                f"--max-seconds {deadline.seconds:g} reached while {label} was loading: {manager_stats(proxy)}"
            )
        for label, proxy in list(waiting.items()):
            if proxy.process is not None and proxy.process.poll() is not None:
                kept = RESULTS_DIR / "logs" / f"memory-{label}.log"
                kept.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(proxy.root / "envoy.log", kept)
                lines = kept.read_text(errors="replace").splitlines()
                first = next((ln for ln in lines if "[critical]" in ln), lines[-1] if lines else "")
                raise BenchError(f"Envoy {label} exited with {proxy.process.returncode}: {first} (log: {kept})")
            stats = manager_stats(proxy)
            if loaded(proxy, stats):
                final[label] = stats
                del waiting[label]
        if waiting and time.monotonic() > give_up:
            label, proxy = next(iter(waiting.items()))
            raise BenchError(f"Envoy {label} did not load its config in time (last stats: {manager_stats(proxy)})")
        if waiting:
            time.sleep(0.5)
    return final


def stop(proxies: list[Proxy]) -> None:
    stop_processes([p.process for p in proxies if p.process is not None])
    for proxy in proxies:
        proxy.process = None


def memory_of(pid: int) -> dict[str, int]:
    """KiB from /proc: RSS, PSS (shared pages split among their users) and USS (pages of this process alone)."""
    rollup: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            rollup[name] = int(rest.split()[0])
    return {
        "rss_kib": rollup["Rss"],
        "pss_kib": rollup["Pss"],
        "uss_kib": rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0),
    }


def active_secrets(proxy: Proxy) -> int:
    """Secrets the proxy holds from the SDS service (Envoy redacts the keys in its dump)."""
    raw = admin(proxy, "/config_dump?resource=dynamic_active_secrets")
    return len(json.loads(raw).get("configs", [])) if raw else 0


def inotify_count(pid: int) -> int:
    """inotify instances the process holds (each counts against fs.inotify.max_user_instances)."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            count += os.readlink(fd) == "anon_inode:inotify"
    return count


def measure_running(proxies: list[Proxy], stats: dict[str, dict[str, int]], sds: subprocess.Popen) -> dict[str, Any]:
    """The Envoys' memory, summed, and the SDS service's apart (the same for the shared proxy and the sidecars)."""
    time.sleep(SETTLE_SECONDS)
    per_proxy = []
    for proxy in proxies:
        assert proxy.process is not None
        heap = stats[proxy.label].get("server.memory_allocated", 0)
        pid = proxy.process.pid
        per_proxy.append(
            {
                "label": proxy.label,
                **memory_of(pid),
                "heap_allocated_bytes": heap,
                "inotify": inotify_count(pid),
                "secrets": active_secrets(proxy),
            }
        )
    keys = ("rss_kib", "pss_kib", "uss_kib", "heap_allocated_bytes", "inotify", "secrets")
    total = {k: sum(p[k] for p in per_proxy) for k in keys}
    return {"total": total, "proxies": per_proxy, "sds": memory_of(sds.pid)}


# -- the run ---------------------------------------------------------------------------------------
def run(args: argparse.Namespace, deadline: Deadline, workdir: Path) -> dict[str, Any]:
    ns_values = sorted(args.pods_per_node)
    largest = ns_values[-1]
    nodes = max(2, -(-args.total_pods // largest))
    objects = cluster_objects(args.services, largest, nodes, args.seed)
    compiled: dict[str, Any] = {"shared": {}, "sidecars": []}

    def record(kind: str, data: dict[str, Any]) -> None:
        if kind == "shared":
            compiled["shared"][data["n"]] = data
            print(f"  compiled shared config for {data['n']} pods in {data['seconds']:.1f} s", flush=True)
        elif kind == "sidecar":
            compiled["sidecars"].append(data)
            print(
                f"  compiled sidecar {len(compiled['sidecars'])} ({data['pod']}) in {data['seconds']:.1f} s", flush=True
            )
        else:
            compiled[kind] = data

    stopped = run_bounded(compile_all, (objects, ns_values, workdir), deadline, record)
    if stopped:
        raise BenchError(f"compiling stopped: {stopped}")
    if len(compiled["local_pods"]["pods"]) < largest:
        raise BenchError(f"{NODE} holds {len(compiled['local_pods']['pods'])} meshed pods, fewer than {largest}")

    # One certificate per identity of node-1's pods, the same files for the shared proxy and the sidecars.
    ca = LabCA.ensure(workdir / "ca", MeshSettings().trust_domain)
    entries = [*compiled["shared"].values(), *compiled["sidecars"]]
    identities = {tuple(i) for entry in entries for i in entry["identities"]}
    ensure_workload_certs(cert_dir_of(workdir), ca, MeshSettings().trust_domain, sorted(identities))

    cluster = {"services": args.services, "pods": largest * nodes, "nodes": nodes}
    cluster["virtual_services"] = cluster["destination_rules"] = args.services // 5
    result: dict[str, Any] = {"cluster": cluster, "points": []}
    for n in ns_values:
        entry = compiled["shared"][n]
        sidecars = compiled["sidecars"][:n]
        result["points"].append(
            {
                "n": n,
                "shared": {
                    "envoy_bytes": entry["envoy_bytes"],
                    "stats": entry["stats"],
                    "compile_seconds": entry["seconds"],
                },
                "sidecars": {
                    "envoy_bytes": sum(s["envoy_bytes"] for s in sidecars),
                    "clusters": sum(s["stats"]["clusters"] for s in sidecars),
                    "compile_seconds": sum(s["seconds"] for s in sidecars),
                },
            }
        )
    try:
        with sds_service(sds_socket_of(workdir), cert_dir_of(workdir)) as sds:
            measure_envoys(result["points"], compiled, args.concurrency, deadline, sds)
    except OutOfTime as exc:
        result["stopped"] = str(exc)
    result["complete"] = all("memory" in p["sidecars"] and "memory" in p["shared"] for p in result["points"])
    result["size_by_services"] = size_sweep(args, deadline, workdir)
    return result


def measure_envoys(
    points: list[dict[str, Any]], compiled: dict[str, Any], concurrency: int, deadline: Deadline, sds: subprocess.Popen
) -> None:
    """Fill in each point's memory: the shared Envoy alone, then N sidecar Envoys running together."""
    for point in points:
        entry = compiled["shared"][point["n"]]
        shared = Proxy(f"shared-{point['n']}", Path(entry["root"]), entry["stats"])
        print(f"N={point['n']}: shared proxy", flush=True)
        try:
            start(shared, concurrency)
            memory = measure_running([shared], wait_loaded([shared], deadline, sds), sds)
            point["shared"]["memory"], point["shared"]["sds_memory"] = memory["total"], memory["sds"]
        finally:
            stop([shared])
    running: list[Proxy] = []
    try:
        for point in points:
            n = point["n"]
            print(f"N={n}: {n} sidecar proxies", flush=True)
            batch = []
            for index in range(len(running), n):
                entry = compiled["sidecars"][index]
                proxy = Proxy(f"sidecar-{index}", Path(entry["root"]), entry["stats"])
                running.append(proxy)
                batch.append(proxy)
                start(proxy, concurrency)
            wait_loaded(batch, deadline, sds)
            memory = measure_running(running, {p.label: manager_stats(p) for p in running}, sds)
            point["sidecars"]["memory"], point["sidecars"]["sds_memory"] = memory["total"], memory["sds"]
            point["sidecars"]["per_proxy_rss_kib"] = [p["rss_kib"] for p in memory["proxies"]]
    finally:
        stop(running)


def size_sweep(args: argparse.Namespace, deadline: Deadline, workdir: Path) -> list[dict[str, Any]]:
    """Config bytes (no Envoy) at --sweep-pods pods per node for each of --sweep-services."""
    points = []
    for services in args.sweep_services:
        if deadline.passed():
            break
        objects = cluster_objects(services, args.sweep_pods, max(2, -(-args.total_pods // args.sweep_pods)), args.seed)
        compiled: dict[str, Any] = {"shared": {}, "sidecars": []}

        def record(kind: str, data: dict[str, Any], compiled=compiled) -> None:
            if kind == "shared":
                compiled["shared"] = data
            elif kind == "sidecar":
                compiled["sidecars"].append(data)

        target = workdir / f"sweep-{services}"
        stopped = run_bounded(compile_all, (objects, [args.sweep_pods], target), deadline, record)
        shutil.rmtree(target, ignore_errors=True)
        if stopped:
            break
        print(f"  size sweep: {services} services compiled", flush=True)
        points.append(
            {
                "services": services,
                "n": args.sweep_pods,
                "shared_envoy_bytes": compiled["shared"]["envoy_bytes"],
                "sidecars_envoy_bytes": sum(s["envoy_bytes"] for s in compiled["sidecars"]),
            }
        )
    return points


def plot(result: dict[str, Any], path: Path) -> Path:
    plt = pyplot()
    points = [p for p in result["points"] if "memory" in p["sidecars"] and "memory" in p["shared"]]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    mem, size, sweep = axes
    ns = [p["n"] for p in points]
    mib = 1024
    mem.plot(ns, [p["sidecars"]["memory"]["rss_kib"] / mib for p in points], "o-", label="N sidecars, summed RSS")
    mem.plot(ns, [p["sidecars"]["memory"]["pss_kib"] / mib for p in points], "o--", label="N sidecars, summed PSS")
    mem.plot(ns, [p["shared"]["memory"]["rss_kib"] / mib for p in points], "s-", label="shared proxy, RSS")
    mem.plot(ns, [p["shared"]["memory"]["pss_kib"] / mib for p in points], "s--", label="shared proxy, PSS")
    if all("sds_memory" in p["shared"] for p in points):
        with_sds = [(p["shared"]["memory"]["rss_kib"] + p["shared"]["sds_memory"]["rss_kib"]) / mib for p in points]
        mem.plot(ns, with_sds, "^:", label="shared proxy + SDS service, RSS")
    mem.set_xlabel("pods on the node (N)")
    mem.set_ylabel("MiB")
    mem.set_title("Envoy memory")
    all_points = result["points"]
    size.plot([p["n"] for p in all_points], [p["sidecars"]["envoy_bytes"] / 2**20 for p in all_points], "o-",
              label="N sidecar configs, summed")  # fmt: skip
    size.plot([p["n"] for p in all_points], [p["shared"]["envoy_bytes"] / 2**20 for p in all_points], "s-",
              label="shared config")  # fmt: skip
    size.set_xlabel("pods on the node (N)")
    size.set_ylabel("MiB of Envoy config")
    size.set_title("Config size vs N")
    rows = result.get("size_by_services") or []
    if rows:
        services = [r["services"] for r in rows]
        sweep.plot(
            services, [r["sidecars_envoy_bytes"] / 2**20 for r in rows], "o-", label=f"{rows[0]['n']} sidecar configs"
        )
        sweep.plot(services, [r["shared_envoy_bytes"] / 2**20 for r in rows], "s-", label="shared config")
    sweep.set_xlabel("services in the cluster")
    sweep.set_ylabel("MiB of Envoy config")
    sweep.set_title("Config size vs services")
    for axis in axes:
        axis.grid(alpha=0.3)
        axis.set_xlim(left=0)
        axis.set_ylim(bottom=0)
        if axis.lines:
            axis.legend(fontsize=8)
    return save_figure(fig, path)


def _numbers(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be at least 1")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods-per-node", type=_numbers, default=[10, 30, 60], help="the values of N")
    parser.add_argument("--services", type=int, default=200, help="services in the generated cluster")
    parser.add_argument("--total-pods", type=int, default=600, help="pods in the cluster (nodes = this / max N)")
    parser.add_argument("--sweep-services", type=_numbers, default=[50, 100, 200], help="config size vs services")
    parser.add_argument("--sweep-pods", type=int, default=10, help="pods per node for the services sweep")
    parser.add_argument("--concurrency", type=int, default=2, help="Envoy worker threads, for every proxy alike")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=3600)
    parser.add_argument("--out", default=str(RESULTS_DIR / "memory.json"))
    parser.add_argument("--plot", default=str(PLOTS_DIR / "memory.svg"))
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root: every Envoy runs in its own network namespace")
    if args.services < 10:
        parser.error("--services must be at least 10")
    return run_main("memory benchmark", lambda: measure(args, argv), "every Envoy it started is stopped")


def measure(args: argparse.Namespace, argv: list[str] | None) -> int:
    deadline = Deadline(args.max_seconds)
    result: dict[str, Any] = {
        "benchmark": "memory",
        "command": "python -m benchmarks.memory " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_facts(),
        "concurrency": args.concurrency,
    }
    workdir = Path(tempfile.mkdtemp(prefix="dpumesh-bench-memory-"))
    try:
        with inotify_instances(INOTIFY_INSTANCES) as instances:
            result["inotify_max_user_instances"] = instances
            result.update(run(args, deadline, workdir))
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir)
    if deadline.passed():
        result["stopped"] = f"--max-seconds {args.max_seconds:g} reached"
    write_json(args.out, result)
    plot(result, Path(args.plot))
    for point in result["points"]:
        print(_line(point))
    print(f"wrote {args.out} and {args.plot}")
    return 0


def _line(point: dict[str, Any]) -> str:
    shared, sidecars = point["shared"], point["sidecars"]
    text = f"N={point['n']}: config {shared['envoy_bytes']} vs {sidecars['envoy_bytes']} bytes"
    if "memory" in sidecars and "memory" in shared:
        for key in ("rss_kib", "pss_kib"):
            text += f", {key[:3]} {shared['memory'][key]} vs {sidecars['memory'][key]} KiB"
    return text


if __name__ == "__main__":
    sys.exit(main())
