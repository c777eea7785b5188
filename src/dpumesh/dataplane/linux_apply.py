"""Put a rendered `linux` dataplane into a network namespace, changing only what differs.

Owned objects are recognisable so stale ones can be removed: routes and rules
carry protocol ROUTE_PROTOCOL, the gateway address the label GATEWAY_LABEL,
the nftables table is `inet dpumesh` and the tunnel device VXLAN_DEVICE.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tempfile

from dpumesh.dataplane.commands import ip_json, run
from dpumesh.dataplane.linux import (
    GATEWAY_LABEL,
    ROUTE_PROTOCOL,
    TABLE,
    VXLAN_DEVICE,
    LinuxDataplane,
    Route,
    ruleset_digest,
)
from dpumesh.errors import DpumeshError


def apply_linux(dp: LinuxDataplane, netns: str | None = None, prune: bool = True) -> list[str]:
    """Make `netns` match `dp`; returns what was changed (empty when it already matched).

    With prune=False the routes and neighbours of pods `dp` no longer has stay, so pods on their way
    out keep answering until the proxies stop sending them requests; a later apply removes them.
    """
    links = {link["ifname"] for link in ip_json(["link", "show"], netns)}
    missing = [r for r in dp.representors if r not in links]
    if missing:
        raise DpumeshError(f"node {dp.node}: VF representors {', '.join(missing)} do not exist")
    changes: list[str] = []
    changes += _apply_sysctls(dp, netns)
    changes += _apply_gateway(dp, netns)
    changes += _apply_vxlan(dp, netns)
    changes += _apply_neighbours(dp, netns, prune)
    changes += _apply_routes(dp, netns, prune)
    changes += _apply_rules(dp, netns)
    changes += _apply_ruleset(dp, netns)
    return changes


def remove_linux(netns: str | None = None) -> None:
    """Remove everything apply_linux owns from `netns` (nothing happens when it is absent)."""
    run(["nft", "delete", "table", "inet", TABLE], netns, check=False)
    for rule in ip_json(["rule", "show"], netns):
        if rule.get("protocol") == str(ROUTE_PROTOCOL):
            run(["ip", "rule", "del", "priority", str(rule["priority"])], netns, check=False)
    run(["ip", "route", "flush", "table", "all", "proto", str(ROUTE_PROTOCOL)], netns, check=False)
    run(["ip", "link", "del", VXLAN_DEVICE], netns, check=False)


def _link_exists(name: str, netns: str | None) -> bool:
    return bool(run(["ip", "-o", "link", "show", "dev", name], netns, check=False).strip())


def _apply_sysctls(dp: LinuxDataplane, netns: str | None) -> list[str]:
    changed = []
    keys = list(dp.sysctls)
    found = dict(zip(keys, run(["sysctl", "-n", *keys], netns).splitlines(), strict=False)) if keys else {}
    for key, value in dp.sysctls.items():
        if found.get(key, "").strip() != value:
            run(["sysctl", "-q", "-w", f"{key}={value}"], netns)
            changed.append(f"sysctl {key}={value}")
    return changed


def _apply_gateway(dp: LinuxDataplane, netns: str | None) -> list[str]:
    want = f"{dp.gateway}/32"
    have = {
        f"{a['local']}/{a['prefixlen']}"
        for link in ip_json(["addr", "show", "dev", "lo"], netns)
        for a in link.get("addr_info", [])
        if a.get("label") == GATEWAY_LABEL
    }
    changed = []
    for stale in sorted(have - {want}):
        run(["ip", "addr", "del", stale, "dev", "lo"], netns)
        changed.append(f"removed gateway address {stale}")
    if want not in have:
        run(["ip", "addr", "add", want, "dev", "lo", "label", GATEWAY_LABEL], netns)
        changed.append(f"added gateway address {want}")
    return changed


def _apply_vxlan(dp: LinuxDataplane, netns: str | None) -> list[str]:
    existing = ip_json(["-d", "link", "show", "dev", VXLAN_DEVICE], netns) if _link_exists(VXLAN_DEVICE, netns) else []
    want = dp.vxlan
    if existing:
        data = existing[0].get("linkinfo", {}).get("info_data", {})
        same = want is not None and (data.get("id"), data.get("port"), data.get("local"), existing[0]["address"]) == (
            want.vni,
            want.dstport,
            want.local,
            want.mac,
        )
        if same and "UP" in existing[0].get("flags", []):
            return _apply_fdb(dp, netns)
        run(["ip", "link", "del", VXLAN_DEVICE], netns)
        if want is None:
            return [f"removed {VXLAN_DEVICE}"]
    if want is None:
        return []
    vxlan_args = ["id", str(want.vni), "dstport", str(want.dstport), "local", want.local, "nolearning"]
    # 50 bytes of VXLAN/UDP/IP/Ethernet headers must fit in the fabric's 1500.
    run(["ip", "link", "add", want.name, "mtu", "1450", "address", want.mac, "type", "vxlan", *vxlan_args], netns)
    run(["ip", "link", "set", want.name, "up"], netns)
    return [f"created {want.name} (vni {want.vni})", *_apply_fdb(dp, netns)]


def _apply_fdb(dp: LinuxDataplane, netns: str | None) -> list[str]:
    out = run(["bridge", "-j", "fdb", "show", "dev", VXLAN_DEVICE], netns)
    have = {(e["mac"], e.get("dst", "")) for e in (json.loads(out) if out.strip() else []) if e.get("dst")}
    want = {(e.mac, e.dst) for e in dp.fdb}
    changed = []
    for mac, dst in sorted(have - want):
        run(["bridge", "fdb", "del", mac, "dev", VXLAN_DEVICE, "dst", dst], netns)
        changed.append(f"removed tunnel peer {dst}")
    for mac, dst in sorted(want - have):
        run(["bridge", "fdb", "append", mac, "dev", VXLAN_DEVICE, "dst", dst], netns)
        changed.append(f"added tunnel peer {dst}")
    return changed


def _apply_neighbours(dp: LinuxDataplane, netns: str | None, prune: bool = True) -> list[str]:
    devices = set(dp.representors) | ({VXLAN_DEVICE} if dp.vxlan else set())
    have = {
        (n["dst"], n.get("lladdr", ""), n["dev"])
        for n in ip_json(["neigh", "show", "nud", "permanent"], netns)
        if n.get("dev") in devices
    }
    want = {(n.ip, n.mac, n.dev) for n in dp.neighbours}
    changed = []
    for ip, _mac, dev in sorted(have - want if prune else ()):
        run(["ip", "neigh", "del", ip, "dev", dev], netns)
        changed.append(f"removed neighbour {ip} on {dev}")
    for ip, mac, dev in sorted(want - have):
        run(["ip", "neigh", "replace", ip, "lladdr", mac, "dev", dev, "nud", "permanent"], netns)
        changed.append(f"set neighbour {ip} {mac} on {dev}")
    return changed


def _route_key(route: dict) -> tuple[str, str, str, str, str, str, bool]:
    dst = "0.0.0.0/0" if route["dst"] == "default" else str(ipaddress.ip_network(route["dst"]))
    return (
        str(route.get("table", "main")),
        route.get("type", "unicast"),
        dst,
        route.get("gateway", ""),
        route.get("dev", ""),
        route.get("prefsrc", ""),
        "onlink" in route.get("flags", []),
    )


def _wanted_key(route: Route, dev_of_gateway: dict[str, str]) -> tuple[str, str, str, str, str, str, bool]:
    dev = route.dev or dev_of_gateway.get(route.via, "")
    return (str(route.table), route.type, route.dst, route.via, dev, route.src, route.onlink)


def _apply_routes(dp: LinuxDataplane, netns: str | None, prune: bool = True) -> list[str]:
    have = {_route_key(r): r for r in ip_json(["route", "show", "table", "all", "proto", str(ROUTE_PROTOCOL)], netns)}
    gateways = {r.via for r in dp.routes if r.via and not r.dev}
    dev_of_gateway = {gw: _route_dev(gw, netns) for gw in gateways}
    want = {_wanted_key(r, dev_of_gateway): r for r in dp.routes}
    changed = []
    for key in sorted(set(have) - set(want) if prune else ()):
        table, type_, dst, *_ = key
        run(["ip", "route", "del", type_, dst, "table", table, "proto", str(ROUTE_PROTOCOL)], netns)
        changed.append(f"removed route {dst} (table {table})")
    for key in sorted(set(want) - set(have)):
        run(["ip", "route", "replace", *want[key].args()], netns)
        changed.append(f"set route {want[key].dst} (table {want[key].table})")
    return changed


def _route_dev(address: str, netns: str | None) -> str:
    found = ip_json(["route", "get", address], netns)
    return found[0].get("dev", "") if found else ""


def _apply_rules(dp: LinuxDataplane, netns: str | None) -> list[str]:
    have = {
        (int(r["fwmark"], 16), int(r["table"]), r["priority"])
        for r in ip_json(["rule", "show"], netns)
        if r.get("protocol") == str(ROUTE_PROTOCOL) and "fwmark" in r
    }
    want = {(r["fwmark"], r["table"], r["priority"]) for r in dp.rules}
    changed = []
    for mark, table, prio in sorted(have - want):
        run(["ip", "rule", "del", "fwmark", str(mark), "lookup", str(table), "priority", str(prio)], netns)
        changed.append(f"removed rule fwmark {mark}")
    for mark, table, prio in sorted(want - have):
        selector = ["fwmark", str(mark), "lookup", str(table), "priority", str(prio)]
        run(["ip", "rule", "add", *selector, "protocol", str(ROUTE_PROTOCOL)], netns)
        changed.append(f"added rule fwmark {mark} lookup {table}")
    return changed


def _apply_ruleset(dp: LinuxDataplane, netns: str | None) -> list[str]:
    # The table comment carries the digest of the ruleset it was loaded from (nft -j omits comments).
    current = ruleset_digest(run(["nft", "list", "table", "inet", TABLE], netns, check=False))
    if current == dp.ruleset_digest:
        return []
    load_ruleset(dp.ruleset, netns)
    return [f"loaded nftables table inet {TABLE} ({dp.ruleset_digest})"]


def load_ruleset(ruleset: str, netns: str | None = None, check_only: bool = False) -> None:
    """`nft -f` (one atomic transaction) or, with check_only, `nft -c -f` of a ruleset."""
    with tempfile.NamedTemporaryFile("w", suffix=".nft", delete=False) as handle:
        handle.write(ruleset)
    try:
        run(["nft", *(["-c"] if check_only else []), "-f", handle.name], netns)
    finally:
        os.unlink(handle.name)
