"""`dpumesh lab apply` end to end on examples/lab-app: compiler, dataplane, Envoy, mTLS, echo workloads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dpumesh.lab import hardware, paths

APP = Path(__file__).parents[2] / "examples" / "lab-app"


def dpumesh(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-c", "from dpumesh.cli import main; raise SystemExit(main())", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def in_pod(pod: str, *cmd: str) -> subprocess.CompletedProcess:
    return dpumesh("lab", "exec", pod, "--", *cmd, timeout=30)


@pytest.fixture(scope="module", params=["underlay", "overlay"])
def lab(request: pytest.FixtureRequest) -> str:
    done = dpumesh("lab", "apply", str(APP), "--network-mode", request.param)
    assert done.returncode == 0, done.stderr
    return request.param


def test_second_apply_changes_nothing(lab: str) -> None:
    done = dpumesh("lab", "apply")
    assert done.returncode == 0, done.stderr
    assert "lab unchanged" in done.stdout and "changed:" not in done.stdout


def test_header_routing_across_nodes_through_the_proxy(lab: str) -> None:
    done = in_pod("shop/frontend-0", "curl", "-sf", "-m", "10", "-H", "end-user: jason", "http://frontend:8080/")
    assert done.returncode == 0, done.stderr
    upstreams = {u["url"]: u for u in json.loads(done.stdout)["upstreams"]}
    catalog = upstreams["http://catalog:8080/items"]
    assert catalog["status"] == 200 and catalog["body"]["pod"] == "catalog-v3-0"  # v3 runs on node-2
    assert catalog["body"]["headers"]["end-user"] == "jason"
    assert catalog["body"]["source"].startswith("10.244.2.1:")  # delivered by node-2's proxy
    assert upstreams["http://payments.payments:8080/quote"]["body"]["pod"] == "payments-0"


SPLIT_PROBE = """
import collections, json, urllib.request
seen = collections.Counter()
for _ in range(200):
    request = urllib.request.Request("http://catalog:8080/", headers={"x-catalog-split": "canary"})
    seen[json.load(urllib.request.urlopen(request, timeout=5))["pod"]] += 1
