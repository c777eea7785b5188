"""A two-node lab built from hand-written steering models and a plain TCP Envoy (no compiler).

It checks the dataplane on its own: which packets reach the proxy, which are
dropped, which bypass it.  The proxy here is Envoy with transparent listeners
and original-destination clusters, marking its sockets as the compiler does.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import yaml

from dpumesh.dataplane.linux import render_linux
from dpumesh.dataplane.linux_apply import apply_linux
from dpumesh.dataplane.model import parse_steering
from dpumesh.lab import hardware, paths, supervisor
from dpumesh.lab.netns import listening_tcp_ports
from dpumesh.lab.plan import NodePlan, PodPlan
from dpumesh.lab.preflight import envoy_path
from dpumesh.lab.proxy import proxy_ready

PROXY = {"outbound_port": 15001, "inbound_port": 15006, "capture_mark": 1, "bypass_mark": 2,
         "route_table": 100, "admin_port": 15000}  # fmt: skip
NODES = {"n1": ("192.168.250.1", "10.244.1.0/24"), "n2": ("192.168.250.2", "10.244.2.0/24")}
# (namespace, name, node, last octet, meshed)
PODS = [
    ("t", "client", "n1", 10, True),
    ("t", "local-server", "n1", 11, True),
    ("t", "remote-server", "n2", 20, True),
    ("plain", "plain-client", "n1", 12, False),
    ("plain", "plain-server", "n2", 21, False),
]
SERVER_PORT = 8080


def steering(node: str, mode: str) -> dict:
    fabric_ip, cidr = NODES[node]
    prefix = cidr.rsplit(".", 1)[0]
    pods = [_pod_steering(ns, name, node, prefix, octet, meshed) for ns, name, n, octet, meshed in PODS if n == node]
    remotes = [
        {"node": other, "fabric_ip": ip, "pod_cidr": c, "pod_ips": []}
        for other, (ip, c) in NODES.items()
        if other != node
    ]
    return {
        "schema": "dpumesh.io/steering/v1",
        "node": node,
        "version": "test",
        "network_mode": mode,
        "local": {"fabric_ip": fabric_ip, "pod_cidr": cidr},
        "tunnel": {"type": "vxlan", "vni": 42, "dstport": 4789},
        "proxy": PROXY,
        "pods": pods,
        "remote_nodes": remotes,
    }


def _pod_steering(ns: str, name: str, node: str, prefix: str, octet: int, meshed: bool) -> dict:
    mac = f"02:00:00:00:{node[-1]}0:{octet:02x}"
    vf = {"representor": f"vf{octet}"}
    return {"namespace": ns, "name": name, "ip": f"{prefix}.{octet}", "mac": mac, "vf": vf, "meshed": meshed}


def ip_of(name: str) -> str:
    _ns, _pod, node, octet, _meshed = next(p for p in PODS if p[1] == name)
    return NODES[node][1].rsplit(".", 1)[0] + f".{octet}"


def envoy_config(admin_port: int) -> dict:
    def mark(value: int) -> dict:
        return {"socket_options": [{"level": 1, "name": 36, "int_value": value, "state": "STATE_PREBIND"}],
                "source_address": {"address": "0.0.0.0", "port_value": 0}}  # fmt: skip

    def listener(name: str, port: int, cluster: str) -> dict:
        return {
            "name": name,
            "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},
            "transparent": True,
            "listener_filters": [{"name": "envoy.filters.listener.original_dst", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"}}],
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": name, "cluster": cluster}}]}],
        }  # fmt: skip

    def cluster(name: str, value: int) -> dict:
        return {"name": name, "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED", "connect_timeout": "2s",
                "upstream_bind_config": mark(value)}  # fmt: skip

    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [listener("outbound", 15001, "outbound"), listener("inbound", 15006, "inbound")],
            "clusters": [cluster("outbound", 1), cluster("inbound", 2)],
        },
    }


def build(mode: str) -> dict[str, NodePlan]:
    """The hardware, dataplane, proxies and echo workloads of the two-node steering lab."""
    plans = {n: NodePlan(n, NODES[n][0], parse_steering(steering(n, mode))) for n in NODES}
    hardware.ensure_fabric()
    for plan in plans.values():
        hardware.ensure_dpu(plan, 24)
    programs = {}
    paths.lab_dir().mkdir(parents=True, exist_ok=True)
    for ns, name, node, _octet, meshed in PODS:
        sp = next(p for p in plans[node].steering.pods if p.name == name)
        pod = PodPlan(ns, name, node, sp.ip, sp.mac, sp.representor, plans[node].steering.gateway_ip, meshed, "v1",
                      (SERVER_PORT,), (), (), hosts="127.0.0.1 localhost\n", resolv_conf="")  # fmt: skip
        hardware.ensure_pod(pod)
        config = paths.lab_dir() / f"{name}.json"
        config.write_text(json.dumps({"pod": name, "namespace": ns, "node": node, "version": "v1",
                                      "http_ports": [SERVER_PORT], "tcp_ports": [], "upstreams": []}))  # fmt: skip
        programs[f"echo-{name}"] = {"argv": ["ip", "netns", "exec", pod.netns, "python3", "-m", "dpumesh.lab.echo",
                                             str(config)], "log": str(paths.logs_dir() / f"{name}.log"),
                                    "env": {"PYTHONPATH": str(Path(__file__).parents[2] / "src")}}  # fmt: skip
    for node, plan in plans.items():
        apply_linux(render_linux(plan.steering), plan.netns)
        boot = paths.lab_dir() / f"envoy-{node}.yaml"
        boot.write_text(yaml.safe_dump(envoy_config(15000)))
        programs[f"envoy-{node}"] = {"argv": ["ip", "netns", "exec", plan.netns, envoy_path(), "-c", str(boot),
                                              "--disable-hot-restart", "-l", "warning"],
                                     "log": str(paths.logs_dir() / f"envoy-{node}.log")}  # fmt: skip
    supervisor.ensure_supervisor()
    supervisor.set_programs(programs)
    supervisor.wait_for_programs(set(programs))
    for node in plans:
        _wait_until(lambda n=node: proxy_ready(n, 15000), f"dpu-proxy of {node} ready")
    for ns, name, _node, _octet, _meshed in PODS:
        pod_ns = paths.pod_netns(ns, name)
        _wait_until(lambda p=pod_ns: SERVER_PORT in listening_tcp_ports(p), f"echo of {name} listening")
    return plans


def _wait_until(check, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def in_pod(name: str, *cmd: str, timeout: float = 10) -> subprocess.CompletedProcess:
    ns = next(p[0] for p in PODS if p[1] == name)
    return subprocess.run(["ip", "netns", "exec", paths.pod_netns(ns, name), *cmd], capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


def envoy_counter(node: str, stat: str) -> int:
    url = f"http://127.0.0.1:15000/stats?filter={stat}"
    argv = ["ip", "netns", "exec", paths.dpu_netns(node), "curl", "-sf", url]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    values = [line.rsplit(": ", 1)[1] for line in out.splitlines()]
    return sum(int(v) for v in values if v.isdigit())
