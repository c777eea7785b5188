"""Structural checks of the VPP files the `vpp` backend writes (there is no VPP binary to ask).

Each check returns a list of problems ("line N: ..."); empty means valid.
- startup.conf: balanced braces, only known top-level sections, one of each;
- CLI file: every line is one known command with well-formed arguments,
  interfaces are created or named before use, ACL and MACIP ACL indices
  (separate pools, numbered in creation order) exist when used, ABF policies exist before they are attached,
  each ClusterIP port is translated once;
- VCL: one `vcl { }` block of known keys; namespace id and secret match the CLI.
"""

from __future__ import annotations

import ipaddress
import re

STARTUP_SECTIONS = {"unix", "api-trace", "api-segment", "socksvr", "cpu", "buffers", "dpdk", "plugins", "session",
                    "tcp", "statseg", "logging"}  # fmt: skip
VCL_KEYS = {"rx-fifo-size", "tx-fifo-size", "app-scope-local", "app-scope-global", "namespace-id",
            "namespace-secret", "app-socket-api", "use-mq-eventfd", "event-queue-size", "api-socket-name"}  # fmt: skip

_IP4 = r"(?:\d{1,3}\.){3}\d{1,3}"
_PREFIX = _IP4 + r"/\d{1,2}"
_MAC = r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}"
_IF = r"[A-Za-z][A-Za-z0-9_./-]*"
_ACL_RULE = (
    rf"(?:permit|deny|permit\+reflect) src {_PREFIX} dst {_PREFIX}(?: proto \d+)?"
    r"(?: sport \d+(?:-\d+)?)?(?: dport \d+(?:-\d+)?)?"
)
_MACIP_RULE = rf"(?:permit|deny) ip {_PREFIX} mac {_MAC} mask {_MAC}"

# command name -> full-line pattern; named groups are checked further below.
COMMANDS: dict[str, re.Pattern[str]] = {
    name: re.compile(pattern)
    for name, pattern in {
        "comment": r"comment \{ [^{}]* \}",
        "create loopback": r"create loopback interface instance (?P<instance>\d+)",
        "create vxlan": rf"create vxlan tunnel src (?P<src>{_IP4}) dst (?P<dst>{_IP4}) vni (?P<vni>\d+)"
        r" dst_port (?P<port>\d+) instance (?P<instance>\d+)",
        "interface state": rf"set interface state (?P<if>{_IF}) (?:up|down)",
        "interface address": rf"set interface ip address (?P<if>{_IF}) (?P<prefix>{_PREFIX})",
        "unnumbered": rf"set interface unnumbered (?P<if>{_IF}) use (?P<if2>{_IF})",
        "app ns": rf"app ns add id (?P<ns>[A-Za-z0-9_-]+) secret (?P<secret>\d+) if (?P<if>{_IF})",
        "route": rf"ip route add (?P<prefix>{_PREFIX}) via (?:(?P<via>{_IP4}) (?P<if>{_IF})|(?P<if2>{_IF}))",
        "neighbor": rf"set ip neighbor static (?P<if>{_IF}) (?P<ip>{_IP4}) (?P<mac>{_MAC})",
        "macip acl": rf"set acl-plugin macip acl {_MACIP_RULE}(?:, {_MACIP_RULE})*",
        "macip attach": rf"set acl-plugin macip interface (?P<if>{_IF}) acl (?P<acl>\d+)",
        "acl": rf"set acl-plugin acl {_ACL_RULE}(?:, {_ACL_RULE})*(?: tag [A-Za-z0-9_.-]+)?",
        "abf policy": rf"abf policy add id (?P<policy>\d+) acl (?P<acl>\d+) via (?P<via>{_IP4}) (?P<if>{_IF})",
        "abf attach": rf"abf attach ip4 policy (?P<policy>\d+) priority \d+ (?P<if>{_IF})",
        "cnat translation": rf"cnat translation add proto (?P<proto>TCP|UDP) vip (?P<ip>{_IP4}) (?P<vport>\d+)"
        rf"(?: to ->{_IP4} \d+)+",
        "feature": rf"set interface feature (?P<if>{_IF}) cnat-input-ip4 arc ip4-unicast",
        "snat address": rf"set cnat snat-policy addr (?P<ip>{_IP4})",
        "snat interface": rf"set cnat snat-policy if table k8s (?P<if>{_IF})",
        "snat policy": r"set cnat snat-policy (?:none|if-pfx|k8s)",
    }.items()
}
# Interfaces that exist before the CLI file runs (from startup.conf / the hardware).
_HARDWARE_IF = re.compile(r"^(?:fabric\d+|pf\d+vf\d+|vf[0-9a-f]+|[A-Za-z][A-Za-z0-9_-]*)$")


def validate_startup(text: str) -> list[str]:
    problems: list[str] = []
    depth = 0
    seen: set[str] = set()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if depth == 0:
            match = re.fullmatch(r"([a-z-]+) \{", line)
            if not match:
                problems.append(f"line {number}: expected '<section> {{', got {line!r}")
                continue
            if match.group(1) not in STARTUP_SECTIONS:
                problems.append(f"line {number}: unknown section {match.group(1)!r}")
            if match.group(1) in seen:
                problems.append(f"line {number}: section {match.group(1)!r} appears twice")
            seen.add(match.group(1))
        depth += line.count("{") - line.count("}")
        if depth < 0:
            problems.append(f"line {number}: unbalanced '}}'")
            depth = 0
    if depth:
        problems.append("end of file: a section is not closed")
    if "unix" not in seen:
        problems.append("the unix section is missing")
    return problems


