"""Playbook wall time: the first `make lab` on a fresh machine, an idempotent second run, and a rerun after
`dpumesh lab down`.

The venv is brought up to date first (`make deps`, not timed: it is network bound), so every run times the
playbook alone. "First" starts from what a fresh clone has: no lab and none of the lab inventory's outputs
(the rendered manifests and their fingerprints in .cache/lab are removed). "Second" runs on what the first
built. "After lab down" takes only the lab down (its namespaces, proxies and /run/dpumesh-lab) and keeps the
rendered outputs, so it is the first run's work minus rendering.

The first and second runs are repeated in rounds (`--rounds`, 3 by default), each from a fresh lab; the
figures are the runs whose wall time is the median, and the ratio is of those medians. The second run must
change nothing (every host `changed=0` in the PLAY RECAP, in every round) and should take at most 40 % of
the first. Each run records its wall time and the CPU time of its whole process tree (make, Ansible, its
forks and modules; a busy machine stretches wall time much more than CPU time). The lab is shared by
everything on this machine, so the whole run holds /tmp/dpumesh-lab.lock (the lock `flock` takes; kept as
is when the caller holds it); a lab that was down before is taken down again afterwards.

    python -m benchmarks.playbook --rounds 3 --max-seconds 1800
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    PLOTS_DIR,
    REPO,
    RESULTS_DIR,
    BenchError,
    Deadline,
    dpumesh,
    lab_lock,
    machine_facts,
    pyplot,
    run_main,
    save_figure,
    write_json,
)

RECAP_LINE = re.compile(r"^(?P<host>\S+)\s*:\s*(?P<counts>(?:\w+=\d+\s*)+)$")
# ansible.posix.profile_tasks' summary: "role : task name ---------- 12.34s"
TASK_TIME = re.compile(r"^(?P<task>\S.*?) -+ ?(?P<seconds>\d+\.\d+)s$")
TARGET_RATIO = 0.4
LAB_OUTPUTS = REPO / ".cache" / "lab"  # inventories/lab: dpumesh_k8s_render_dir and what the roles keep there
RUNS = (("first", "first run\n(fresh)"), ("second", "second run\n(idempotent)"), ("after_lab_down", "after\nlab down"))


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    """Per-host counters of the last PLAY RECAP in an ansible-playbook output."""
    _, found, tail = output.rpartition("PLAY RECAP")
    if not found:
        return {}
    hosts: dict[str, dict[str, int]] = {}
    for line in tail.splitlines()[1:]:
        match = RECAP_LINE.match(line.strip())
        if match is None:
            if hosts:
                break
            continue
        counts = dict(pair.split("=") for pair in match["counts"].split())
        hosts[match["host"]] = {k: int(v) for k, v in counts.items()}
    return hosts


def slowest_tasks(output: str, count: int = 10) -> list[dict[str, Any]]:
    """The `count` slowest tasks of profile_tasks' summary (printed after the PLAY RECAP)."""
    tail = output.rpartition("PLAY RECAP")[2]
    tasks = [{"task": m["task"], "seconds": float(m["seconds"])} for m in map(TASK_TIME.match, tail.splitlines()) if m]
    return sorted(tasks, key=lambda t: -t["seconds"])[:count]


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(command: list[str], timeout: float, log: Path) -> tuple[int, float, float, str]:
    """Exit code, wall seconds, CPU seconds (user + system of the whole process tree) and output of `command`
    in the repository; killed as a group on timeout."""
    env = {**os.environ, "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks"}  # per-task times
    cpu_before = _children_cpu_seconds()
    started = time.perf_counter()
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = process.wait(timeout=max(1.0, timeout))
        except BaseException:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            raise
    wall = time.perf_counter() - started
    return code, wall, _children_cpu_seconds() - cpu_before, log.read_text(errors="replace")


