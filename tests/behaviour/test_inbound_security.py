"""Inbound mTLS and authorization with the real Envoy and real connections.

A network namespace plays a DPU node: pod IPs on its loopback, the test applications
listening on them, nftables TPROXY steering TCP to those IPs into the compiled
`inbound` listener (rule 3 of the steering model) unless it carries the bypass mark,
and Envoy serving exactly the listener, clusters and SDS files the compiler produced.
Clients connect from another address of the namespace with lab-CA certificates.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from support import envoy

from dpumesh.certs import LabCA, ensure_workload_certs
from dpumesh.compiler import tls
from dpumesh.compiler.context import CompileContext
from dpumesh.compiler.inbound import build_inbound
from dpumesh.compiler.registry import ServiceRegistry
from dpumesh.compiler.settings import MeshSettings, ProxyLayout
from dpumesh.errors import Diagnostics
from dpumesh.state import build_state

pytestmark = [
    pytest.mark.envoy,
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces and TPROXY"),
]

PROBE = str(Path(__file__).resolve().parents[1] / "support" / "probe.py")
WEB, LEGACY, CLIENT_IP = "10.244.1.5", "10.244.1.6", "10.244.1.200"
IDP_IP, IDP_PORT = "10.244.1.250", 8099  # an identity provider publishing its keys (jwksUri), in the namespace
ADMIN = 15000

ISSUER = "https://issuer.example"  # slashes in the issuer: request principals are matched split at each
IDP_ISSUER = "https://idp.example"  # its keys are fetched by the proxy from jwksUri
SIGNING_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
IDP_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
FORGING_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def key_set(private: rsa.RSAPrivateKey) -> str:
    """The JSON Web Key Set publishing a signing key's public half."""
    numbers = private.public_key().public_numbers()
    n, e = (v.to_bytes((v.bit_length() + 7) // 8, "big") for v in (numbers.n, numbers.e))
    key = {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "lab", "n": _b64(n), "e": _b64(e)}
    return json.dumps({"keys": [key]})


def token(subject: str, issuer: str = ISSUER, key: rsa.RSAPrivateKey = SIGNING_KEY) -> str:
    """An RS256 JWT, as an identity provider signs one."""
    header = _b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "lab"}).encode())
    claims = _b64(json.dumps({"iss": issuer, "sub": subject, "exp": int(time.time()) + 3600}).encode())
    signature = key.sign(f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{claims}.{_b64(signature)}"


JWKS = json.dumps(key_set(SIGNING_KEY))  # a JSON string is a YAML double-quoted scalar

STATE = textwrap.dedent(
    f"""
    apiVersion: v1
    kind: Node
    metadata: {{name: node-1, labels: {{dpumesh.io/dpu: "true"}}}}
    spec: {{podCIDR: 10.244.1.0/24}}
    ---
    apiVersion: v1
    kind: Namespace
    metadata: {{name: shop, labels: {{istio-injection: enabled}}}}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {{name: web, namespace: shop, labels: {{app: web}}}}
    spec:
      nodeName: node-1
      serviceAccountName: web
      containers: [{{name: web, ports: [{{containerPort: 8080}}, {{containerPort: 9000}}]}}]
    status: {{podIP: {WEB}}}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {{name: legacy, namespace: shop, labels: {{app: legacy}}}}
    spec:
      nodeName: node-1
      serviceAccountName: legacy
      containers: [{{name: legacy, ports: [{{containerPort: 8080}}, {{containerPort: 8081}}]}}]
    status: {{podIP: {LEGACY}}}
    ---
    apiVersion: v1
    kind: Service
    metadata: {{name: web, namespace: shop}}
    spec:
      selector: {{app: web}}
      ports: [{{name: http, port: 80, targetPort: 8080}}, {{name: tcp-echo, port: 9000}}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {{name: legacy, namespace: shop}}
    spec:
      selector: {{app: legacy}}
      ports:
      - {{name: http, port: 80, targetPort: 8080}}
      - {{name: http-admin, port: 8081}}
      - {{name: https, port: 8443}}
    ---
    apiVersion: security.istio.io/v1
    kind: PeerAuthentication
    metadata: {{name: web-strict, namespace: shop}}
    spec:
      selector: {{matchLabels: {{app: web}}}}
      mtls: {{mode: STRICT}}
    ---
    apiVersion: security.istio.io/v1
    kind: PeerAuthentication
    metadata: {{name: legacy-admin, namespace: shop}}
    spec:
      selector: {{matchLabels: {{app: legacy}}}}
      portLevelMtls: {{8081: {{mode: STRICT}}}}
    ---
    apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata: {{name: web-callers, namespace: shop}}
    spec:
      selector: {{matchLabels: {{app: web}}}}
      rules:
      - from: [{{source: {{principals: [cluster.local/ns/shop/sa/client, cluster.local/ns/shop/sa/intruder]}}}}]
    ---
    apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata: {{name: no-intruder, namespace: shop}}
    spec:
      action: DENY
      rules:
      - from: [{{source: {{principals: [cluster.local/ns/shop/sa/intruder]}}}}]
    ---
    apiVersion: security.istio.io/v1
    kind: RequestAuthentication
    metadata: {{name: legacy-jwt, namespace: shop}}
    spec:
      selector: {{matchLabels: {{app: legacy}}}}
      jwtRules: [{{issuer: "{ISSUER}", jwks: {JWKS}}}]
    ---
    apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata: {{name: private-for-alice, namespace: shop}}
    spec:
      selector: {{matchLabels: {{app: legacy}}}}
      action: DENY
      rules:
      - to: [{{operation: {{ports: ["8080"], paths: [/private]}}}}]  # ports: a DENY rule on TCP drops paths
        from: [{{source: {{notRequestPrincipals: ["{ISSUER}/alice", "{IDP_ISSUER}/carol"]}}}}]
    ---
    apiVersion: security.istio.io/v1
    kind: RequestAuthentication
    metadata: {{name: legacy-idp, namespace: shop}}
    spec:
      selector: {{matchLabels: {{app: legacy}}}}
      jwtRules: [{{issuer: "{IDP_ISSUER}", jwksUri: "http://{IDP_IP}:{IDP_PORT}/keys.json"}}]
    ---
    apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata: {{name: no-admin-path, namespace: shop}}
    spec:
      selector: {{matchLabels: {{app: legacy}}}}
      action: DENY
      rules:
      - to: [{{operation: {{ports: ["8080"], paths: ["/admin*"]}}}}]
    """
)


def sh(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, text=True)


def steering_rules(ns: str, layout: ProxyLayout) -> str:
    """Rule 3 of the steering model for the test pods, plus the bypass of proxy-made connections."""
    return textwrap.dedent(
        f"""
        table ip dpumesh_test {{
          chain output {{
            type route hook output priority mangle; policy accept;
            meta mark {layout.bypass_mark} ct mark set {layout.bypass_mark}
          }}
          chain prerouting {{
            type filter hook prerouting priority mangle; policy accept;
            ct mark {layout.bypass_mark} accept
            ip daddr {{ {WEB}, {LEGACY} }} meta l4proto tcp \\
              tproxy to :{layout.inbound_port} meta mark set {layout.capture_mark} accept
          }}
        }}
        """
    )


class Node:
    def __init__(self, ns: str, root: Path):
        self.ns, self.root = ns, root
        self.certs = root / "clients"

    def probe(self, ip: str, port: int, *options: str) -> dict:
        out = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.ns,
                sys.executable,
                PROBE,
                "connect",
                ip,
                str(port),
                "--source",
                CLIENT_IP,
                *options,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return json.loads(out.stdout)

    def identity(self, sa: str, alpn: str = "istio-peer-exchange,istio") -> list[str]:
        secret = self.certs / f"spiffe~shop~{sa}"
        return [
            "--cert",
            f"{secret}/cert.pem",
            "--key",
            f"{secret}/key.pem",
            "--ca",
            f"{self.certs}/root-cert.pem",
            "--alpn",
            alpn,
        ]

    def stat(self, name: str) -> int:
        return envoy.listener_stats(ADMIN, self.ns).get(name, 0)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    root = tmp_path_factory.mktemp("inbound")
    layout = ProxyLayout(
        config_dir=f"{root}/envoy", cert_dir=f"{root}/certs", sds_socket=f"{root}/sds.sock", admin_port=ADMIN
    )
    mesh = MeshSettings(proxy=layout)
    state = build_state(list(yaml.safe_load_all(STATE)))
    diag = Diagnostics()
    ctx = CompileContext(state, mesh, "node-1", diag, ServiceRegistry(state, mesh.cluster_domain, diag))
    listener, clusters = build_inbound(ctx)
    assert not diag.errors, diag.errors
    ca = LabCA.ensure(root / "ca", mesh.trust_domain)
    ensure_workload_certs(layout.cert_dir, ca, mesh.trust_domain, tls.local_identities(ctx))
    clients = [("shop", "client"), ("shop", "intruder"), ("shop", "stranger"), ("shop", "app")]
    ensure_workload_certs(root / "clients", ca, mesh.trust_domain, clients)
    config = envoy.write_config(root, [listener], clusters, admin_port=ADMIN, sds_socket=layout.sds_socket)

    ns = f"dpm-inb-{os.getpid()}"
    sh("ip", "netns", "add", ns)
    servers: list[subprocess.Popen] = []
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        for ip in (WEB, LEGACY, CLIENT_IP, IDP_IP):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/32", "dev", "lo")
        subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "-f", "-"], input=steering_rules(ns, layout), check=True, text=True
        )
        app_cert = root / "clients" / "spiffe~shop~app"
        (root / "keys.json").write_text(key_set(IDP_KEY))
        for args in (
            ("serve-file", IDP_IP, str(IDP_PORT), str(root / "keys.json")),
            ("serve-http", WEB, "8080"),
            ("serve-echo", WEB, "9000"),
            ("serve-echo", WEB, "7777"),
            ("serve-http", LEGACY, "8080"),
            ("serve-http", LEGACY, "8081"),
            ("serve-echo", LEGACY, "7777"),
            ("serve-tls", LEGACY, "8443", f"{app_cert}/cert.pem", f"{app_cert}/key.pem"),
        ):
            server = subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, PROBE, *args], stdout=subprocess.PIPE, text=True
            )
            servers.append(server)
            assert server.stdout.readline().strip() == "ready"
        with (
            envoy.sds_service(Path(layout.sds_socket), layout.cert_dir),
            envoy.running(config, ADMIN, root / "envoy.log", netns=ns),
        ):
            yield Node(ns, root)
    finally:
        for server in servers:
            server.terminate()
            server.wait()
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_strict_refuses_plaintext(node: Node) -> None:
    rejected = "tcp.inbound_plaintext_rejected.downstream_cx_total"
    before = node.stat(rejected)
    result = node.probe(WEB, 8080, "--http", "/")
    assert "status" not in result, result
    assert result.get("data", "") == "", result
    time.sleep(0.2)
    assert node.stat(rejected) == before + 1


