"""The linux dataplane in real namespaces, with a plain TCP Envoy as the proxy (no compiler involved)."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import steering_lab as lab

from dpumesh.lab import paths
from dpumesh.lab.netns import listening_tcp_ports


def _get(src: str, dst: str) -> dict:
    done = lab.in_pod(src, "curl", "-sf", "-m", "5", f"http://{lab.ip_of(dst)}:{lab.SERVER_PORT}/probe")
    assert done.returncode == 0, f"{src} -> {dst}: curl exit {done.returncode} {done.stderr}"
    return json.loads(done.stdout)


def _counters() -> dict[tuple[str, str], int]:
    return {
        (n, side): lab.envoy_counter(n, f"{side}.downstream_cx_total")
        for n in lab.NODES
        for side in ("outbound", "inbound")
    }


@pytest.fixture(scope="module", params=["underlay", "overlay"])
def network_mode(request: pytest.FixtureRequest) -> str:
    lab.build(request.param)
    return request.param


def test_same_node_call_goes_through_outbound_then_inbound(network_mode: str) -> None:
    before = _counters()
    answer = _get("client", "local-server")
    after = _counters()
    assert answer["pod"] == "local-server"
    assert answer["source"].startswith("10.244.1.1:")  # the proxy's address, not the client's
    assert after[("n1", "outbound")] == before[("n1", "outbound")] + 1
    assert after[("n1", "inbound")] == before[("n1", "inbound")] + 1  # looped back through the inbound listener


def test_cross_node_call_goes_through_both_proxies(network_mode: str) -> None:
    before = _counters()
    answer = _get("client", "remote-server")
    after = _counters()
    assert answer["pod"] == "remote-server"
    assert answer["source"].startswith("10.244.2.1:")
    assert after[("n1", "outbound")] == before[("n1", "outbound")] + 1
    assert after[("n2", "inbound")] == before[("n2", "inbound")] + 1


def test_non_meshed_pods_bypass_the_proxy(network_mode: str) -> None:
    before = _counters()
    answer = _get("plain-client", "plain-server")
    assert answer["source"].startswith(f"{lab.ip_of('plain-client')}:")  # no proxy: the client's own address
    assert _counters() == before


def test_overlay_carries_pod_traffic_in_vxlan(network_mode: str) -> None:
    def tx_packets() -> int:
        out = subprocess.run(["ip", "-n", paths.dpu_netns("n1"), "-s", "-j", "link", "show"], capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
        links = {link["ifname"]: link for link in json.loads(out)}
        return links["dpumesh-vx"]["stats64"]["tx"]["packets"] if "dpumesh-vx" in links else 0

    before = tx_packets()
    _get("plain-client", "plain-server")
    if network_mode == "overlay":
        assert tx_packets() > before
    else:
        assert tx_packets() == before == 0


def test_spoofed_source_ip_gets_nothing_through(network_mode: str) -> None:
    pod_ns = paths.pod_netns("t", "client")
    stolen = lab.ip_of("local-server")
    subprocess.run(["ip", "-n", pod_ns, "addr", "add", f"{stolen}/32", "dev", "eth0"], check=True)
    try:
        url = f"http://{lab.ip_of('plain-server')}:{lab.SERVER_PORT}/"
        done = lab.in_pod("client", "curl", "-s", "-m", "2", "--interface", stolen, url)
        assert done.returncode != 0 and not done.stdout
    finally:
        subprocess.run(["ip", "-n", pod_ns, "addr", "del", f"{stolen}/32", "dev", "eth0"], check=True)
    assert _get("client", "plain-server")["pod"] == "plain-server"  # its own address still works


def test_spoofed_source_mac_gets_nothing_through(network_mode: str) -> None:
    pod_ns = paths.pod_netns("plain", "plain-client")
    own_mac = json.loads(subprocess.run(["ip", "-n", pod_ns, "-j", "link", "show", "eth0"], capture_output=True,
                                        text=True, check=True).stdout)[0]["address"]  # fmt: skip
    subprocess.run(["ip", "-n", pod_ns, "link", "set", "eth0", "address", "02:00:00:00:99:99"], check=True)
    try:
        done = lab.in_pod("plain-client", "curl", "-s", "-m", "2", f"http://{lab.ip_of('plain-server')}:8080/")
        assert done.returncode != 0 and not done.stdout
    finally:
        subprocess.run(["ip", "-n", pod_ns, "link", "set", "eth0", "address", own_mac], check=True)
    assert _get("plain-client", "plain-server")["pod"] == "plain-server"


def test_pods_cannot_reach_the_proxy_admin(network_mode: str) -> None:
    done = lab.in_pod("plain-client", "curl", "-s", "-m", "2", "http://10.244.1.1:15000/ready")
    assert done.returncode != 0 and not done.stdout


def test_reapplying_the_dataplane_changes_nothing(network_mode: str) -> None:
    from dpumesh.dataplane.linux import render_linux
    from dpumesh.dataplane.linux_apply import apply_linux
    from dpumesh.dataplane.model import parse_steering

    for node in lab.NODES:
        dataplane = render_linux(parse_steering(lab.steering(node, network_mode)))
        assert apply_linux(dataplane, paths.dpu_netns(node)) == []


def test_supervisor_restarts_a_crashed_workload(network_mode: str) -> None:
    from dpumesh.lab import supervisor

    status = supervisor.program_status()["echo-remote-server"]
    subprocess.run(["kill", "-9", str(status["pid"])], check=True)
    deadline = time.monotonic() + 10
    while supervisor.program_status()["echo-remote-server"]["restarts"] == status["restarts"]:
        assert time.monotonic() < deadline, "the supervisor did not restart the killed workload"
        time.sleep(0.1)
    restarted = supervisor.wait_for_programs({"echo-remote-server"}, timeout=10)["echo-remote-server"]
    assert restarted["restarts"] == status["restarts"] + 1 and restarted["pid"] != status["pid"]
    remote_ns = paths.pod_netns("t", "remote-server")
    while lab.SERVER_PORT not in listening_tcp_ports(remote_ns):
        assert time.monotonic() < deadline, "the restarted workload does not listen"
        time.sleep(0.1)
    assert _get("client", "remote-server")["pod"] == "remote-server"
