"""Reads inside a network namespace from a thread (dpumesh.lab.netns), against `ss` and a real server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest

from dpumesh.errors import DpumeshError
from dpumesh.lab.netns import http_get, listening_tcp_ports

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


@pytest.fixture
def netns():
    name = f"nstest-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _serve(netns: str, port: int) -> subprocess.Popen:
    code = (
        "import http.server as h\n"
        "class H(h.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        status = 200 if self.path == '/ready' else 503\n"
        "        self.send_response(status); self.end_headers(); self.wfile.write(b'LIVE')\n"
        "    def log_message(self, *a): pass\n"
        f"h.HTTPServer(('127.0.0.1', {port}), H).serve_forever()\n"
    )
    server = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", code])
    deadline = time.monotonic() + 10
    while port not in listening_tcp_ports(netns):
        assert time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.05)
    return server


def test_listening_ports_are_those_ss_sees_in_the_namespace_and_not_the_hosts(netns):
    server = _serve(netns, 18080)
    try:
        seen = listening_tcp_ports(netns)
        ss = subprocess.run(["ip", "netns", "exec", netns, "ss", "-Hltn"], capture_output=True, text=True).stdout
        assert seen == {int(line.split()[3].rsplit(":", 1)[1]) for line in ss.splitlines()} == {18080}
    finally:
        server.terminate()
        server.wait()
    assert listening_tcp_ports(netns) == set()


def test_http_get_reaches_the_namespaces_loopback_and_refuses_an_error_status(netns):
    server = _serve(netns, 18081)
    try:
        assert http_get(netns, 18081, "/ready") == "LIVE"
        with pytest.raises(DpumeshError, match="HTTP 503"):
            http_get(netns, 18081, "/stats")
    finally:
        server.terminate()
        server.wait()
    with pytest.raises(DpumeshError, match="Connection refused"):
        http_get(netns, 18081, "/ready")


def test_a_missing_namespace_is_named(netns):
    with pytest.raises(DpumeshError, match="network namespace nstest-none"):
        listening_tcp_ports("nstest-none")


def test_a_port_in_use_is_refused_naming_its_process_and_a_free_one_passes(netns):
    from dpumesh.lab.preflight import check_ports_free

    server = _serve(netns, 18082)
    try:
        check_ports_free(netns, [18083], "the test")
        with pytest.raises(
            DpumeshError, match=r"ports needed by the test are in use in network namespace .*18082 \(.*python"
        ):
            check_ports_free(netns, [18082, 18083], "the test")
    finally:
        server.terminate()
        server.wait()
