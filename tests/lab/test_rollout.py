"""Config rollout under load: steady request streams on both nodes while the lab's config changes.

Measures what docs/rollout.md reports: requests sent and failed per phase, and how long after
`dpumesh lab apply` returns each change is in effect. Run with `-s` to see the figures.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import pytest
import rollout_lab as lab

from dpumesh.lab import proxy, supervisor

CATALOG = "http://catalog:8080/"
FRONTEND = "shop/frontend-0"  # node-1
NODE2_CLIENT = "shop/catalog-v2-0"  # node-2


@pytest.fixture(scope="module")
def streams(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("rollout")
    done = lab.dpumesh("lab", "apply", str(lab.State().write(work / "base")), "--network-mode", "underlay")
    assert done.returncode == 0, done.stderr
    running = [
        lab.Stream(FRONTEND, [
            {"url": CATALOG},
            {"url": CATALOG, "headers": {"end-user": "jason"}},  # catalog v3 on node-2
            {"url": "http://payments.payments:8080/"},  # STRICT mTLS, node-2
            {"url": "http://frontend:8080/"},  # frontend itself, which calls catalog and payments
        ], work),
        lab.Stream(NODE2_CLIENT, [{"url": CATALOG}, {"url": "http://payments.payments:8080/"}], work),
    ]  # fmt: skip
    for stream in running:
        stream.start()
    lab.wait_for_requests(running, 0)
    yield running, work
    for stream in running:
        stream.stop()


def _apply(state: lab.State, directory: Path, *extra: str) -> float:
    done = lab.dpumesh("lab", "apply", str(state.write(directory)), *extra)
    assert done.returncode == 0, done.stderr + done.stdout
    return time.time()


def _report(what: str, figures: dict) -> None:
    print(f"\n[rollout] {what}: {json.dumps(figures)}")


def test_an_invalid_config_is_refused_naming_the_field_and_traffic_goes_on(streams) -> None:
    running, work = streams
    versions = json.loads((proxy.paths.lab_dir() / "state.json").read_text())
    started = time.time()
    state = lab.State()
    # Python's re takes \Z; Envoy's RE2 does not: only `envoy --mode validate` can refuse this.
    state.catalog_routes().insert(0, {"match": [{"uri": {"regex": "/items\\Z"}}],
                                      "route": [{"destination": {"host": "catalog", "subset": "v2"}}]})  # fmt: skip
    done = lab.dpumesh("lab", "apply", str(state.write(work / "invalid")))
    assert done.returncode != 0
    assert "Envoy refused the config, nothing was changed: " in done.stderr
    assert "invalid escape sequence: \\Z" in done.stderr
    assert "VirtualService shop/catalog: spec.http[0].match[0].uri.regex = '/items\\\\Z'" in done.stderr
    lab.wait_for_requests(running, time.time())
    after = json.loads((proxy.paths.lab_dir() / "state.json").read_text())
    assert {n: i["version"] for n, i in after["nodes"].items()} == {
        n: i["version"] for n, i in versions["nodes"].items()
    }
    for node, info in after["nodes"].items():
        assert proxy.served_versions(node, 15000) == {"lds": info["version"], "cds": info["version"]}
    figures = lab.summary(running, started)
    _report("invalid config refused", figures)
    assert figures["failed"] == 0, figures


def _changes() -> list[tuple[str, Callable[[lab.State], None], Callable[[], bool]]]:
    """(what, change to the state, check that it is in effect); each change builds on the ones before."""

    def route(state: lab.State) -> None:
        state.catalog_routes().insert(0, lab.header_route("x-catalog-version", "v3", "v3"))

    def weights_all_v2(state: lab.State) -> None:
        for route in state.catalog_routes():  # every route that reaches v1 (default and canary split)
            if any(d["destination"]["subset"] == "v1" for d in route["route"]):
                route["route"] = [
                    {"destination": {"host": "catalog", "subset": "v1"}, "weight": 0},
                    {"destination": {"host": "catalog", "subset": "v2"}, "weight": 100},
                ]

    def new_pod(state: lab.State) -> None:
        state.add_catalog_version("v4", "node-1")
        state.catalog_routes().insert(0, lab.header_route("x-catalog-version", "v4", "v4"))

    def deny_admin(state: lab.State) -> None:
        state.add({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                   "metadata": {"name": "catalog-admin", "namespace": "shop"},
                   "spec": {"selector": {"matchLabels": {"app": "catalog"}}, "action": "DENY",
                            "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]}})  # fmt: skip

    def weights_half(state: lab.State) -> None:
        for destination, weight in zip(state.catalog_routes()[-1]["route"], (50, 50), strict=True):
            destination["weight"] = weight

    def scale_v2(state: lab.State) -> None:
        state.get("Deployment", "shop", "catalog-v2")["spec"]["replicas"] = 2

    def strict_shop(state: lab.State) -> None:
        strict = {"mtls": {"mode": "STRICT"}}
        state.add({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                   "metadata": {"name": "default", "namespace": "shop"}, "spec": strict})  # fmt: skip

    def fault(state: lab.State) -> None:
        abort = {"abort": {"httpStatus": 503, "percentage": {"value": 100}}}
        payments = {"destination": {"host": "payments.payments.svc.cluster.local"}}
        state.add({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                   "metadata": {"name": "payments", "namespace": "payments"},
                   "spec": {"hosts": ["payments.payments.svc.cluster.local"], "http": [
                       {"match": [{"headers": {"x-fail": {"exact": "yes"}}}], "fault": abort, "route": [payments]},
                       {"route": [payments]}]}})  # fmt: skip

    def remove_pod(state: lab.State) -> None:
        state.remove("Deployment", "shop", "catalog-v4")
        del state.catalog_routes()[0]  # the v4 header route

    def pods_seen(headers: tuple[str, ...] = (), tries: int = 12) -> set[str]:
        return {a.get("pod", "") for a in lab.answers(FRONTEND, CATALOG, *headers, count=tries)}

    def legacy_refused() -> bool:
        url = f"http://{lab.pod_ips()['shop/catalog-v1-0']}:8080/"
        return lab.in_pod("legacy/legacy-0", "curl", "-s", "-m", "2", url).returncode != 0

    def original(state: lab.State) -> None:
        state.docs = lab.State().docs

    return [
        ("route: header x-catalog-version v3", route,
         lambda: lab.answer(FRONTEND, CATALOG, "x-catalog-version: v3").get("pod") == "catalog-v3-0"),
        ("weights: every route to v1 0/100 to v2", weights_all_v2,
         lambda: pods_seen(tries=4) == {"catalog-v2-0"}),
        ("new pod catalog-v4-0 with its route", new_pod,
         lambda: lab.answer(FRONTEND, CATALOG, "x-catalog-version: v4").get("pod") == "catalog-v4-0"),
        ("policy: DENY /admin on catalog", deny_admin,
         lambda: lab.status_code(FRONTEND, CATALOG + "admin") == 403),
        ("weights: default route 50/50 v1/v2", weights_half,
         lambda: pods_seen() == {"catalog-v1-0", "catalog-v2-0"}),
        ("new pod catalog-v2-1 (scale)", scale_v2,
         lambda: "catalog-v2-1" in pods_seen(("x-catalog-version: v2",))),
        ("policy: STRICT mTLS in shop", strict_shop, legacy_refused),
        ("route: fault abort on payments", fault,
         lambda: lab.status_code(FRONTEND, "http://payments.payments:8080/", "x-fail: yes") == 503),
        ("pod catalog-v4-0 removed", remove_pod,
         lambda: lab.answer(FRONTEND, CATALOG, "x-catalog-version: v4").get("pod", "").startswith("catalog-v")
         and "catalog-v4-0" not in pods_seen(("x-catalog-version: v4",), 4)),
        ("back to the original state", original,
         lambda: pods_seen(tries=4) == {"catalog-v1-0"} and not legacy_refused()),
    ]  # fmt: skip


def test_ten_config_changes_under_load_fail_no_request(streams) -> None:
    running, work = streams
    started = time.time()
    state = lab.State()
    effects = []
    for index, (what, change, in_effect) in enumerate(_changes()):
        change(state)
        before = time.time()
        _apply(state, work / f"change-{index}")
        seconds = lab.time_to_effect(in_effect)
        apply_seconds = time.time() - before - seconds
        effects.append({"change": what, "at_s": round(before - started, 1), "apply_s": round(apply_seconds, 1),
                        "effect_s": round(seconds, 2)})  # fmt: skip
        assert seconds < 5, f"{what}: in effect {seconds:.1f} s after apply returned"
    lab.wait_for_requests(running, time.time())
    figures = lab.summary(running, started)
    _report("10 changes", {**figures, "changes": effects})
    assert figures["failed"] == 0, figures


def _stats(node: str, pattern: str) -> dict[str, int]:
    text = proxy.admin_get(node, 15000, f"/stats?usedonly&filter={urllib.parse.quote(pattern)}")
    return {name: int(value) for name, value in (line.split(": ", 1) for line in text.splitlines() if ": " in line)}


def test_h2_upgrade_policy_is_http2_between_proxies_and_http1_to_the_pod(streams) -> None:
    """catalog's port is `http`; with h2UpgradePolicy UPGRADE node-1's proxy speaks HTTP/2 to node-2's, which
    speaks HTTP/1.1 to catalog-v3-0 (the lab echo knows no other); no request fails while this is switched."""
    running, work = streams
    upgraded = lab.State()
    policy = {"connectionPool": {"http": {"h2UpgradePolicy": "UPGRADE"}}}
    upgraded.get("DestinationRule", "shop", "catalog")["spec"]["trafficPolicy"] = policy
    started = time.time()
    _apply(upgraded, work / "h2-upgrade")
    try:
        answers = lab.answers(FRONTEND, CATALOG, "end-user: jason", count=5)
        assert [a.get("pod") for a in answers] == ["catalog-v3-0"] * 5, answers
        sent = _stats("node-1", r"^cluster\.outbound\|8080\|v3\|catalog\.shop\..*\.upstream_cx_http._total$")
        received = _stats("node-2", r"^cluster\.inbound\|8080\|\|.*\.upstream_cx_http._total$")
        _report(
            "h2UpgradePolicy UPGRADE: connections by protocol", {"node-1 to v3": sent, "node-2 to its pods": received}
        )
        assert sent.get("cluster.outbound|8080|v3|catalog.shop.svc.cluster.local.upstream_cx_http2_total", 0) > 0
        assert received.get("cluster.inbound|8080||.upstream_cx_http1_total", 0) > 0
        assert received.get("cluster.inbound|8080||.upstream_cx_http2_total", 0) == 0
    finally:
        _apply(lab.State(), work / "h2-upgrade-undone")
    lab.wait_for_requests(running, time.time())
    figures = lab.summary(running, started)
    _report("h2UpgradePolicy on and off", figures)
    assert figures["failed"] == 0, figures


def test_fail_closed_while_the_proxy_is_down(streams) -> None:
    """With node-1's proxy stopped, meshed traffic is dropped there, never sent around it in plaintext."""
    programs = supervisor.current_programs()
    catalog_v1 = lab.pod_ips()["shop/catalog-v1-0"]
    stopped = {name: spec for name, spec in programs.items() if name != "envoy-node-1"}
    supervisor.set_programs(stopped)
    try:
        lab.time_to_effect(lambda: "envoy-node-1" not in supervisor.program_status())
        for client, url in [
            (FRONTEND, f"http://{catalog_v1}:8080/"),  # meshed -> meshed, same node
            (FRONTEND, f"http://{lab.pod_ips()['shop/catalog-v3-0']}:8080/"),  # meshed -> other node
            ("legacy/legacy-0", f"http://{catalog_v1}:8080/"),  # outside the mesh -> meshed
        ]:
            done = lab.in_pod(client, "curl", "-s", "-m", "2", url)
            assert done.returncode != 0 and '"pod"' not in done.stdout, f"{client} -> {url} bypassed the proxy"
    finally:
        supervisor.set_programs(programs)
    supervisor.wait_for_programs({"envoy-node-1"})
    version = json.loads((proxy.paths.lab_dir() / "state.json").read_text())["nodes"]["node-1"]["version"]
    lab.time_to_effect(lambda: proxy.served_versions("node-1", 15000)["lds"] == version, timeout=15)


