"""A small process supervisor for the lab (the machine has no systemd).

`run_supervisor` is the daemon (`dpumesh lab supervise`): it keeps every
program listed in programs.json running, restarts one that exits with
exponential backoff, stops programs that leave the list, restarts those whose
spec changed, writes status.json, and on SIGTERM stops all of them and exits.

A spec with `hot_restart` (Envoy) is replaced without a gap when it changes
and its `hot_restart` key stays the same: the new process starts with the next
restart epoch (`{epoch}` in its argv) while the old one still runs, takes over
its listening sockets and tells it to drain and exit.
The other functions are the client side used by `lab apply`, `status` and `down`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpumesh.errors import DpumeshError
from dpumesh.lab.paths import lab_dir, logs_dir

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 30.0  # a program running this long has its backoff reset
STOP_GRACE = 5.0
POLL = 0.2
DRAIN_LIMIT = 30.0  # an old hot-restart generation still alive after this is killed


def programs_file() -> Path:
    return lab_dir() / "supervisor" / "programs.json"


def status_file() -> Path:
    return lab_dir() / "supervisor" / "status.json"


def pid_file() -> Path:
    return lab_dir() / "supervisor" / "supervisor.pid"


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)


def _read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return default


@dataclass
class _Draining:
    process: subprocess.Popen
    epoch: int
    argv: list[str]
    until: float


@dataclass
class _Child:
    spec: dict[str, Any]
    process: subprocess.Popen | None = None
    started: float = 0.0
    restarts: int = 0
    failures_in_row: int = 0
    next_start: float = 0.0
    last_exit: int | None = None
    epoch: int = 0
    draining: list[_Draining] = field(default_factory=list)
    log: Any = field(default=None, repr=False)

    @property
    def argv(self) -> list[str]:
        return [part.replace("{epoch}", str(self.epoch)) for part in self.spec["argv"]]

    def start(self, name: str) -> None:
        self.reap()
        # The next epoch while an older generation runs (it hands over its sockets), else a fresh start.
        self.epoch = max(d.epoch for d in self.draining) + 1 if self.draining else 0
        for old in self.draining:  # it must outlive the handover to this generation
            old.until = time.monotonic() + DRAIN_LIMIT
        log_path = Path(self.spec["log"])
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.log:
            self.log.close()
        self.log = log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopping it stops its children too
            env={**os.environ, **self.spec.get("env", {})},
        )
        self.started = time.monotonic()
        _say(f"started {name} (pid {self.process.pid}, epoch {self.epoch})")

    def hot_restart(self, name: str, spec: dict[str, Any]) -> None:
        """Start `spec` next to the running generation, which drains and exits once the new one is up."""
        if self.process is not None and self.process.poll() is None:
            self.draining.append(_Draining(self.process, self.epoch, self.argv, time.monotonic() + DRAIN_LIMIT))
        self.process, self.spec = None, spec
        self.failures_in_row, self.next_start, self.last_exit = 0, 0.0, None
        _say(f"hot restart of {name}")
        self.start(name)

    def reap(self) -> None:
        """Forget drained generations that exited; kill those that outstay DRAIN_LIMIT once a new one runs."""
        now = time.monotonic()
        taken_over = self.process is not None and self.process.poll() is None
        for old in list(self.draining):
            if old.process.poll() is None and now > old.until and taken_over:
                _kill(old.process)
            if old.process.poll() is not None:
                self.draining.remove(old)

    def stop(self, name: str) -> None:
        for old in self.draining:
            _kill(old.process)
        self.draining.clear()
        if self.process is None:
            return
        _kill(self.process)
        _say(f"stopped {name}")
        self.process = None
        if self.log:
            self.log.close()


def _kill(process: subprocess.Popen) -> None:
    """SIGTERM its process group, SIGKILL after STOP_GRACE, and reap it."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    with contextlib.suppress(ProcessLookupError):  # leftovers of its group
        os.killpg(process.pid, signal.SIGKILL)


def _say(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}", flush=True)


def run_supervisor() -> int:
    """The daemon loop; returns when SIGTERM/SIGINT arrives, after stopping every child."""
    pid_file().parent.mkdir(parents=True, exist_ok=True)
    pid_file().write_text(str(os.getpid()))
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    children: dict[str, _Child] = {}
    _say("supervisor running")
    try:
        while not stopping:
            wanted = _read_json(programs_file(), {})
            for name in sorted(set(children) - set(wanted)):
                children.pop(name).stop(name)
            for name, spec in wanted.items():
                child = children.get(name)
                if child is not None and child.spec != spec:
                    if _hot_restartable(child.spec, spec):
                        child.hot_restart(name, spec)
                    else:
                        child.stop(name)
                        child = None
                if child is None:
                    child = children[name] = _Child(spec)
                _tend(name, child)
            _write_json(status_file(), {n: _status(c) for n, c in children.items()})
            time.sleep(POLL)
    finally:
        for name, child in children.items():
            child.stop(name)
        _write_json(status_file(), {})
        with contextlib.suppress(OSError):
            pid_file().unlink()
        _say("supervisor stopped")
    return 0


