"""Playbook wall time: `make lab` from a lab that is down, then again on the lab it just built.

The venv is brought up to date first (`make deps`, not timed), so both runs time the playbook alone.

The second run must change nothing (every host `changed=0` in the PLAY RECAP) and should take at most 40 %
of the first. The lab is shared by everything on this machine, so the whole run holds /tmp/dpumesh-lab.lock
(the lock `flock` takes); a lab that was down before is taken down again afterwards.

    python -m benchmarks.playbook --max-seconds 1800
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.common import (
    PLOTS_DIR,
    REPO,
    RESULTS_DIR,
    Deadline,
    machine_facts,
    pyplot,
    save_figure,
    sigterm_as_interrupt,
    write_json,
)

LOCK = Path("/tmp/dpumesh-lab.lock")
RECAP_LINE = re.compile(r"^(?P<host>\S+)\s*:\s*(?P<counts>(?:\w+=\d+\s*)+)$")
# ansible.posix.profile_tasks' summary: "role : task name ---------- 12.34s"
TASK_TIME = re.compile(r"^(?P<task>\S.*?) -+ ?(?P<seconds>\d+\.\d+)s$")
TARGET_RATIO = 0.4


class BenchError(RuntimeError):
    """The playbook benchmark could not measure."""


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


@contextlib.contextmanager
def lab_lock(wait_seconds: float) -> Iterator[None]:
    with LOCK.open("a") as handle:
        give_up = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > give_up:
                    raise BenchError(f"{LOCK} stayed locked for {wait_seconds:g} s (the lab is in use)") from None
                time.sleep(2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run(command: list[str], timeout: float, log: Path) -> tuple[int, float, str]:
    """Exit code, wall seconds and output of `command` in the repository; killed as a group on timeout."""
    env = {**os.environ, "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks"}  # per-task times
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
    return code, time.perf_counter() - started, log.read_text(errors="replace")


def dpumesh(*args: str) -> str:
    done = subprocess.run([str(REPO / ".venv" / "bin" / "dpumesh"), *args], capture_output=True, text=True,
                          timeout=600, check=False, cwd=REPO)  # fmt: skip
    if done.returncode != 0:
        raise BenchError(f"dpumesh {' '.join(args)} failed: {(done.stderr or done.stdout).strip()[-500:]}")
    return done.stdout


def timed_make_lab(label: str, deadline: Deadline, logs: Path) -> dict[str, Any]:
    print(f"{label}: make lab", flush=True)
    log = logs / f"make-lab-{label}.log"
    try:
        code, seconds, output = run(["make", "lab"], deadline.left(), log)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{label} `make lab` did not finish within --max-seconds {deadline.seconds:g}") from exc
    if code != 0:
        tail = "\n".join(output.splitlines()[-15:])
        raise BenchError(f"{label} `make lab` failed (exit {code}), log {log}:\n{tail}")
    recap = parse_recap(output)
    if not recap:
        raise BenchError(f"{label} `make lab` printed no PLAY RECAP (log {log})")
    changed = sum(h.get("changed", 0) for h in recap.values())
    print(f"  {seconds:.1f} s, changed={changed} over {len(recap)} hosts", flush=True)
    return {"seconds": seconds, "changed": changed, "recap": recap, "slowest_tasks": slowest_tasks(output)}


def plot(result: dict[str, Any], path: Path) -> Path:
    plt = pyplot()
    fig, axis = plt.subplots(figsize=(6, 3.5))
    labels = ["first run\n(lab down)", "second run\n(idempotent)"]
    values = [result["first"]["seconds"], result["second"]["seconds"]]
    bars = axis.bar(labels, values, color=["tab:blue", "tab:green"])
    for bar, run_ in zip(bars, (result["first"], result["second"]), strict=True):
        axis.annotate(f"{bar.get_height():.0f} s, changed={run_['changed']}", (bar.get_x() + bar.get_width() / 2,
                      bar.get_height()), ha="center", va="bottom", fontsize=9)  # fmt: skip
    axis.axhline(values[0] * TARGET_RATIO, color="grey", linestyle="--", label="target: 40 % of the first run")
    axis.set_ylabel("wall time (s)")
    axis.set_title("make lab")
    axis.legend(fontsize=8, loc="upper right")
    axis.set_ylim(0, max(values) * 1.25)
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-seconds", type=float, default=1800, help="bound on both runs together")
    parser.add_argument("--lock-wait", type=float, default=1800, help="how long to wait for the lab lock")
    parser.add_argument("--out", default=str(RESULTS_DIR / "playbook.json"))
    parser.add_argument("--plot", default=str(PLOTS_DIR / "playbook.svg"))
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root: the lab builds network namespaces")
    logs = Path(args.out).parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "benchmark": "playbook",
        "command": "python -m benchmarks.playbook " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_facts(),
    }
    try:
        with sigterm_as_interrupt(), lab_lock(args.lock_wait):
            deadline = Deadline(args.max_seconds)  # counted once the lab is ours
            code, _, _ = run(["make", "deps"], deadline.left(), logs / "make-deps.log")
            if code != 0:
                raise BenchError(f"make deps failed: see {logs / 'make-deps.log'}")
            was_down = "the lab is down" in dpumesh("lab", "status")
            dpumesh("lab", "down")
            finished = False
            try:
                result["first"] = timed_make_lab("first", deadline, logs)
                result["second"] = timed_make_lab("second", deadline, logs)
                finished = True
            finally:
                if was_down or not finished:
                    dpumesh("lab", "down")  # as it was, or at least not half built
    except BenchError as exc:
        print(f"playbook benchmark: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("playbook benchmark: interrupted", file=sys.stderr)
        return 130
    result["ratio"] = result["second"]["seconds"] / result["first"]["seconds"]
    result["idempotent"] = result["second"]["changed"] == 0
    result["meets_target"] = result["ratio"] <= TARGET_RATIO and result["idempotent"]
    write_json(args.out, result)
    plot(result, Path(args.plot))
    print(
        f"first {result['first']['seconds']:.1f} s, second {result['second']['seconds']:.1f} s "
        f"({result['ratio']:.0%} of the first), second run changed={result['second']['changed']}"
    )
    print(f"wrote {args.out} and {args.plot}")
    return 0 if result["idempotent"] else 1


if __name__ == "__main__":
    sys.exit(main())