def _check_values(number: int, name: str, match: re.Match[str]) -> list[str]:
    problems = []
    for key, value in match.groupdict().items():
        if value is None:
            continue
        try:
            if key in ("ip", "via", "src", "dst"):
                ipaddress.IPv4Address(value)
            elif key == "prefix":
                ipaddress.IPv4Network(value)
        except ValueError:
            problems.append(f"line {number}: {name}: {value!r} is not a valid {key}")
    if name == "create vxlan" and not 0 < int(match["vni"]) < 2**24:
        problems.append(f"line {number}: vni {match['vni']} is out of range")
    for rule_prefix in re.findall(_PREFIX, match.group(0)):
        try:
            ipaddress.IPv4Network(rule_prefix)
        except ValueError:
            problems.append(f"line {number}: {rule_prefix!r} is not a valid prefix (host bits set?)")
    if name == "cnat translation":
        for target in re.findall(rf"->({_IP4}) \d+", match.group(0)):
            try:
                ipaddress.IPv4Address(target)
            except ValueError:
                problems.append(f"line {number}: {target!r} is not a valid endpoint address")
    for port in re.findall(r"(?:dport|sport|dst_port|vip \S+|->\S+) (\d+)", match.group(0)):
        if not 0 < int(port) < 65536:
            problems.append(f"line {number}: port {port} is out of range")
    return problems


def validate_cli(text: str) -> list[str]:
    problems: list[str] = []
    interfaces: set[str] = set()
    acl_count = macip_count = 0
    policies: set[int] = set()
    translated: set[tuple[str, str, str]] = set()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        name = next((n for n, pattern in COMMANDS.items() if pattern.fullmatch(line)), None)
        if name is None:
            problems.append(f"line {number}: not a known command: {line!r}")
            continue
        match = COMMANDS[name].fullmatch(line)
        assert match is not None
        problems += _check_values(number, name, match)
        groups = match.groupdict()
        if name == "create loopback":
            interfaces.add(f"loop{groups['instance']}")
        elif name == "create vxlan":
            interfaces.add(f"vxlan_tunnel{groups['instance']}")
        elif name == "acl":
            acl_count += 1
        elif name == "macip acl":
            macip_count += 1
        elif name == "abf policy":
            if int(groups["acl"]) >= acl_count:
                problems.append(f"line {number}: ACL {groups['acl']} is used before it is created")
            policies.add(int(groups["policy"]))
        elif name == "abf attach" and int(groups["policy"]) not in policies:
            problems.append(f"line {number}: ABF policy {groups['policy']} is attached before it is added")
        elif name == "cnat translation":
            vip = (groups["ip"], groups["proto"], groups["vport"])
            if vip in translated:
                problems.append(
                    f"line {number}: {groups['ip']} {groups['vport']}/{groups['proto']} is translated twice"
                )
            translated.add(vip)
        elif name == "macip attach" and int(groups["acl"]) >= macip_count:
            problems.append(f"line {number}: MACIP ACL {groups['acl']} is attached before it is created")
        for key in ("if", "if2"):
            ifname = groups.get(key)
            if ifname is None:
                continue
            virtual = re.fullmatch(r"(?:loop|vxlan_tunnel)\d+", ifname)
            if virtual and ifname not in interfaces:
                problems.append(f"line {number}: interface {ifname} is used before it is created")
            elif not virtual and not _HARDWARE_IF.match(ifname):
                problems.append(f"line {number}: {ifname!r} is not an interface name")
    return problems


def validate_vcl(text: str, cli: str = "") -> list[str]:
    problems: list[str] = []
    lines = [(n, raw.split("#", 1)[0].strip()) for n, raw in enumerate(text.splitlines(), 1)]
    lines = [(n, line) for n, line in lines if line]
    if not lines or lines[0][1] != "vcl {" or lines[-1][1] != "}":
        return ["the file must be exactly one 'vcl { ... }' block"]
    values: dict[str, str] = {}
    for number, line in lines[1:-1]:
        key, _, value = line.partition(" ")
        if key not in VCL_KEYS:
            problems.append(f"line {number}: unknown VCL key {key!r}")
        elif key in values:
            problems.append(f"line {number}: {key} is set twice")
        values[key] = value.strip()
        if key.endswith("-size") and not value.strip().isdigit():
            problems.append(f"line {number}: {key} needs a number")
    for required in ("namespace-id", "namespace-secret", "app-socket-api"):
        if required not in values:
            problems.append(f"{required} is missing")
    if cli and "namespace-id" in values:
        wanted = f"app ns add id {values['namespace-id']} secret {values.get('namespace-secret', '')} "
        if wanted not in cli:
            problems.append("namespace-id/namespace-secret do not match an 'app ns add' of the CLI file")
    return problems