def test_strict_mtls_allowed_principal_gets_200_with_xfcc(node: Node) -> None:
    result = node.probe(WEB, 8080, "--http", "/hello", *node.identity("client"))
    assert result["peer_uris"] == ["spiffe://cluster.local/ns/shop/sa/web"]
    assert result["status"] == 200, result
    headers = json.loads(result["body"])["headers"]
    xfcc = headers.get("x-forwarded-client-cert") or headers.get("X-Forwarded-Client-Cert")
    assert "URI=spiffe://cluster.local/ns/shop/sa/client" in xfcc


def test_deny_policy_gives_403_rbac_access_denied(node: Node) -> None:
    result = node.probe(WEB, 8080, "--http", "/", *node.identity("intruder"))
    assert result["status"] == 403
    assert result["body"] == "RBAC: access denied"


def test_allow_policy_without_matching_rule_denies(node: Node) -> None:
    result = node.probe(WEB, 8080, "--http", "/", *node.identity("stranger"))
    assert result["status"] == 403
    assert result["body"] == "RBAC: access denied"


def test_tcp_port_authorization(node: Node) -> None:
    allowed = node.probe(WEB, 9000, "--send", "ping-pong", *node.identity("client"))
    assert allowed["data"] == "ping-pong", allowed
    denied = node.probe(WEB, 9000, "--send", "ping-pong", *node.identity("intruder"))
    assert denied.get("data", "") == "", denied


