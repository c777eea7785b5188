"""ClusterIPs on the DPU: pods outside the mesh reach Services by their ClusterIP, as kube-proxy would allow.

A small state of its own: `plain` is not meshed, `mesh` and `locked` are (`locked` with STRICT mTLS).
plain/echo has three endpoints (one on node-1, two on node-2); mesh/web has one on each node; locked/vault
one on node-1; plain/self selects plain/client-0 itself. The clients run on node-1.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from dpumesh.lab import proxy

ECHO_VIP, WEB_VIP, VAULT_VIP, SELF_VIP = "10.96.200.10", "10.96.200.20", "10.96.200.30", "10.96.200.40"
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
---
apiVersion: v1
kind: Namespace
metadata: {name: locked, labels: {istio-injection: enabled}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: locked}
spec: {mtls: {mode: STRICT}}
"""
SERVICE = """
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  clusterIP: {vip}
  selector: {{app: {app}}}
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
    docs = [NODES]
    for name, namespace, app, vip in [
        ("echo", "plain", "echo", ECHO_VIP),
        ("web", "mesh", "web", WEB_VIP),
        ("vault", "locked", "vault", VAULT_VIP),
        ("self", "plain", "client", SELF_VIP),
    ]:
        docs.append(SERVICE.format(name=name, namespace=namespace, app=app, vip=vip))
    for name, namespace, app, node, replicas in [
        ("echo-a", "plain", "echo", "node-1", 1),
        ("echo-b", "plain", "echo", "node-2", 2),
        ("client", "plain", "client", "node-1", 1),
        ("web-a", "mesh", "web", "node-1", 1),
        ("web-b", "mesh", "web", "node-2", 1),
        ("client", "mesh", "client", "node-1", 1),
        ("vault", "locked", "vault", "node-1", 1),
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


def inbound_requests(node: str, port: int) -> int:
    """Requests the node's proxy sent from its inbound listener to local pods' `port`."""
    pattern = rf"^cluster\.inbound\|{port}\|\|\.upstream_rq_total$"
    stats = proxy.admin_get(node, 15000, f"/stats?filter={urllib.parse.quote(pattern)}")
    return sum(int(line.rsplit(": ", 1)[1]) for line in stats.splitlines() if line.strip())


def test_meshed_endpoint_on_the_same_node_is_reached_through_its_inbound_proxy(lab: dict) -> None:
    # As on a sidecar cluster: the ClusterIP is translated on the client's side, then the server pod's
    # inbound proxy (on this node: the DPU's own) takes the connection with the pod as destination.
    before = inbound_requests("node-1", 8080)
    answers = calls("plain/client-0", f"http://{WEB_VIP}:80/", 20)
    by_pod = {a["pod"]: a for a in answers}
    assert set(by_pod) == {"web-a-0", "web-b-0"}, by_pod.keys()  # same node and across
    assert all(a["source"].startswith("10.244.1.1:") for a in answers if a["pod"] == "web-a-0")
    assert all(a["source"].startswith("10.244.2.1:") for a in answers if a["pod"] == "web-b-0")
    local = sum(a["pod"] == "web-a-0" for a in answers)
    assert inbound_requests("node-1", 8080) - before >= local  # node-1's inbound listener carried them


def test_strict_mtls_endpoint_on_the_same_node_refuses_a_plaintext_client_by_cluster_ip(lab: dict) -> None:
    done = dpumesh("lab", "exec", "plain/client-0", "--", "curl", "-s", "-m", "5", f"http://{VAULT_VIP}:80/")
    assert done.returncode in (52, 56) and '"pod"' not in done.stdout, (done.returncode, done.stdout)
    # The Service itself works: a meshed client gets through with mutual TLS.
    assert {a["pod"] for a in calls("mesh/client-0", f"http://{VAULT_VIP}:80/", 3)} == {"vault-0"}


def test_pod_reaching_itself_by_cluster_ip_is_answered_through_the_gateway(lab: dict) -> None:
    # Hairpin: translated to its own address, the pod would answer itself around the translation.
    answers = calls("plain/client-0", f"http://{SELF_VIP}:80/", 3)
    assert {a["pod"] for a in answers} == {"client-0"}
    assert all(a["source"].startswith("10.244.1.1:") for a in answers)


def test_meshed_pod_still_goes_through_its_proxy(lab: dict) -> None:
    answers = calls("mesh/client-0", f"http://{ECHO_VIP}:80/", 10)
    assert all(a["source"].startswith("10.244.1.1:") for a in answers)  # node-1's proxy picked the endpoint
    assert len({a["pod"] for a in answers}) > 1
