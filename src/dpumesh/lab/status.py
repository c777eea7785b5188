"""`dpumesh lab status`: what the lab state file says exists, checked against what runs."""

from __future__ import annotations

from dpumesh.lab import hardware, proxy, supervisor
from dpumesh.lab.apply import read_lab_state


def print_status() -> int:
    """Prints the lab's nodes and pods; returns 1 when something is not as applied."""
    state = read_lab_state()
    if not state.get("nodes"):
        print("the lab is down (dpumesh lab apply DIR brings it up)")
        return 0
    programs = supervisor.program_status()
    netns = hardware.existing_netns()
    admin_port = state.get("admin_port", 15000)
    healthy = supervisor.supervisor_pid() is not None
    print(f"state: {state['state_dir']}  network mode: {state['network_mode']}")
    print(f"supervisor: {'running' if healthy else 'NOT RUNNING'}")
    print(f"{'NODE':10} {'FABRIC IP':15} {'PROXY':8} {'RESTARTS':8} {'VERSION (serving/applied)'}")
    for node, info in sorted(state["nodes"].items()):
        program = programs.get(f"envoy-{node}", {})
        ready = info["netns"] in netns and proxy.proxy_ready(node, admin_port)
        served = proxy.served_versions(node, admin_port)["lds"] if ready else "-"
        ok = ready and served == info["version"]
        healthy &= ok
        print(
            f"{node:10} {info['fabric_ip']:15} {'ready' if ready else 'DOWN':8} {program.get('restarts', 0):<8} "
            f"{served}/{info['version']}{'' if ok else '  <-- not as applied'}"
        )
    print(f"\n{'POD':40} {'NODE':8} {'IP':12} {'VF':12} {'WORKLOAD'}")
    for key, pod in sorted(state["pods"].items()):
        namespace, name = key.split("/", 1)
        program = programs.get(f"echo-{namespace}-{name}", {})
        present = pod["netns"] in netns
        running = program.get("state") == "running"
        healthy &= present and running
        workload = f"{program.get('state', 'absent')} (restarts {program.get('restarts', 0)})"
        print(f"{key:40} {pod['node']:8} {pod['ip']:12} {pod['representor']:12} {workload if present else 'NO NETNS'}")
    return 0 if healthy else 1
