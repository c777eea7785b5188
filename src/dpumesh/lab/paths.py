"""Names and places of everything the lab creates, so `apply` and `down` agree on them."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

PREFIX = "dpumesh-"
FABRIC_NETNS = "dpumesh-fabric"
FABRIC_BRIDGE = "br-fabric"
FABRIC_DEVICE = "fabric0"  # the DPU's fabric port, in the DPU namespace
POD_DEVICE = "eth0"  # the VF as the pod sees it
NETNS_RUN = Path("/run/netns")  # one entry per named namespace: what `ip netns list` lists
NETNS_ETC = Path("/etc/netns")  # `ip netns exec` bind-mounts /etc/netns/<netns>/* over /etc
_NETNS_MAX = 64


def lab_dir() -> Path:
    """Runtime directory of the lab (state file, configs, logs, supervisor)."""
    return Path(os.environ.get("DPUMESH_LAB_DIR", "/run/dpumesh-lab"))


def _fit(name: str, limit: int) -> str:
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9]}-{digest}"


def _clean(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", text)


def dpu_netns(node: str) -> str:
    return _fit(f"{PREFIX}{_clean(node)}-dpu", _NETNS_MAX)


def pod_netns(namespace: str, name: str) -> str:
    return _fit(f"{PREFIX}{_clean(namespace)}-{_clean(name)}", _NETNS_MAX)


def fabric_port(node: str) -> str:
    """The bridge port of a node's DPU in the fabric namespace (interface names: 15 bytes)."""
    return _fit(f"f-{_clean(node)}", 15)


def node_dir(node: str) -> Path:
    return lab_dir() / "nodes" / node


def proxy_dir(node: str) -> Path:
    return node_dir(node) / "proxy"


def cert_dir(node: str) -> Path:
    return node_dir(node) / "certs"


def pod_dir(namespace: str, name: str) -> Path:
    return lab_dir() / "pods" / namespace / name


def created_netns_file() -> Path:
    """The network namespaces the lab created: `down` removes these and no others."""
    return lab_dir() / "netns.json"


def logs_dir() -> Path:
    return lab_dir() / "logs"
