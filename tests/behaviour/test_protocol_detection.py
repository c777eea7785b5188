"""Ports whose protocol is detected, and server-first protocols, through the real Envoy.

State: tests/behaviour/states/outbound. Service apps/detect declares port 8000 with no protocol name or
appProtocol, and a VirtualService answers 418 for `x-case: teapot` on it. Service shop/guarded (in the mesh) does
the same, with an AuthorizationPolicy that allows paths under /public only. Service apps/banner declares `tcp-banner`
6000; the test runs a server there that speaks first and never reads.
"""

from __future__ import annotations

import secrets
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.envoy, pytest.mark.netns]

CLIENT = "open/open-client-0"
DETECT = "apps/detect"
GUARDED = "shop/guarded"
BANNER_POD = "apps/banner-0"
BANNER = "220 banner ready\r\n"
SERVE_BANNER = f"""
import socket
server = socket.create_server(("0.0.0.0", 6000))
print("listening", flush=True)
while True:
    conn, _ = server.accept()
    conn.sendall({BANNER.encode()!r})
    conn.close()
"""


def test_http_on_a_detected_port_gets_the_virtual_service_routes(outbound_lab):
    path = f"/detect-{secrets.token_hex(4)}"
    teapot = outbound_lab.call(CLIENT, DETECT, path=path, headers={"x-case": "teapot"})[0]
    assert teapot.status == 418, teapot
    assert outbound_lab.requests_seen("apps/detect-0", path) == []
    reply = outbound_lab.call(CLIENT, DETECT, path=path)[0]
    assert reply.status == 200, reply
    assert reply.json()["pod"] == "detect-0"
    assert len(outbound_lab.requests_seen("apps/detect-0", path)) == 1


def test_other_bytes_on_a_detected_port_reach_the_server_as_tcp(outbound_lab):
    before = outbound_lab.counter("http_inspector.http_not_found")
    vip = outbound_lab.service(DETECT).cluster_ip
    answer = outbound_lab.tcp(CLIENT, vip, 8000, send="HELO not http\r\n\r\n")
    # The application's own HTTP server (Python's) refuses the line: the bytes crossed both proxies as TCP.
    assert "Message: Bad request version ('http')" in answer["received"], answer
    assert outbound_lab.counter("http_inspector.http_not_found") == before + 1


def test_a_server_first_protocol_is_forwarded_without_waiting_for_the_client(outbound_lab):
    netns = outbound_lab.pod_netns[BANNER_POD]
    server = subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, "-c", SERVE_BANNER], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout.readline().strip() == "listening"
        vip = outbound_lab.service("apps/banner").cluster_ip
        answer = outbound_lab.tcp(CLIENT, vip, 6000, timeout=5)
        assert answer["received"] == BANNER, answer
        assert answer["elapsed"] < 2, answer  # an inspector waiting for the client would hold it 15 s
    finally:
        server.kill()
        server.wait()


def test_the_server_side_detects_http_and_applies_http_authorization_rules(outbound_lab):
    """Through both sides of the proxy, with mTLS between them: the client side offers ALPN istio-http/1.1 for
    HTTP, so the server side applies the ALLOW rule's paths, as a sidecar would. A TCP client matches no HTTP
    rule and is refused, as under Istio."""
    public = outbound_lab.call(CLIENT, GUARDED, path="/public/report")[0]
    assert public.status == 200, public
    assert public.json()["pod"] == "guarded-0"
    private = outbound_lab.call(CLIENT, GUARDED, path="/private")[0]
    assert private.status == 403 and private.body == "RBAC: access denied", private
    assert outbound_lab.requests_seen("shop/guarded-0", "/private") == []
    vip = outbound_lab.service(GUARDED).cluster_ip
    answer = outbound_lab.tcp(CLIENT, vip, 8000, send="HELO not http\r\n\r\n")
    assert answer["received"] == "", answer


def test_a_sidecar_ingress_listener_forwards_to_its_default_endpoint(outbound_lab):
    """shop/front's Service targets 9080, its Sidecar ingress listener, whose defaultEndpoint is the application's
    port 8080: the request crosses both sides of the proxy (mTLS between them) and reaches 8080. Without the
    listener the server side forwards to 9080, where nothing listens."""
    path = f"/front-{secrets.token_hex(4)}"
    reply = outbound_lab.call(CLIENT, "shop/front", path=path)[0]
    assert reply.status == 200, reply
    assert reply.json()["pod"] == "front-0"
    assert len(outbound_lab.requests_seen("shop/front-0", path)) == 1