def test_strict_pod_refuses_plaintext_on_undeclared_port(node: Node) -> None:
    assert node.probe(WEB, 7777, "--send", "ping-pong").get("data", "") == ""
    assert node.probe(WEB, 7777, "--send", "ping-pong", *node.identity("client"))["data"] == "ping-pong"


def test_permissive_accepts_plaintext_and_mtls(node: Node) -> None:
    plain = node.probe(LEGACY, 8080, "--http", "/")
    assert plain["status"] == 200
    assert "x-forwarded-client-cert" not in {k.lower() for k in json.loads(plain["body"])["headers"]}
    mutual = node.probe(LEGACY, 8080, "--http", "/", *node.identity("client"))
    assert mutual["peer_uris"] == ["spiffe://cluster.local/ns/shop/sa/legacy"]
    assert mutual["status"] == 200


def test_port_level_strict_inside_permissive_pod(node: Node) -> None:
    assert "status" not in node.probe(LEGACY, 8081, "--http", "/")
    assert node.probe(LEGACY, 8081, "--http", "/", *node.identity("client"))["status"] == 200


def test_permissive_passes_foreign_tls_to_the_application(node: Node) -> None:
    result = node.probe(LEGACY, 8443, "--alpn", "http/1.1")
    assert result["data"] == "app-tls", result
    assert result["peer_uris"] == ["spiffe://cluster.local/ns/shop/sa/app"]


