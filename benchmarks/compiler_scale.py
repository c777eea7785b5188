"""Compiler scale: time to compile one node and every node of generated clusters of growing size.

Each size is a fraction of the full cluster (default 5,000 services, 20,000 pods, 100 nodes, 1,000
VirtualServices, 1,000 DestinationRules); nodes shrink with the rest, so a node holds the same number of pods
at every size and the per-node cost shows how compiling grows with the cluster. Each size runs in a child
process the run kills when `--max-seconds` is up; whatever was measured by then is kept and marked partial.
The first compile of one node is taken `--cold-rounds` times, each in a fresh process that loads the state, as
one `dpumesh compile` does; its median is the figure. Every time is taken twice: wall clock and the compiling
process's CPU time (its threads, not the helper it forks), which other work on a shared machine inflates much
less.

    python -m benchmarks.compiler_scale --fractions 0.125,0.25,0.5,1 --max-seconds 1800
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    PLOTS_DIR,
    RESULTS_DIR,
    Deadline,
    machine_facts,
    pyplot,
    run_bounded,
    save_figure,
    sigterm_as_interrupt,
    write_json,
)
from benchmarks.generate import Sizes, add_size_arguments, sizes_from, write_state

ENVOY_FILES = ("envoy/bootstrap.yaml", "envoy/lds.yaml", "envoy/cds.yaml")


def scaled(full: Sizes, fraction: float) -> Sizes:
    def part(n: int, low: int) -> int:
        return max(low, round(n * fraction))

    return Sizes(
        services=part(full.services, 1),
        pods=part(full.pods, 1),
        nodes=part(full.nodes, 1),
        virtual_services=part(full.virtual_services, 0),
        destination_rules=part(full.destination_rules, 0),
        namespaces=part(full.namespaces, 1) if full.namespaces else 0,
        seed=full.seed,
    ).validated()


def bundle_sizes(files: dict[str, bytes]) -> dict[str, int]:
    """Bytes of the whole bundle and of what Envoy itself loads (bootstrap, LDS, CDS; secrets come from SDS)."""
    envoy = sum(len(v) for k, v in files.items() if k in ENVOY_FILES)
    return {"bundle_bytes": sum(len(v) for v in files.values()), "envoy_bytes": envoy}


class Stopwatch:
    """Wall clock and this process's CPU time since it was made."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> dict[str, float]:
        return {"seconds": time.perf_counter() - self.wall, "cpu_seconds": time.process_time() - self.cpu}


def envoy_check(files: dict[str, bytes], config_dir: str) -> dict[str, Any]:
    """Whether the real Envoy accepts a node's config, as `dpumesh compile` checks it before writing, and how long
    that takes (not part of the compile times; CPU seconds count Envoy's too)."""
    from dpumesh.bundle import validate_with_envoy, write_tree
    from dpumesh.errors import DpumeshError

    def cpu() -> float:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    start, wall = cpu(), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dpumesh-bench-validate-") as tmp:
        try:
            write_tree(Path(tmp) / "node", files, lambda staged: validate_with_envoy(staged, config_dir))
            outcome: dict[str, Any] = {"accepted": True}
        except DpumeshError as exc:
            outcome = {"accepted": False, "reason": str(exc)[:500]}
    return {**outcome, "seconds": time.perf_counter() - wall, "cpu_seconds": cpu() - start}


def _load(state_dir: Path, report):
    """The state as `dpumesh compile` reads it, in this (fresh) process."""
    from dpumesh.compiler import MeshSettings
    from dpumesh.gcpause import keep_what_is_built
    from dpumesh.state import load_state

    keep_what_is_built()  # as `dpumesh compile` does: what is loaded and compiled is never rescanned
    watch = Stopwatch()
    state = load_state(state_dir, MeshSettings().service_cidr)
    report("load", watch.read())
    return state


def measure_cold(state_dir: Path, report) -> None:
    """Runs in a fresh child: load the state and compile its first node once, as one `dpumesh compile` does."""
    from dpumesh.compiler import MeshSettings, compile_node

    state = _load(state_dir, report)
    watch = Stopwatch()
    bundle = compile_node(state, MeshSettings(), sorted(state.nodes)[0])
    report("cold", {**watch.read(), "helper_vhosts": bundle.helper_vhosts})