print(json.dumps(seen))
"""


def test_weighted_split_across_nodes(lab: str) -> None:
    """80/20 between catalog v1 (node-1) and v2: 200 requests, bounds at about 4.5 standard deviations."""
    done = dpumesh("lab", "exec", "shop/frontend-0", "--", "python3", "-c", SPLIT_PROBE, timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert set(seen) == {"catalog-v1-0", "catalog-v2-0"}, seen
    assert 15 <= seen["catalog-v2-0"] <= 65, seen  # expected 40, sd 5.7


def test_same_node_default_route(lab: str) -> None:
    done = in_pod("shop/frontend-0", "curl", "-sf", "-m", "10", "http://catalog.shop.svc.cluster.local:8080/")
    answer = json.loads(done.stdout)
    assert answer["pod"] == "catalog-v1-0" and answer["node"] == "node-1"
    assert answer["source"].startswith("10.244.1.1:")


def test_tcp_echo_through_the_mesh(lab: str) -> None:
    code = "import socket; s=socket.create_connection(('inventory',9000),5); s.sendall(b'stock?\\n'); print(s.recv(99))"
    done = in_pod("shop/frontend-0", "python3", "-c", code)
    assert done.stdout.strip() == "b'v1 stock?\\n'", done.stderr


def test_plaintext_from_outside_the_mesh_to_strict_mtls_is_refused(lab: str) -> None:
    # By pod IP (by ClusterIP: test_lab_cluster_ip.py).
    pods = json.loads((paths.lab_dir() / "state.json").read_text())["pods"]
    strict = pods["payments/payments-0"]["ip"]
    done = in_pod("legacy/legacy-0", "curl", "-s", "-m", "5", f"http://{strict}:8080/")
    assert done.returncode != 0 and '"pod"' not in done.stdout
    permissive = pods["shop/catalog-v1-0"]["ip"]
    answer = json.loads(in_pod("legacy/legacy-0", "curl", "-sf", "-m", "5", f"http://{permissive}:8080/").stdout)
    assert answer["pod"] == "catalog-v1-0" and answer["source"].startswith("10.244.1.1:")  # via the inbound proxy


def test_status_reports_every_proxy_serving_the_applied_version(lab: str) -> None:
    done = dpumesh("lab", "status")
    assert done.returncode == 0, done.stdout
    assert "node-1" in done.stdout and "not as applied" not in done.stdout


def test_status_json_describes_nodes_proxies_and_pods(lab: str) -> None:
    done = dpumesh("lab", "status", "--json")
    assert done.returncode == 0, done.stdout
    status = json.loads(done.stdout)
    assert status["up"] and status["healthy"] and status["network_mode"] == lab
    assert status["supervisor"]["running"] and status["supervisor"]["pid"] > 0
    nodes = {n["name"]: n for n in status["nodes"]}
    assert set(nodes) == {"node-1", "node-2"}
    for node in nodes.values():
        proxy = node["proxy"]
        assert proxy["ready"] and proxy["pid"] > 0 and proxy["state"] == "running"
        assert proxy["config_version"]["serving"] == proxy["config_version"]["applied"] != ""
    recorded = json.loads((paths.lab_dir() / "state.json").read_text())["pods"]
    pods = {f"{p['namespace']}/{p['name']}": p for p in status["pods"]}
    assert set(pods) == set(recorded)
    assert pods["legacy/legacy-0"]["meshed"] is False and pods["shop/frontend-0"]["meshed"] is True
    for key, pod in pods.items():
        assert pod["ready"] and pod["workload"]["pid"] > 0
        assert (pod["ip"], pod["mac"], pod["node"]) == (
            recorded[key]["ip"],
            recorded[key]["mac"],
            recorded[key]["node"],
        )


def test_down_leaves_no_trace_and_spares_namespaces_it_did_not_create() -> None:
    created = hardware.created_netns()
    assert {"dpumesh-fabric", "dpumesh-node-1-dpu"} <= created
    foreign = "dpumesh-foo"
    subprocess.run(["ip", "netns", "add", foreign], check=True)
    (paths.NETNS_ETC / foreign).mkdir(parents=True, exist_ok=True)
    try:
        assert dpumesh("lab", "down").returncode == 0
        assert not created & hardware.existing_netns()
        assert not [d for d in hardware.leftover_etc_dirs() if d.name in created]
        assert not paths.lab_dir().exists()
        assert foreign in hardware.existing_netns() and (paths.NETNS_ETC / foreign).is_dir()
        assert "lab was already down" in dpumesh("lab", "down").stdout
    finally:
        subprocess.run(["ip", "netns", "del", foreign], check=False)
        hardware.remove_etc(foreign)


ISOLATED_DOWN_ALL = """
set -e
mkdir -p /run/netns /etc/netns
mount -t tmpfs lab-netns /run/netns
mount -t tmpfs lab-etc /etc/netns
ip netns add dpumesh-node-9-dpu
ip netns add other-tool
mkdir /etc/netns/dpumesh-node-9-dpu
DPUMESH_LAB_DIR="$1" "$2" -c 'from dpumesh.cli import main; raise SystemExit(main())' lab down --all
ip netns list
ls /etc/netns
"""


def test_down_all_removes_namespaces_of_a_lost_runtime_directory(tmp_path: Path) -> None:
    # In a private mount namespace: /run/netns and /etc/netns there hold only what this test creates.
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", ISOLATED_DOWN_ALL, "sh"]
    done = subprocess.run([*argv, str(tmp_path / "lost"), sys.executable], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "removed namespace dpumesh-node-9-dpu" in done.stdout
    left = done.stdout.split("lab is down", 1)[1].split()
    assert left == ["other-tool"]  # the unrecorded lab namespace and its /etc/netns went; the other stays
