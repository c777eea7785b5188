"""Markdown tables of the results in benchmarks/results, for docs/benchmarks.md.

python -m benchmarks.report [memory|compiler_scale|playbook|latency ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR


def _mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.1f}"


def _kib_to_mib(kib: float) -> str:
    return f"{kib / 1024:.0f}"


def _less(shared: float, sidecars: float) -> str:
    return f"{(1 - shared / sidecars):.0%}" if sidecars else "—"


def _machine(result: dict[str, Any]) -> str:
    m = result["machine"]
    commit = m["git_commit"][:12] + (" with local changes" if "+" in m["git_commit"] else "")
    return (
        f"Measured on {m['nproc']} cores, {m['cpu_model']}, {m['memory_total_kib'] // 2**20} GiB, Envoy "
        f"{m['envoy_version']}, commit `{commit}`, load average {m['load_average'][0]} at the start "
        f"({m['started_utc']}); command `{result['command'].strip()}`."
    )


def memory(result: dict[str, Any]) -> str:
    lines = [
        "| N pods | shared config | N sidecar configs | smaller by | shared RSS | sidecars' RSS | less | shared PSS "
        "| sidecars' PSS | less | SDS service RSS / PSS | less, PSS with SDS | clusters shared / summed |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in result["points"]:
        shared, side = p["shared"], p["sidecars"]
        ratio = f"{side['envoy_bytes'] / shared['envoy_bytes']:.2f}x"
        row = [str(p["n"]), f"{_mib(shared['envoy_bytes'])} MiB", f"{_mib(side['envoy_bytes'])} MiB", ratio]
        if "memory" in shared and "memory" in side:
            for key in ("rss_kib", "pss_kib"):
                a, b = shared["memory"][key], side["memory"][key]
                row += [f"{_kib_to_mib(a)} MiB", f"{_kib_to_mib(b)} MiB", _less(a, b)]
        else:
            row += ["not measured"] * 6
        sds = shared.get("sds_memory")
        if sds and "memory" in shared and "memory" in side:
            # the sidecars' side leaves out the SDS service they use as well: the saving at its smallest
            with_sds = shared["memory"]["pss_kib"] + sds["pss_kib"]
            row += [f"{_kib_to_mib(sds['rss_kib'])} / {_kib_to_mib(sds['pss_kib'])} MiB"]
            row += [_less(with_sds, side["memory"]["pss_kib"])]
        else:
            row += ["—", "—"]
        row.append(f"{shared['stats']['clusters']} / {side['clusters']}")
        lines.append("| " + " | ".join(row) + " |")
    sweep = result.get("size_by_services") or []
    if sweep:
        lines += [
            "",
            "| services | N | shared config | N sidecar configs | smaller by |",
            "| --- | --- | --- | --- | --- |",
        ]
        for r in sweep:
            ratio = r["sidecars_envoy_bytes"] / r["shared_envoy_bytes"]
            lines.append(
                f"| {r['services']} | {r['n']} | {_mib(r['shared_envoy_bytes'])} MiB | "
                f"{_mib(r['sidecars_envoy_bytes'])} MiB | {ratio:.2f}x |"
            )
    return "\n".join([*lines, "", _machine(result)])


def _wall_cpu(data: dict[str, Any], wall: str, cpu: str, digits: int = 1) -> str:
    return f"{data[wall]:.{digits}f} s" + (f" / {data[cpu]:.{digits}f} s" if cpu in data else "")


def compiler_scale(result: dict[str, Any]) -> str:
    lines = [
        "| services | pods | nodes | VS / DR | load | first node, wall (median of fresh processes) "
        "| one node again (best), wall / CPU | node-1 Envoy config | clusters on node-1 | all nodes, wall / CPU "
        "| peak RSS |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["runs"]:
        s = r["sizes"]
        one = r.get("one_node")
        summary = r.get("node_summary")
        all_nodes = _wall_cpu(r["all_nodes"], "seconds", "cpu_seconds") if "all_nodes" in r else "not run"
        if summary and "all_nodes" not in r:
            all_nodes = f"stopped after {summary['compiled']} of {summary['of']} ({summary['seconds_sum']:.0f} s)"
        if one:
            rounds = ", ".join(f"{x:.2f}" for x in one.get("cold_rounds", [one["first_seconds"]]))
            first = f"{one.get('cold_median_seconds', one['first_seconds']):.2f} s ({rounds})"
            node_1 = [first, _wall_cpu(one, "best_seconds", "best_cpu_seconds", 2), f"{_mib(one['envoy_bytes'])} MiB"]
            node_1.append(f"{one['stats']['clusters']:,}")
        else:
            node_1 = [r.get("stopped", "—"), "—", "—", "—"]
        row = [str(s["services"]), str(s["pods"]), str(s["nodes"])]
        row.append(f"{s['virtual_services']} / {s['destination_rules']}")
        row += [f"{r['load']['seconds']:.1f} s" if "load" in r else "—", *node_1, all_nodes]
        row.append(f"{r['peak_rss_kib'] // 1024} MiB" if "peak_rss_kib" in r else "—")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join([*lines, "", _machine(result)])


def playbook(result: dict[str, Any]) -> str:
    first, second = result["first"], result["second"]

    def cpu(run: dict[str, Any]) -> str:
        return f"{run['cpu_seconds']:.1f} s" if "cpu_seconds" in run else "—"

    lines = [
        "| run | wall time | CPU time | changed (all hosts) |",
        "| --- | ---: | ---: | ---: |",
        f"| first (fresh lab) | {first['seconds']:.1f} s | {cpu(first)} | {first['changed']} |",
        f"| second (idempotent) | {second['seconds']:.1f} s | {cpu(second)} | {second['changed']} |",
        "",
        f"Second run: {result['ratio']:.0%} of the first in wall time"
        + (f", {result['cpu_ratio']:.0%} in CPU time" if "cpu_ratio" in result else "")
        + " (target ≤ 40 %).",
    ]
    if result.get("round_ratios"):
        each = ", ".join(f"{r:.0%}" for r in result["round_ratios"])
        lines[-1] += f" Median of {len(result['round_ratios'])} rounds; each round: {each}."
    slow = second.get("slowest_tasks") or []
    if slow:
        lines += ["", "Slowest tasks of the second run:", "", "| task | s |", "| --- | ---: |"]
        lines += [f"| {t['task']} | {t['seconds']:.1f} |" for t in slow[:5]]
    return "\n".join([*lines, "", _machine(result)])


def latency(result: dict[str, Any]) -> str:
    lines = [
        "| placement | path | p50 ms | p90 ms | p99 ms | client lag, max ms | proxy CPU s / 1000 requests |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for case in result["cases"]:
        ms = case["latency_ms"]
        lines.append(
            f"| {case['placement']} | {case['path']} | {ms['p50']:.2f} | {ms['p90']:.2f} | {ms['p99']:.2f} "
            f"| {case['max_schedule_lag_ms']:.0f} | {case['proxy_cpu_s_per_1000_requests']:.3f} |"
        )
    lines += ["", "| placement | (b)/(c) latency p50 / p90 / p99 | (b)/(c) proxy CPU |", "| --- | --- | ---: |"]
    for placement, c in result["comparisons"].items():
        ratios = " / ".join(f"{c['shared_over_sidecar_latency'][k]:.2f}" for k in ("p50", "p90", "p99"))
        lines.append(f"| {placement} | {ratios} | {c['shared_over_sidecar_proxy_cpu']:.2f} |")
    return "\n".join([*lines, "", _machine(result)]) if "machine" in result else "\n".join(lines)


REPORTS = {"memory": memory, "compiler_scale": compiler_scale, "playbook": playbook, "latency": latency}


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(REPORTS)
    for name in names:
        if name not in REPORTS:
            print(f"unknown benchmark {name!r} (known: {', '.join(REPORTS)})", file=sys.stderr)
            return 2
        path = Path(RESULTS_DIR) / f"{name}.json"
        if not path.exists():
            print(f"<!-- {name}: no result yet ({path}) -->\n")
            continue
        print(f"<!-- {name} -->\n{REPORTS[name](json.loads(path.read_text()))}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
