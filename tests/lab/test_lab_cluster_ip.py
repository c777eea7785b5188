"""ClusterIPs on the DPU: pods outside the mesh reach Services by their ClusterIP, as kube-proxy would allow.

A small state of its own: `plain` is not meshed, `mesh` is. plain/echo has three endpoints (one on node-1,
two on node-2); mesh/web has one on each node. The clients run on node-1.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ECHO_VIP, WEB_VIP = "10.96.200.10", "10.96.200.20"
NODES = """
apiVersion: v1
kind: Node
metadata: {name: node-1, labels: {dpumesh.io/dpu: "true"}, annotations: {dpumesh.io/dpu-fabric-ip: 192.168.250.1}}
spec: {podCIDR: 10.244.1.0/24}
---
apiVersion: v1
kind: Node
metadata: {name: node-2, labels: {dpumesh.io/dpu: "true"}, annotations: {dpumesh.io/dpu-fabric-ip: 192.168.250.2}}
spec: {podCIDR: 10.244.2.0/24}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: v1
kind: Namespace
metadata: {name: mesh, labels: {istio-injection: enabled}}
"""
SERVICE = """
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  clusterIP: {vip}
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
"""
DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {app}, node: {node}}}}}
  template:
    metadata: {{labels: {{app: {app}, node: {node}}}}}
    spec:
      nodeName: {node}
      containers: [{{name: app, image: example.net/echo:1, ports: [{{containerPort: 8080}}]}}]
"""


def _state(directory: Path) -> Path:
    docs = [NODES, SERVICE.format(name="echo", namespace="plain", vip=ECHO_VIP)]
    docs.append(SERVICE.format(name="web", namespace="mesh", vip=WEB_VIP))
    for name, namespace, app, node, replicas in [
        ("echo-a", "plain", "echo", "node-1", 1),
        ("echo-b", "plain", "echo", "node-2", 2),
        ("client", "plain", "client", "node-1", 1),
        ("web-a", "mesh", "web", "node-1", 1),
        ("web-b", "mesh", "web", "node-2", 1),
        ("client", "mesh", "client", "node-1", 1),
    ]:
        docs.append(DEPLOYMENT.format(name=name, namespace=namespace, app=app, node=node, replicas=replicas))
    (directory / "state.yaml").write_text("---".join(docs))
    return directory


def dpumesh(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-c", "from dpumesh.cli import main; raise SystemExit(main())", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


CALLS = """
import json, sys, urllib.request
answers = []
for _ in range(int(sys.argv[2])):
    answers.append(json.load(urllib.request.urlopen(sys.argv[1], timeout=5)))
print(json.dumps(answers))
"""


def calls(pod: str, url: str, count: int) -> list[dict]:
    done = dpumesh("lab", "exec", pod, "--", "python3", "-c", CALLS, url, str(count), timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module", params=["underlay", "overlay"])
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    state = _state(tmp_path_factory.mktemp("cluster-ip-state"))
    done = dpumesh("lab", "apply", str(state), "--network-mode", request.param)
    assert done.returncode == 0, done.stderr
    from dpumesh.lab.apply import read_lab_state

    yield read_lab_state()["pods"]
    if request.param == "overlay":  # the last one: the next test module starts from an empty lab
        assert dpumesh("lab", "down").returncode == 0


def test_non_meshed_pod_reaches_endpoints_on_both_nodes_by_cluster_ip(lab: dict) -> None:
    answers = calls("plain/client-0", f"http://{ECHO_VIP}:80/", 30)
    pods = {a["pod"] for a in answers}
    assert len(pods) > 1 and {a["node"] for a in answers} == {"node-1", "node-2"}, pods  # same node and across
    assert pods <= {"echo-a-0", "echo-b-0", "echo-b-1"}
    client_ip = lab["plain/client-0"]["ip"]
    assert all(a["source"].startswith(f"{client_ip}:") for a in answers)  # translated on the DPU, no proxy


def test_port_the_service_does_not_declare_gets_nothing(lab: dict) -> None:
    done = dpumesh("lab", "exec", "plain/client-0", "--", "curl", "-s", "-m", "3", f"http://{ECHO_VIP}:8080/")
    assert done.returncode == 7 and not done.stdout  # refused at once (curl: could not connect)


def test_meshed_endpoints_keep_their_inbound_proxy(lab: dict) -> None:
    # web-a is a meshed pod on the client's node: only its proxy may deliver to it, so the DPU sends the
    # translated connection to web-b, whose node's inbound listener delivers it.
    answers = calls("plain/client-0", f"http://{WEB_VIP}:80/", 10)
    assert {a["pod"] for a in answers} == {"web-b-0"}
    assert all(a["source"].startswith("10.244.2.1:") for a in answers)


def test_meshed_pod_still_goes_through_its_proxy(lab: dict) -> None:
    answers = calls("mesh/client-0", f"http://{ECHO_VIP}:80/", 10)
    assert all(a["source"].startswith("10.244.1.1:") for a in answers)  # node-1's proxy picked the endpoint
    assert len({a["pod"] for a in answers}) > 1
