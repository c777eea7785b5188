"""What every benchmark shares: machine facts, result files, plots and a deadline."""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import multiprocessing
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "benchmarks" / "results"
PLOTS_DIR = REPO / "docs" / "benchmarks"
BIN = Path(sys.executable).parent  # the venv's: envoy, dpumesh, ansible-playbook
LAB_LOCK = Path("/tmp/dpumesh-lab.lock")


class BenchError(RuntimeError):
    """A benchmark could not measure (a proxy refused its config, the lab stayed busy, ...)."""


def _run(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False, cwd=REPO)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def envoy_version() -> str:
    from dpumesh.bundle import envoy_binary
    from dpumesh.errors import DpumeshError

    try:
        text = _run([envoy_binary(), "--version"])
    except DpumeshError:
        return "not found"
    # "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL": keep the release number.
    parts = text.split("version:", 1)[-1].strip().split("/")
    return parts[1] if len(parts) > 1 else text or "unknown"


def machine_facts() -> dict[str, Any]:
    commit = _run(["git", "rev-parse", "HEAD"])
    dirty = bool(_run(["git", "status", "--porcelain", "--", "src", "benchmarks"]))
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "memory_total_kib": _meminfo_total(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "envoy_version": envoy_version(),
        "git_commit": commit + ("+local-changes" if dirty else ""),
        "started_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _meminfo_total() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    return path


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "dpumesh"  # stable element ids: re-running does not churn the SVG
    plt.rcParams["svg.fonttype"] = "none"
    return plt


def save_figure(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, metadata={"Date": None})
    return path


class Deadline:
    """A time bound for a whole benchmark run."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def passed(self) -> bool:
        return self.left() <= 0


def run_bounded(target, args: tuple, deadline: Deadline, on_event) -> str:
    """Run `target(*args, report)` in a forked child, passing each reported (kind, data) to `on_event`.

    Returns "" when the child finished, else why it did not (the deadline, an exception, a crash);
    the child is killed when the deadline passes or the caller is interrupted.
    """
    ctx = multiprocessing.get_context("fork")
    # A pipe, not a Queue: a Queue's put starts a feeder thread in the child, and the compiler forks a helper
    # only in a process without other threads (dpumesh.compiler.vhost_helper).
    events, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_bounded_child, args=(target, args, sender), daemon=True)
    child.start()
    sender.close()
    try:
        while True:
            if not events.poll(max(0.1, min(5.0, deadline.left()))):
                if deadline.passed():
                    return f"--max-seconds {deadline.seconds:g} reached"
                if not child.is_alive():
                    return f"the benchmark process died (exit code {child.exitcode})"
                continue
            try:
                kind, data = events.recv()
            except EOFError:
                child.join(10)
                return f"the benchmark process died (exit code {child.exitcode})"
            if kind == "_done":
                child.join(30)  # let it flush and exit on its own
                return ""
            if kind == "_error":
                return data["message"]
            on_event(kind, data)
    finally:
        if child.is_alive():
            child.terminate()
        child.join(10)
        if child.is_alive():
            child.kill()
            child.join()
        events.close()


def _bounded_child(target, args: tuple, events) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handler: the parent cleans up, the child just ends
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which then ends the child
    try:
        target(*args, lambda kind, data: events.send((kind, data)))
        events.send(("_done", {}))
    except Exception as exc:  # reported to the parent, which records it in the result
        events.send(("_error", {"message": f"{type(exc).__name__}: {exc}"}))


def stop_processes(processes: list[subprocess.Popen], group: bool = False, grace: float = 10.0) -> None:
    """SIGTERM each running process (its whole process group with `group`), SIGKILL what is left after `grace` s."""

    def signal_(process: subprocess.Popen, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(process.pid, signum)
            else:
                process.send_signal(signum)

    for process in processes:
        if process.poll() is None:
            signal_(process, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            signal_(process, signal.SIGKILL)
            process.wait()


def dpumesh(*args: str, timeout: float = 600) -> str:
    """The dpumesh CLI of this venv (the lab's public interface): its output, or BenchError with its message."""
    try:
        done = subprocess.run([str(BIN / "dpumesh"), *args], capture_output=True, text=True, timeout=timeout,
                              check=False, cwd=REPO)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise BenchError(f"dpumesh {' '.join(args)} did not finish within {timeout:g} s") from None
    if done.returncode != 0:
        raise BenchError(f"dpumesh {' '.join(args)} failed: {(done.stderr or done.stdout).strip()[-2000:]}")
    return done.stdout


def _ancestors() -> set[int]:
    found, pid = set(), os.getppid()
    while pid > 1 and pid not in found:
        found.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return found


def lab_lock_held_by_caller() -> bool:
    """Whether a process we run under (`flock /tmp/dpumesh-lab.lock python -m ...`) holds the lab lock."""
    inode, callers = LAB_LOCK.stat().st_ino, _ancestors()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()  # "1: FLOCK ADVISORY WRITE <pid> <major>:<minor>:<inode> 0 EOF"
        if len(fields) < 6 or fields[1] != "FLOCK" or not fields[4].isdigit():
            continue
        if int(fields[4]) in callers and int(fields[5].rsplit(":", 1)[-1]) == inode:
            return True
    return False


@contextlib.contextmanager
def lab_lock(wait_seconds: float) -> Iterator[None]:
    """The shared lab lock (the one `flock` takes) for the block; kept as is when our caller holds it already."""
    with LAB_LOCK.open("a") as handle:
        if lab_lock_held_by_caller():
            yield
            return
        give_up, announced = time.monotonic() + wait_seconds, False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > give_up:
                    raise BenchError(f"{LAB_LOCK} stayed locked for {wait_seconds:g} s (the lab is in use)") from None
                if not announced:
                    print(f"waiting up to {wait_seconds:g} s for {LAB_LOCK} (another lab user holds it)", flush=True)
                    announced = True
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_main(name: str, body: Callable[[], int], interrupted: str = "") -> int:
    """A benchmark's main: the venv's tools first on PATH, SIGTERM unwinding like Ctrl-C (every cleanup runs),
    and a one-line reason instead of a traceback when it cannot measure."""
    from dpumesh.errors import DpumeshError

    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    try:
        with sigterm_as_interrupt():
            return body()
    except (BenchError, DpumeshError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted" + (f"; {interrupted}" if interrupted else ""), file=sys.stderr)
        return 130


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM unwinds like Ctrl-C, so every cleanup (`finally`) runs."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
