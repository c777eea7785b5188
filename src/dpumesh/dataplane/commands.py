"""Running ip/nft/bridge/sysctl, optionally inside a network namespace."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from dpumesh.errors import DpumeshError


def in_netns(args: list[str], netns: str | None) -> list[str]:
    if not netns:
        return list(args)
    if args[0] == "ip":  # ip enters the namespace itself: one process instead of two
        return ["ip", "-n", netns, *args[1:]]
    return ["ip", "netns", "exec", netns, *args]


def run(args: list[str], netns: str | None = None, *, check: bool = True, stdin: str | None = None) -> str:
    """stdout of `args` (run in `netns`); a failure raises DpumeshError with the command and its stderr."""
    argv = in_netns(args, netns)
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError as exc:
        raise DpumeshError(f"{args[0]} is not installed (needed for: {' '.join(args)})") from exc
    except subprocess.TimeoutExpired as exc:
        raise DpumeshError(f"{' '.join(argv)} did not finish within 60 s") from exc
    if check and done.returncode != 0:
        where = f" in network namespace {netns}" if netns else ""
        raise DpumeshError(f"{' '.join(args)}{where} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def ip_json(args: list[str], netns: str | None = None) -> list[dict[str, Any]]:
    """Parsed `ip -j ...` output (an empty list when ip prints nothing)."""
    out = run(["ip", "-j", *args], netns)
    return json.loads(out) if out.strip() else []
