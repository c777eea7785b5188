"""Render a steering model for a DPU dataplane backend: `linux` (nftables + policy routing) or `vpp`."""

from __future__ import annotations

import json
from pathlib import Path

from dpumesh.dataplane.model import SteeringModel, parse_steering


def load_steering(path: str | Path) -> SteeringModel:
    """The steering model in a steering.json file."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        from dpumesh.errors import DpumeshError

        raise DpumeshError(f"cannot read steering model {path}: {exc}") from exc
    return parse_steering(data)


__all__ = ["SteeringModel", "load_steering", "parse_steering"]
