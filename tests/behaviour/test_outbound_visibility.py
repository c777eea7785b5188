"""What each source namespace may reach: exportTo, REGISTRY_ONLY and ALLOW_ANY, through the real Envoy.

State: tests/behaviour/states/outbound. Service team-a/private is exported to "."
only; clients in `shop` run under a Sidecar with REGISTRY_ONLY whose egress leaves out
team-a, clients in `open` under the mesh default ALLOW_ANY; apps/external-0 is in no
Service at all. team-a holds a VirtualService for open/whoami that aborts with 418.
"""

from __future__ import annotations

import secrets

import pytest

pytestmark = [pytest.mark.envoy, pytest.mark.netns]

PRIVATE = "team-a/private"
PRIVATE_POD = "team-a/private-0"
EXTERNAL_POD = "apps/external-0"
PASSTHROUGH_REQUESTS = "cluster.PassthroughCluster.upstream_rq_total"
PASSTHROUGH_CONNECTIONS = "cluster.PassthroughCluster.upstream_cx_total"


def token() -> str:
    return secrets.token_hex(4)


def to_pod(lab, client: str, pod: str, port: int, host: str, path: str):
    request = {"ip": lab.pod(pod).ip, "port": port, "host": host, "path": path, "timeout": 5}
    return lab.send(client, [request])[0]


@pytest.mark.parametrize("host", ["private", "private.team-a", "private.team-a.svc.cluster.local"])
def test_export_to_dot_is_reachable_from_its_own_namespace(outbound_lab, host):
    path = f"/own-{token()}"
    reply = outbound_lab.call("team-a/team-a-client-0", PRIVATE, path=path, host=host)[0]
    assert reply.status == 200, reply
    assert reply.json()["pod"] == "private-0"
    assert len(outbound_lab.requests_seen(PRIVATE_POD, path)) == 1


def test_export_to_dot_is_unknown_to_another_namespace_under_registry_only(outbound_lab):
    path = f"/hidden-{token()}"
    replies = outbound_lab.call("shop/shop-client-0", PRIVATE, path=path, count=3)
    assert [r.status for r in replies] == [502] * 3, replies
    assert outbound_lab.requests_seen(PRIVATE_POD, path) == []


def test_export_to_dot_is_passed_through_for_another_namespace_under_allow_any(outbound_lab):
    path = f"/passthrough-{token()}"
    before = outbound_lab.counter(PASSTHROUGH_REQUESTS)
    reply = outbound_lab.call("open/open-client-0", PRIVATE, path=path)[0]
    # Not routed as the Service (the host is not visible): passed to the original destination, the VIP,
    # which the node's kube-proxy translates to the pod.
    assert reply.status == 200, reply
    assert reply.json()["pod"] == "private-0"
    assert outbound_lab.counter(PASSTHROUGH_REQUESTS) == before + 1


def test_registry_only_refuses_an_unknown_http_host(outbound_lab):
    path = f"/unknown-{token()}"
    reply = to_pod(outbound_lab, "shop/shop-client-0", EXTERNAL_POD, 80, "external.example.com", path)
    assert reply.status == 502, reply
    assert outbound_lab.requests_seen(EXTERNAL_POD, path) == []


def test_allow_any_passes_an_unknown_http_host_through(outbound_lab):
    path = f"/unknown-{token()}"
    before = outbound_lab.counter(PASSTHROUGH_REQUESTS)
    reply = to_pod(outbound_lab, "open/open-client-0", EXTERNAL_POD, 80, "external.example.com", path)
    assert reply.status == 200, reply
    assert reply.json()["pod"] == "external-0"
    assert outbound_lab.counter(PASSTHROUGH_REQUESTS) == before + 1


def test_registry_only_drops_tcp_to_a_port_no_service_uses(outbound_lab):
    path = f"/unknown-port-{token()}"
    reply = to_pod(outbound_lab, "shop/shop-client-0", EXTERNAL_POD, 8080, "external.example.com", path)
    assert reply.status == 0, reply  # BlackHoleCluster: the connection closes without an answer
    assert outbound_lab.requests_seen(EXTERNAL_POD, path) == []


def test_allow_any_passes_tcp_to_a_port_no_service_uses(outbound_lab):
    path = f"/unknown-port-{token()}"
    before = outbound_lab.counter(PASSTHROUGH_CONNECTIONS)
    reply = to_pod(outbound_lab, "open/open-client-0", EXTERNAL_POD, 8080, "external.example.com", path)
    assert reply.status == 200, reply
    seen = reply.json()
    assert seen["pod"] == "external-0"
    assert "x-request-id" not in seen["headers"]  # plain TCP proxying: no HTTP processing on the way
    assert outbound_lab.counter(PASSTHROUGH_CONNECTIONS) == before + 1


def test_a_virtual_service_the_sidecar_egress_does_not_import_is_not_applied(outbound_lab):
    teapot = {"x-case": "teapot"}
    path = f"/teapot-{token()}"
    assert [r.status for r in outbound_lab.call("open/open-client-0", "open/whoami", path=path, headers=teapot)] == [
        418
    ]
    assert outbound_lab.requests_seen("open/whoami-0", path) == []
    reply = outbound_lab.call("shop/shop-client-0", "open/whoami", path=path, headers=teapot)[0]
    assert reply.status == 200, reply  # whoami is imported (open/*), team-a's VirtualService is not
    assert len(outbound_lab.requests_seen("open/whoami-0", path)) == 1