def _hot_restartable(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return bool(new.get("hot_restart")) and old.get("hot_restart") == new.get("hot_restart")


def _tend(name: str, child: _Child) -> None:
    now = time.monotonic()
    child.reap()
    if child.process is not None:
        code = child.process.poll()
        if code is None:
            if now - child.started > STABLE_AFTER:
                child.failures_in_row = 0
            return
        child.last_exit = code
        child.process = None
        child.log.close()
        delay = min(BACKOFF_FIRST * 2**child.failures_in_row, BACKOFF_MAX)
        child.failures_in_row += 1
        child.next_start = now + delay
        _say(f"{name} exited with {code}; restarting in {delay:.1f} s")
        return
    if now >= child.next_start:
        if child.last_exit is not None:
            child.restarts += 1
        child.start(name)


def _status(child: _Child) -> dict[str, Any]:
    running = child.process is not None and child.process.poll() is None
    return {
        "pid": child.process.pid if running and child.process else None,
        "state": "running" if running else "backoff",
        "restarts": child.restarts,
        "last_exit": child.last_exit,
        "argv": child.argv,
        "spec_argv": child.spec["argv"],
        "env": child.spec.get("env", {}),
        "epoch": child.epoch,
        "draining": [{"pid": d.process.pid, "argv": d.argv} for d in child.draining],
    }


# -- client side ---------------------------------------------------------------------------------
def supervisor_pid() -> int | None:
    try:
        pid = int(pid_file().read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if Path(f"/proc/{pid}").exists() else []
    return pid if any(b"dpumesh.lab.supervisor" in part for part in cmdline) else None


def ensure_supervisor() -> int:
    """The supervisor's pid, starting it detached when it is not running."""
    pid = supervisor_pid()
    if pid:
        return pid
    logs_dir().mkdir(parents=True, exist_ok=True)
    with (logs_dir() / "supervisor.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "dpumesh.lab.supervisor"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "DPUMESH_LAB_DIR": str(lab_dir())},
        )
    for _ in range(50):
        if supervisor_pid() == process.pid:
            return process.pid
        if process.poll() is not None:
            raise DpumeshError(f"the lab supervisor exited at once; see {logs_dir() / 'supervisor.log'}")
        time.sleep(0.1)
    raise DpumeshError("the lab supervisor did not start within 5 s")


def set_programs(programs: dict[str, dict[str, Any]]) -> None:
    """Replace the supervised program list (name -> {argv, log, env})."""
    _write_json(programs_file(), programs)


def current_programs() -> dict[str, dict[str, Any]]:
    return _read_json(programs_file(), {})


def program_status() -> dict[str, dict[str, Any]]:
    return _read_json(status_file(), {})


def wait_for_programs(names: set[str], timeout: float = 20.0) -> dict[str, dict[str, Any]]:
    """Status of `names` once each runs the current spec (DpumeshError after `timeout`)."""
    deadline = time.monotonic() + timeout
    wanted = _read_json(programs_file(), {})
    restarts: dict[str, int] = {}
    while True:
        status = program_status()
        ready = {n for n in names if _runs_spec(status.get(n, {}), wanted[n])}
        if ready == names:
            return status
        for name in names - ready:  # exiting again after a restart is not a start-up delay
            info = status.get(name, {})
            if info.get("spec_argv") == wanted[name]["argv"] and info.get("state") == "backoff":
                first = restarts.setdefault(name, info.get("restarts", 0))
                if info.get("restarts", 0) > first:
                    log = wanted[name]["log"]
                    raise DpumeshError(f"{name} keeps exiting (last exit {info.get('last_exit')}; see {log})")
        if time.monotonic() > deadline:
            late = ", ".join(sorted(names - ready))
            raise DpumeshError(f"lab programs not running after {timeout:.0f} s: {late} (logs in {logs_dir()})")
        time.sleep(POLL)


def _runs_spec(status: dict[str, Any], spec: dict[str, Any]) -> bool:
    """The program runs `spec` (older hot-restart generations may still be draining)."""
    same = status.get("spec_argv") == spec["argv"] and status.get("env") == spec.get("env", {})
    return same and status.get("state") == "running"


def stop_supervisor(timeout: float = 30.0) -> None:
    """Stop the supervisor and with it every program (nothing happens when it is not running)."""
    pid = supervisor_pid()
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while supervisor_pid() == pid and time.monotonic() < deadline:
            time.sleep(POLL)
    # A supervisor killed hard leaves its children: stop any that status.json still names.
    for info in program_status().values():
        for child in [{"pid": info.get("pid"), "argv": info.get("argv", [])}, *info.get("draining", [])]:
            if child["pid"] and _is_program(child["pid"], child["argv"]):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child["pid"], signal.SIGKILL)


def _is_program(pid: int, argv: list[str]) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    except OSError:
        return False
    if argv[:3] == ["ip", "netns", "exec"]:
        argv = argv[4:]  # ip netns exec replaces itself with the command
    return [c.decode(errors="replace") for c in cmdline] == argv


if __name__ == "__main__":
    sys.exit(run_supervisor())
