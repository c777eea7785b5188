"""RequestAuthentication's filter per pod, and request principals matched on the token's claims."""

from __future__ import annotations

import base64
import itertools
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from dpumesh.compiler.jwt import FILTER, PAYLOAD, request_principal

TOKENS = [
    ("https://issuer.example", "alice"),
    ("https://issuer.example", "bob"),
    ("https://issuer.example/tenant", "alice"),
    ("issuer", "team/alice"),
    ("other", "alice"),
]


def holds(principal: dict[str, Any], claims: dict[str, str] | None) -> bool:
    """Envoy's RBAC principal evaluation, for the matchers request_principal uses."""
    if "or_ids" in principal:
        return any(holds(p, claims) for p in principal["or_ids"]["ids"])
    if "and_ids" in principal:
        return all(holds(p, claims) for p in principal["and_ids"]["ids"])
    if "not_id" in principal:
        return not holds(principal["not_id"], claims)
    if "any" in principal:
        return True
    meta = principal["metadata"]
    assert meta["filter"] == FILTER and meta["path"][0] == {"key": PAYLOAD}
    value = (claims or {}).get(meta["path"][1]["key"])
    if value is None:
        return False
    if meta["value"].get("present_match"):
        return True
    [(kind, text)] = meta["value"]["string_match"].items()
    return {"exact": value == text, "prefix": value.startswith(text), "suffix": value.endswith(text)}[kind]


def istio(pattern: str, joined: str) -> bool:
    """Istio's request principal match on `<iss>/<sub>`: `*`, `x*`, `*x` or exact."""
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return joined.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return joined.endswith(pattern[1:])
    return joined == pattern


PATTERNS = [
    "*",
    "https://issuer.example/alice",
    "https://issuer.example/tenant/alice",
    "issuer/team/alice",
    "https://issuer.example/*",
    "https://issuer.example/tenant*",
    "https:*",
    "*/alice",
    "*alice",
    "*tenant/alice",
    "*example/bob",
    "noslash",
]


@pytest.mark.parametrize(("pattern", "token"), list(itertools.product(PATTERNS, TOKENS)))
def test_request_principal_matches_as_istio_matches_iss_slash_sub(pattern, token):
    iss, sub = token
    assert holds(request_principal(pattern), {"iss": iss, "sub": sub}) == istio(pattern, f"{iss}/{sub}")
    assert holds(request_principal(pattern), None) is False  # no validated token: no request principal


# The modulus of a real 2048-bit RSA key: Envoy refuses a key set it cannot load.
MODULUS = (
    base64.urlsafe_b64encode(
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_numbers()
        .n.to_bytes(256, "big")
    )
    .rstrip(b"=")
    .decode()
)

RULES = """
apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
---
apiVersion: v1
kind: Pod
metadata: {name: api-0, namespace: shop, labels: {app: api}}
spec: {nodeName: node-1, containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: Pod
metadata: {name: other-0, namespace: shop, labels: {app: other}}
spec: {nodeName: node-1, containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec: {selector: {app: api}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: shop}
spec: {selector: {app: other}, ports: [{name: http, port: 80}]}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: api-jwt, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  jwtRules:
  - issuer: https://issuer.example
    jwks: '{"keys": [{"kty": "RSA", "alg": "RS256", "n": "MODULUS", "e": "AQAB"}]}'
    audiences: [api]
    fromHeaders: [{name: x-token, prefix: "Token "}]
    forwardOriginalToken: true
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: mesh-jwt, namespace: istio-system}
spec:
  jwtRules: [{issuer: https://remote.example, jwksUri: https://remote.example/keys}]
""".replace("MODULUS", MODULUS)


def jwt_filters(c, pod_ip: str) -> list[dict]:
    inbound = c.listener("inbound")
    found = []
    for chain in inbound["filter_chains"]:
        if pod_ip not in chain["name"]:
            continue
        for f in chain["filters"]:
            for h in f["typed_config"].get("http_filters", []):
                if h["name"] == FILTER:
                    found.append(h["typed_config"])
    return found