def test_permissive_passthrough_for_undeclared_port(node: Node) -> None:
    result = node.probe(LEGACY, 7777, "--send", "ping-pong")
    assert result.get("data") == "ping-pong", result


def test_http_deny_on_path(node: Node) -> None:
    assert node.probe(LEGACY, 8080, "--http", "/admin/x")["status"] == 403
    assert node.probe(LEGACY, 8080, "--http", "/public")["status"] == 200


def bearer(jwt: str) -> tuple[str, str]:
    return ("--header", f"authorization: Bearer {jwt}")


def test_request_principal_from_a_validated_token_opens_a_path(node: Node) -> None:
    """RequestAuthentication validates the token; the DENY rule reads its `iss/sub` (requestPrincipals)."""
    assert node.probe(LEGACY, 8080, "--http", "/private")["status"] == 403
    assert node.probe(LEGACY, 8080, "--http", "/private", *bearer(token("bob")))["status"] == 403
    allowed = node.probe(LEGACY, 8080, "--http", "/private", *bearer(token("alice")))
    assert allowed["status"] == 200, allowed
    assert "authorization" not in {k.lower() for k in json.loads(allowed["body"])["headers"]}  # not forwarded


def test_an_invalid_token_is_refused_and_a_missing_one_is_not(node: Node) -> None:
    forged = node.probe(LEGACY, 8080, "--http", "/", *bearer(token("alice", key=FORGING_KEY)))
    assert forged["status"] == 401, forged
    stranger = node.probe(LEGACY, 8080, "--http", "/", *bearer(token("alice", issuer="https://other.example")))
    assert stranger["status"] == 401, stranger
    assert node.probe(LEGACY, 8080, "--http", "/")["status"] == 200


def test_keys_from_jwks_uri_are_fetched_by_the_proxy(node: Node) -> None:
    """A jwksUri rule: the proxy fetched the identity provider's keys itself, before taking traffic."""
    fetches = f"cluster.jwks|{IDP_PORT}|http|{IDP_IP}.upstream_rq_200"
    assert node.stat(fetches) >= 1
    carol = node.probe(LEGACY, 8080, "--http", "/private", *bearer(token("carol", IDP_ISSUER, IDP_KEY)))
    assert carol["status"] == 200, carol  # her validated token is a request principal the DENY rule spares
    dave = node.probe(LEGACY, 8080, "--http", "/private", *bearer(token("dave", IDP_ISSUER, IDP_KEY)))
    assert dave["status"] == 403, dave
    forged = node.probe(LEGACY, 8080, "--http", "/", *bearer(token("carol", IDP_ISSUER, FORGING_KEY)))
    assert forged["status"] == 401, forged