def test_a_killed_proxy_is_back_within_5_s(streams) -> None:
    running, _work = streams
    before = supervisor.program_status()["envoy-node-1"]
    version = json.loads((proxy.paths.lab_dir() / "state.json").read_text())["nodes"]["node-1"]["version"]
    started = time.time()
    os.kill(before["pid"], signal.SIGKILL)

    def back() -> bool:
        now = supervisor.program_status()["envoy-node-1"]
        return now["pid"] not in (None, before["pid"]) and proxy.served_versions("node-1", 15000)["lds"] == version

    seconds = lab.time_to_effect(back, timeout=10)
    lab.wait_for_requests(running, time.time())
    _report("proxy killed", {"back_s": round(seconds, 2), **lab.summary(running, started)})
    assert seconds < 5


def test_an_envoy_upgrade_side_by_side_fails_no_request(streams, tmp_path: Path) -> None:
    running, _work = streams
    status = supervisor.program_status()
    real = os.path.realpath(f"/proc/{status['envoy-node-1']['pid']}/exe")
    upgraded = tmp_path / "envoy-next" / "envoy"
    upgraded.parent.mkdir()
    shutil.copy2(real, upgraded)  # the "new version": another binary at another path
    started = time.time()
    done = lab.dpumesh("lab", "apply", "--envoy", str(upgraded))
    assert done.returncode == 0, done.stderr
    lab.wait_for_requests(running, time.time())
    for node in ("node-1", "node-2"):
        assert os.path.realpath(f"/proc/{supervisor.program_status()[f'envoy-{node}']['pid']}/exe") == str(upgraded)
        assert f"{node}: dpu-proxy moved to {upgraded}" in done.stdout
    figures = lab.summary(running, started)
    _report("Envoy upgrade (hot restart onto a new binary)", figures)
    assert figures["failed"] == 0, figures


def test_a_new_proxy_that_does_not_come_up_is_abandoned(streams, tmp_path: Path) -> None:
    running, _work = streams
    current = json.loads((proxy.paths.lab_dir() / "state.json").read_text())["envoy"]
    broken = tmp_path / "envoy-broken"
    # Validates configs like the real one but cannot start: what a bad build looks like at runtime.
    broken.write_text(f'#!/bin/sh\ncase "$*" in *"--mode validate"*) exec {current} "$@";; esac\nexit 70\n')
    broken.chmod(0o755)
    started = time.time()
    done = lab.dpumesh("lab", "apply", "--envoy", str(broken))
    assert done.returncode != 0
    assert f"node node-1: the new dpu-proxy {broken} is not healthy" in done.stderr
    assert f"back on {current}" in done.stderr and "not healthy either" not in done.stderr
    lab.wait_for_requests(running, time.time())
    assert json.loads((proxy.paths.lab_dir() / "state.json").read_text())["nodes"]["node-1"]["envoy"] == current
    figures = lab.summary(running, started)
    _report("broken new Envoy abandoned", figures)
    assert figures["failed"] == 0, figures