def measure(state_dir: Path, repeat: int, all_nodes: bool, report) -> None:
    """Runs in a child process: reports (kind, data) as each measurement completes."""
    from dpumesh.compiler import MeshSettings, compile_node

    mesh = MeshSettings()
    state = _load(state_dir, report)
    node = sorted(state.nodes)[0]
    tries = []
    helper_vhosts = helper_rss = 0
    for _ in range(repeat):
        watch = Stopwatch()
        bundle = compile_node(state, mesh, node)
        tries.append(watch.read())
        helper_vhosts = helper_vhosts or bundle.helper_vhosts
        report("one_node_try", tries[-1])
        if len(tries) == 1:  # its only child so far is the helper, if it forked one (Envoy's check comes later)
            helper_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    best = {
        # the first compile builds every host's routes and every cluster; later ones (any node) reuse them
        "first_seconds": tries[0]["seconds"],
        "first_cpu_seconds": tries[0]["cpu_seconds"],
        "best_seconds": min(t["seconds"] for t in tries),
        "best_cpu_seconds": min(t["cpu_seconds"] for t in tries),
        "tries": [t["seconds"] for t in tries],
        "cpu_tries": [t["cpu_seconds"] for t in tries],
        # outbound virtual hosts of the first compile built by its forked helper (0: none was forked), and the
        # helper's peak RSS (pages it shares with the compiler count in both)
        "helper_vhosts": helper_vhosts,
        "helper_peak_rss_kib": helper_rss if helper_vhosts else 0,
    }
    report("one_node", {"node": node, **best, **bundle_sizes(bundle.files), "stats": bundle.stats})
    report("envoy_validate", envoy_check(bundle.files, mesh.proxy.config_dir))
    if not all_nodes:
        return
    whole = Stopwatch()
    for name in sorted(state.nodes):
        watch = Stopwatch()
        bundle = compile_node(state, mesh, name)
        report("node", {"node": name, **watch.read(), **bundle_sizes(bundle.files)})
    report("all_nodes", whole.read())
    report("peak_rss_kib", {"value": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss})


def run_size(sizes: Sizes, repeat: int, cold_rounds: int, all_nodes: bool, deadline: Deadline) -> dict[str, Any]:
    result: dict[str, Any] = {"sizes": sizes.__dict__, "complete": False, "nodes": []}
    cold: list[dict[str, float]] = []

    def record(kind: str, data: dict[str, Any]) -> None:
        if kind == "node":
            result["nodes"].append(data)
        elif kind == "peak_rss_kib":
            result["peak_rss_kib"] = data["value"]
        elif kind == "cold":
            cold.append(data)
        elif kind != "one_node_try" and not (kind == "load" and "load" in result):
            result[kind] = data
        print(f"  {kind}: {_brief(data)}", flush=True)

    with tempfile.TemporaryDirectory(prefix="dpumesh-bench-scale-") as tmp:
        state_dir = write_state(sizes, Path(tmp) / "state")
        stopped = run_bounded(measure, (state_dir, repeat, all_nodes), deadline, record)
        # The first compile again, each time in a fresh process that loads the state: the machine's pace moves
        # by a tenth from one minute to the next, so the figure is the median of these rounds.
        for _ in range(cold_rounds - 1):
            if stopped or "one_node" not in result:
                break
            stopped = run_bounded(measure_cold, (state_dir,), deadline, record)
    if "one_node" in result:
        first = result["one_node"]
        rounds = [{"seconds": first["first_seconds"], "cpu_seconds": first["first_cpu_seconds"]}, *cold]
        first["cold_rounds"] = [round(r["seconds"], 4) for r in rounds]
        first["cold_median_seconds"] = statistics.median(r["seconds"] for r in rounds)
        first["cold_median_cpu_seconds"] = statistics.median(r["cpu_seconds"] for r in rounds)
    result["complete"] = not stopped
    if stopped:
        result["stopped"] = stopped
    if result["nodes"]:
        per_node = [n["envoy_bytes"] for n in result["nodes"]]
        seconds = [n["seconds"] for n in result["nodes"]]
        result["node_summary"] = {
            "compiled": len(per_node),
            "of": sizes.nodes,
            "envoy_bytes_median": int(statistics.median(per_node)),
            "envoy_bytes_max": max(per_node),
            "seconds_median": statistics.median(seconds),
            "seconds_sum": sum(seconds),
            "cpu_seconds_sum": sum(n.get("cpu_seconds", 0.0) for n in result["nodes"]),
        }
    return result