def test_each_pod_gets_the_providers_of_the_policies_that_select_it(compile_docs, tmp_path):
    from support.compiled import pod_ip

    from dpumesh.bundle import validate_with_envoy, write_tree
    from dpumesh.compiler.parity import features_of

    c = compile_docs(RULES)
    configs = jwt_filters(c, pod_ip(c, "shop/api-0"))  # the mTLS and the plaintext chain (PERMISSIVE)
    assert len(configs) == 2 and configs[0] == configs[1]
    config = configs[0]
    assert list(config["providers"]) == ["shop/api-jwt/0", "istio-system/mesh-jwt/0"]  # the root's applies too
    provider = config["providers"]["shop/api-jwt/0"]
    assert provider["audiences"] == ["api"]
    assert provider["from_headers"] == [{"name": "x-token", "value_prefix": "Token "}]
    assert provider["forward"] is True
    assert config["rules"][0]["requires"]["requires_any"]["requirements"] == [
        {"provider_name": "shop/api-jwt/0"},
        {"provider_name": "istio-system/mesh-jwt/0"},
        {"allow_missing": {}},
    ]
    # The jwksUri rule: the proxy fetches the keys through a cluster of its own, verified as the URI's host.
    [remote] = [config["providers"]["istio-system/mesh-jwt/0"]["remote_jwks"]]
    assert remote["http_uri"] == {
        "uri": "https://remote.example/keys",
        "cluster": "jwks|443|https|remote.example",
        "timeout": "5s",
    }
    assert remote["cache_duration"] == "1200s"
    fetcher = c.cluster("jwks|443|https|remote.example")
    assert fetcher["type"] == "STRICT_DNS"
    endpoint = fetcher["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "remote.example", "port_value": 443}
    context = fetcher["transport_socket"]["typed_config"]
    assert context["sni"] == "remote.example"
    validation = context["common_tls_context"]["validation_context"]
    assert validation["trusted_ca"] == {"filename": "/etc/ssl/certs/ca-certificates.crt"}
    assert validation["match_typed_subject_alt_names"] == [{"san_type": "DNS", "matcher": {"exact": "remote.example"}}]
    others = jwt_filters(c, pod_ip(c, "shop/other-0"))  # only the root namespace's rule selects it
    assert len(others) == 2 and others[0] == others[1]
    assert list(others[0]["providers"]) == ["istio-system/mesh-jwt/0"]
    parity = json.loads(c.bundle.files["parity.json"])
    statuses = {f["feature"]: f["status"] for f in features_of(parity, "shop/api-0")}
    assert statuses["RequestAuthentication/shop/api-jwt jwtRules[0]"] == "kept"
    assert statuses["RequestAuthentication/istio-system/mesh-jwt jwtRules[0]"] == "kept-with-difference"
    assert write_tree(
        tmp_path / "node", c.bundle.files, lambda d: validate_with_envoy(d, "/etc/dpumesh/proxy/current/envoy")
    )


LITERAL_HOSTS = (
    RULES.split("---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication")[0]
    + """---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: api-idp, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  jwtRules:
  - {issuer: plain, jwksUri: "http://10.9.0.7:8080/keys"}
  - {issuer: tls, jwksUri: "https://10.9.0.7/keys"}
  - {issuer: again, jwksUri: "http://10.9.0.7:8080/other-keys"}
"""
)


def test_jwks_uri_of_an_ip_address_is_a_static_cluster_per_scheme_host_and_port(compile_docs, tmp_path):
    from dpumesh.bundle import validate_with_envoy, write_tree

    c = compile_docs(LITERAL_HOSTS)
    names = sorted(n for n in c.cluster_names() if n.startswith("jwks|"))
    assert names == ["jwks|443|https|10.9.0.7", "jwks|8080|http|10.9.0.7"]  # two rules share the http one
    plain = c.cluster("jwks|8080|http|10.9.0.7")
    assert plain["type"] == "STATIC" and "transport_socket" not in plain
    context = c.cluster("jwks|443|https|10.9.0.7")["transport_socket"]["typed_config"]
    assert "sni" not in context  # no SNI for an address
    validation = context["common_tls_context"]["validation_context"]
    assert validation["match_typed_subject_alt_names"] == [{"san_type": "IP_ADDRESS", "matcher": {"exact": "10.9.0.7"}}]
    assert write_tree(
        tmp_path / "node", c.bundle.files, lambda d: validate_with_envoy(d, "/etc/dpumesh/proxy/current/envoy")
    )
