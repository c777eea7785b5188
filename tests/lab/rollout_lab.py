"""Helpers of the rollout tests: lab states derived from examples/lab-app, request streams, the lab CLI."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dpumesh.lab import paths

APP = Path(__file__).parents[2] / "examples" / "lab-app"
CLIENT = Path(__file__).parent / "rollout_client.py"


def dpumesh(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-c", "from dpumesh.cli import main; raise SystemExit(main())", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def in_pod(pod: str, *cmd: str) -> subprocess.CompletedProcess:
    return dpumesh("lab", "exec", pod, "--", *cmd, timeout=30)


def pod_ips() -> dict[str, str]:
    return {key: pod["ip"] for key, pod in json.loads((paths.lab_dir() / "state.json").read_text())["pods"].items()}


# -- states -----------------------------------------------------------------------------------
class State:
    """The objects of examples/lab-app, changed in place and written out as one state directory."""

    def __init__(self) -> None:
        self.docs = [d for f in sorted(APP.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]

    def get(self, kind: str, namespace: str, name: str) -> dict:
        return next(
            d
            for d in self.docs
            if d["kind"] == kind and d["metadata"]["name"] == name and d["metadata"].get("namespace") == namespace
        )

    def add(self, doc: dict) -> None:
        self.docs.append(doc)

    def remove(self, kind: str, namespace: str, name: str) -> None:
        self.docs.remove(self.get(kind, namespace, name))

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("*.yaml"):
            old.unlink()
        (directory / "state.yaml").write_text(yaml.safe_dump_all(self.docs, sort_keys=False))
        return directory

    def catalog_routes(self) -> list[dict]:
        return self.get("VirtualService", "shop", "catalog")["spec"]["http"]

    def add_catalog_version(self, version: str, node: str) -> None:
        """A catalog Deployment of `version` on `node` and its DestinationRule subset."""
        deployment = copy.deepcopy(self.get("Deployment", "shop", "catalog-v1"))
        deployment["metadata"]["name"] = f"catalog-{version}"
        deployment["spec"]["selector"]["matchLabels"]["version"] = version
        deployment["spec"]["template"]["metadata"]["labels"]["version"] = version
        deployment["spec"]["template"]["spec"]["nodeName"] = node
        self.add(deployment)
        subsets = self.get("DestinationRule", "shop", "catalog")["spec"]["subsets"]
        subsets.append({"name": version, "labels": {"version": version}})


def header_route(header: str, value: str, subset: str) -> dict:
    return {
        "match": [{"headers": {header: {"exact": value}}}],
        "route": [{"destination": {"host": "catalog", "subset": subset}}],
    }


# -- request streams --------------------------------------------------------------------------
@dataclass
class Stream:
    """Requests from one pod in a loop (20 ms apart), a new connection each, every one recorded."""

    pod: str
    requests: list[dict]
    directory: Path
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def out(self) -> Path:
        return self.directory / f"{self.pod.replace('/', '-')}.jsonl"

    @property
    def stop_file(self) -> Path:
        return self.directory / f"{self.pod.replace('/', '-')}.stop"

    def start(self) -> None:
        config = self.directory / f"{self.pod.replace('/', '-')}.json"
        config.write_text(json.dumps({"requests": self.requests, "out": str(self.out), "stop": str(self.stop_file)}))
        namespace, name = self.pod.split("/")
        argv = ["ip", "netns", "exec", paths.pod_netns(namespace, name), sys.executable, str(CLIENT), str(config)]
        with (self.directory / f"{self.pod.replace('/', '-')}.err").open("w") as errors:
            self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=errors)

    def stop(self) -> None:
        self.stop_file.touch()
        if self.process is not None:
            self.process.wait(15)

    def records(self, since: float = 0.0, until: float = float("inf")) -> list[dict]:
        lines = self.out.read_text().splitlines() if self.out.exists() else []
        return [r for r in map(json.loads, lines) if since <= r["t"] <= until]


def summary(streams: list[Stream], since: float, until: float = float("inf")) -> dict:
    """Requests sent and failed by every stream in the window, with the first few failures."""
    records = [{**r, "from": s.pod} for s in streams for r in s.records(since, until)]
    failed = [r for r in records if not r["ok"]]
    examples = [{**r, "t": round(r["t"] - since, 2)} for r in failed[:5]]
    return {"sent": len(records), "failed": len(failed), "examples": examples}


def wait_for_requests(streams: list[Stream], since: float, count: int = 20, timeout: float = 30) -> None:
    """Until every stream has answered `count` requests sent after `since`."""
    deadline = time.monotonic() + timeout
    while any(len(s.records(since)) < count for s in streams):
        dead = {s.pod: s.process.returncode for s in streams if s.process and s.process.poll() is not None}
        assert time.monotonic() < deadline and not dead, f"the request streams do not run (exited: {dead})"
        time.sleep(0.1)


def time_to_effect(check: Callable[[], bool], timeout: float = 10.0) -> float:
    """Seconds until `check` holds (it is asked every 0.1 s); fails after `timeout`."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, "the change did not take effect"
        time.sleep(0.1)
    return time.monotonic() - started


def status_code(pod: str, url: str, *headers: str) -> int:
    """The HTTP status a request from `pod` gets (0 without an answer)."""
    argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5"]
    done = in_pod(pod, *argv, *[part for h in headers for part in ("-H", h)], url)
    return int(done.stdout or 0)


def answers(pod: str, url: str, *headers: str, count: int = 1) -> list[dict]:
    """The JSON answers of `count` requests from `pod` in one curl run (fewer when some got none)."""
    argv = ["curl", "-s", "-m", "5", *[part for h in headers for part in ("-H", h)], *[url] * count]
    text, found, decoder = in_pod(pod, *argv).stdout, [], json.JSONDecoder()
    position = 0
    while (start := text.find("{", position)) >= 0:
        try:
            value, position = decoder.raw_decode(text, start)
        except ValueError:
            break
        found.append(value)
    return found


def answer(pod: str, url: str, *headers: str) -> dict:
    """The JSON answer of a request from `pod` ({} when it got none)."""
    return next(iter(answers(pod, url, *headers)), {})