def _brief(data: dict[str, Any]) -> str:
    keep = (
        "seconds",
        "cpu_seconds",
        "first_cpu_seconds",
        "best_seconds",
        "best_cpu_seconds",
        "envoy_bytes",
        "node",
        "value",
        "accepted",
        "reason",
    )
    return ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in data.items() if k in keep)


def plot(result: dict[str, Any], path: Path) -> Path:
    plt = pyplot()
    runs = [r for r in result["runs"] if "one_node" in r]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    services = [r["sizes"]["services"] for r in runs]
    lines = [
        ("one node (best), wall", "o-", lambda r: r["one_node"]["best_seconds"]),
        ("one node (best), CPU", "o--", lambda r: r["one_node"].get("best_cpu_seconds")),
        ("all nodes, wall", "s-", lambda r: r.get("all_nodes", {}).get("seconds")),
        ("all nodes, CPU", "s--", lambda r: r.get("all_nodes", {}).get("cpu_seconds")),
    ]
    for label, style, value in lines:
        points = [(r["sizes"]["services"], value(r)) for r in runs if value(r) is not None]
        if points:
            left.plot(*zip(*points, strict=True), style, label=label)
    left.set_xlabel("services in the cluster (nodes and pods scale with them)")
    left.set_ylabel("compile time (s)")
    left.set_title("Compile time")
    left.legend()
    right.plot(services, [r["one_node"]["envoy_bytes"] / 2**20 for r in runs], "o-", label="node-1")
    right.set_xlabel("services in the cluster")
    right.set_ylabel("Envoy config per node (MiB)")
    right.set_title("Config size per node")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.set_xlim(left=0)
        axis.set_ylim(bottom=0)
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_size_arguments(parser)
    parser.set_defaults(services=5000, pods=20000, nodes=100, virtual_services=1000, destination_rules=1000)
    parser.add_argument("--fractions", default="0.125,0.25,0.5,1", help="sizes to run, as fractions of the full one")
    parser.add_argument("--repeat", type=int, default=3, help="one-node compiles per size (the best counts)")
    parser.add_argument(
        "--cold-rounds", type=int, default=3, help="first compiles, each in a fresh process (the median counts)"
    )
    parser.add_argument("--one-node-only", action="store_true", help="skip compiling every node")
    parser.add_argument("--max-seconds", type=float, default=1800, help="stop the whole run after this long")
    parser.add_argument("--out", default=str(RESULTS_DIR / "compiler_scale.json"))
    parser.add_argument("--plot", default=str(PLOTS_DIR / "compiler_scale.svg"))
    args = parser.parse_args(argv)
    try:
        full = sizes_from(args).validated()
        fractions = sorted(float(f) for f in args.fractions.split(","))
        if not fractions or fractions[0] <= 0 or fractions[-1] > 1:
            raise ValueError("--fractions must be numbers in (0, 1]")
        sizes = [scaled(full, f) for f in fractions]
    except ValueError as exc:
        parser.error(str(exc))
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.cold_rounds < 1:
        parser.error("--cold-rounds must be at least 1")
    deadline = Deadline(args.max_seconds)
    result: dict[str, Any] = {
        "benchmark": "compiler_scale",
        "command": "python -m benchmarks.compiler_scale " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_facts(),
        "full_size": full.__dict__,
        "fractions": fractions,
        "runs": [],
    }
    try:
        with sigterm_as_interrupt():
            run_all(result, fractions, sizes, args, deadline)
    except KeyboardInterrupt:
        print("compiler scale: interrupted; keeping the sizes measured so far", file=sys.stderr)
        result["stopped"] = "interrupted"
    write_json(args.out, result)
    if any("one_node" in r for r in result["runs"]):
        plot(result, Path(args.plot))
    print(f"wrote {args.out} and {args.plot}")
    return 0


def run_all(
    result: dict[str, Any], fractions: list[float], sizes: list[Sizes], args: argparse.Namespace, deadline: Deadline
) -> None:
    for fraction, size in zip(fractions, sizes, strict=True):
        if deadline.passed():
            result["runs"].append({"sizes": size.__dict__, "complete": False, "stopped": "not started: no time left"})
            continue
        print(f"fraction {fraction:g}: {size.services} services, {size.pods} pods, {size.nodes} nodes", flush=True)
        run = run_size(size, args.repeat, args.cold_rounds, not args.one_node_only, deadline)
        run["fraction"] = fraction
        result["runs"].append(run)
        write_json(args.out, result)  # keep what is done even if a later size is interrupted


if __name__ == "__main__":
    sys.exit(main())