def timed_make_lab(label: str, deadline: Deadline, logs: Path) -> dict[str, Any]:
    print(f"{label}: make lab", flush=True)
    log = logs / f"make-lab-{label}.log"
    load = round(os.getloadavg()[0], 2)
    try:
        code, seconds, cpu_seconds, output = run(["make", "lab"], deadline.left(), log)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{label} `make lab` did not finish within --max-seconds {deadline.seconds:g}") from exc
    if code != 0:
        tail = "\n".join(output.splitlines()[-15:])
        raise BenchError(f"{label} `make lab` failed (exit {code}), log {log}:\n{tail}")
    recap = parse_recap(output)
    if not recap:
        raise BenchError(f"{label} `make lab` printed no PLAY RECAP (log {log})")
    changed = sum(h.get("changed", 0) for h in recap.values())
    print(f"  {seconds:.1f} s ({cpu_seconds:.1f} s of CPU), changed={changed} over {len(recap)} hosts", flush=True)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "load_average_at_start": load,
        "changed": changed,
        "recap": recap,
        "slowest_tasks": slowest_tasks(output),
    }


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run whose wall time is the median (the lower middle one of an even count)."""
    return sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2]


def plot(result: dict[str, Any], path: Path) -> Path:
    plt = pyplot()
    fig, axis = plt.subplots(figsize=(7.5, 3.8))
    runs = [result[key] for key, _ in RUNS]
    for offset, key, name, colour in ((-0.2, "seconds", "wall time", "tab:blue"),
                                      (0.2, "cpu_seconds", "CPU time", "tab:orange")):  # fmt: skip
        bars = axis.bar([i + offset for i in range(len(runs))], [r[key] for r in runs], 0.4, color=colour, label=name)
        axis.bar_label(bars, fmt="%.0f s", fontsize=8)
    axis.axhline(runs[0]["seconds"] * TARGET_RATIO, color="grey", linestyle="--", label="40 % of the first (wall)")
    ticks = [f"{label}, changed={r['changed']}" for (_, label), r in zip(RUNS, runs, strict=True)]
    axis.set_xticks(range(len(runs)), ticks, fontsize=8)
    axis.set_ylabel("seconds")
    axis.set_title("make lab")
    axis.legend(fontsize=8, loc="upper right")
    axis.set_ylim(0, max(max(r["seconds"], r["cpu_seconds"]) for r in runs) * 1.3)
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-seconds", type=float, default=1800, help="bound on every run together")
    parser.add_argument("--rounds", type=int, default=3, help="first and second runs, each from a fresh lab")
    parser.add_argument("--lock-wait", type=float, default=1800, help="how long to wait for the lab lock")
    parser.add_argument("--out", default=str(RESULTS_DIR / "playbook.json"))
    parser.add_argument("--plot", default=str(PLOTS_DIR / "playbook.svg"))
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if os.geteuid() != 0:
        parser.error("needs root: the lab builds network namespaces")
    return run_main("playbook benchmark", lambda: measure(args, argv))


def measure(args: argparse.Namespace, argv: list[str] | None) -> int:
    logs = Path(args.out).parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "benchmark": "playbook",
        "command": "python -m benchmarks.playbook " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_facts(),
    }
    with lab_lock(args.lock_wait):
        deadline = Deadline(args.max_seconds)  # counted once the lab is ours
        code, *_ = run(["make", "deps"], deadline.left(), logs / "make-deps.log")
        if code != 0:
            raise BenchError(f"make deps failed: see {logs / 'make-deps.log'}")
        was_down = "the lab is down" in dpumesh("lab", "status")
        dpumesh("lab", "down")
        shutil.rmtree(LAB_OUTPUTS, ignore_errors=True)
        finished = False
        rounds = []
        try:
            for number in range(1, args.rounds + 1):
                dpumesh("lab", "down")
                shutil.rmtree(LAB_OUTPUTS, ignore_errors=True)
                first = timed_make_lab(f"first-{number}", deadline, logs)
                rounds.append({"first": first, "second": timed_make_lab(f"second-{number}", deadline, logs)})
            dpumesh("lab", "down")
            result["after_lab_down"] = timed_make_lab("after_lab_down", deadline, logs)
            finished = True
        finally:
            if was_down or not finished:
                dpumesh("lab", "down")  # as it was, or at least not half built
    # Wall time varies by a tenth between runs on a shared machine: each of first and second is the round whose
    # time is the median, and the ratio is of the medians.
    result["first"] = median_run([r["first"] for r in rounds])
    result["second"] = median_run([r["second"] for r in rounds])
    result["rounds"] = [
        {key: {"seconds": r[key]["seconds"], "cpu_seconds": r[key]["cpu_seconds"], "changed": r[key]["changed"]}
         for key in ("first", "second")}
        for r in rounds
    ]  # fmt: skip
    result["round_ratios"] = [r["second"]["seconds"] / r["first"]["seconds"] for r in rounds]
    first, second = result["first"], result["second"]
    result["ratio"] = second["seconds"] / first["seconds"]
    result["cpu_ratio"] = second["cpu_seconds"] / first["cpu_seconds"]
    rerun = result["after_lab_down"]
    result["ratio_to_after_lab_down"] = second["seconds"] / rerun["seconds"]
    result["cpu_ratio_to_after_lab_down"] = second["cpu_seconds"] / rerun["cpu_seconds"]
    result["idempotent"] = all(r["second"]["changed"] == 0 for r in rounds)
    result["meets_target"] = result["ratio"] <= TARGET_RATIO and result["idempotent"]
    write_json(args.out, result)
    plot(result, Path(args.plot))
    ratios = ", ".join(f"{r:.0%}" for r in result["round_ratios"])
    print(f"{len(rounds)} rounds; second / first per round: {ratios}; medians:")
    print(
        f"first {first['seconds']:.1f} s ({first['cpu_seconds']:.1f} s CPU), second {second['seconds']:.1f} s "
        f"({second['cpu_seconds']:.1f} s CPU): {result['ratio']:.0%} of the first in wall time, "
        f"{result['cpu_ratio']:.0%} in CPU time; second run changed={second['changed']}; after lab down "
        f"{rerun['seconds']:.1f} s ({rerun['cpu_seconds']:.1f} s CPU), the second run is "
        f"{result['ratio_to_after_lab_down']:.0%} of it"
    )
    print(f"wrote {args.out} and {args.plot}")
    return 0 if result["idempotent"] else 1


if __name__ == "__main__":
    sys.exit(main())
