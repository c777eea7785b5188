"""`dpumesh lab status [--json]`: what the lab state file says exists, checked against what runs."""

from __future__ import annotations

import json
from typing import Any

from dpumesh.lab import hardware, proxy, supervisor
from dpumesh.lab.apply import read_lab_state


def lab_status() -> dict[str, Any]:
    """The lab as data: mode, supervisor, nodes with their proxy, pods; `healthy` when all is as applied."""
    state = read_lab_state()
    if not state.get("nodes"):
        return {"up": False, "healthy": True, "nodes": [], "pods": []}
    programs = supervisor.program_status()
    netns = hardware.existing_netns()
    admin_port = state.get("admin_port", 15000)
    pid = supervisor.supervisor_pid()
    nodes = []
    for name, info in sorted(state["nodes"].items()):
        program = programs.get(proxy.program_name(name), {})
        ready = info["netns"] in netns and proxy.proxy_ready(name, admin_port)
        serving = proxy.served_versions(name, admin_port)["lds"] if ready else ""
        nodes.append(
            {
                "name": name,
                "netns": info["netns"],
                "fabric_ip": info["fabric_ip"],
                "proxy": {
                    "pid": program.get("pid"),
                    "state": program.get("state", "absent"),
                    "restarts": program.get("restarts", 0),
                    "ready": ready,
                    "config_version": {"applied": info["version"], "serving": serving},
                    "as_applied": ready and serving == info["version"],
                },
            }
        )
    pods = []
    for key, record in sorted(state["pods"].items()):
        namespace, name = key.split("/", 1)
        program = programs.get(f"echo-{namespace}-{name}", {})
        present = record["netns"] in netns
        pods.append(
            {
                "namespace": namespace,
                "name": name,
                "node": record["node"],
                "ip": record["ip"],
                "mac": record["mac"],
                "representor": record["representor"],
                "netns": record["netns"],
                "meshed": record.get("meshed"),  # None: applied before the lab recorded it
                "ready": present and program.get("state") == "running",
                "workload": {
                    "pid": program.get("pid"),
                    "state": program.get("state", "absent") if present else "no netns",
                    "restarts": program.get("restarts", 0),
                },
            }
        )
    healthy = pid is not None and all(n["proxy"]["as_applied"] for n in nodes) and all(p["ready"] for p in pods)
    return {
        "up": True,
        "healthy": healthy,
        "state_dir": state.get("state_dir", ""),
        "network_mode": state.get("network_mode", ""),
        "supervisor": {"pid": pid, "running": pid is not None},
        "nodes": nodes,
        "pods": pods,
    }


def print_status(as_json: bool = False) -> int:
    """Prints the lab's nodes and pods; returns 1 when something is not as applied."""
    status = lab_status()
    if as_json:
        print(json.dumps(status, indent=2, sort_keys=True))
        return 0 if status["healthy"] else 1
    if not status["up"]:
        print("the lab is down (dpumesh lab apply DIR brings it up)")
        return 0
    print(f"state: {status['state_dir']}  network mode: {status['network_mode']}")
    print(f"supervisor: {'running' if status['supervisor']['running'] else 'NOT RUNNING'}")
    print(f"{'NODE':10} {'FABRIC IP':15} {'PROXY':8} {'RESTARTS':8} {'VERSION (serving/applied)'}")
    for node in status["nodes"]:
        p = node["proxy"]
        version = p["config_version"]
        print(
            f"{node['name']:10} {node['fabric_ip']:15} {'ready' if p['ready'] else 'DOWN':8} {p['restarts']:<8} "
            f"{version['serving'] or '-'}/{version['applied']}{'' if p['as_applied'] else '  <-- not as applied'}"
        )
    print(f"\n{'POD':40} {'NODE':8} {'IP':12} {'VF':12} {'WORKLOAD'}")
    for pod in status["pods"]:
        w = pod["workload"]
        workload = f"{w['state']} (restarts {w['restarts']})" if w["state"] != "no netns" else "NO NETNS"
        key = f"{pod['namespace']}/{pod['name']}"
        print(f"{key:40} {pod['node']:8} {pod['ip']:12} {pod['representor']:12} {workload}")
    return 0 if status["healthy"] else 1
