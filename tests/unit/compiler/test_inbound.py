"""The inbound listener, its clusters, the TLS sockets and SDS files; checked by the real Envoy."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dpumesh.certs import LabCA, ensure_workload_certs
from dpumesh.compiler import tls
from dpumesh.compiler.inbound import REJECT_CHAIN, build_inbound
from dpumesh.sds import SecretStore
from tests.support import envoy
from tests.support.state import context, errors, pod, warnings

APPS = (
    pod("web", "10.244.1.5", "app: web")
    + pod("db", "10.244.1.6", "app: db", sa="database")
    + pod("remote", "10.244.2.5", "app: web", node="node-2")
    + """
---
apiVersion: v1
kind: Pod
metadata: {name: plain, namespace: default, labels: {app: web, sidecar.istio.io/inject: "false"}}
spec: {nodeName: node-1, containers: [{name: c}]}
status: {podIP: 10.244.1.9}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}, {name: grpc-api, port: 9090}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec:
  selector: {app: db}
  ports: [{name: tcp-sql, port: 5432}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: web, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  mtls: {mode: STRICT}
  portLevelMtls: {9090: {mode: PERMISSIVE}, 7070: {mode: DISABLE}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db-callers, namespace: default}
spec:
  selector: {matchLabels: {app: db}}
  rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/web]}}], to: [{operation: {methods: [GET]}}]}]
"""
)


def compiled(root: Path | None = None, text: str = APPS):
    ctx = context(text, root)
    listener, clusters = build_inbound(ctx)
    assert not ctx.diag.errors, errors(ctx)
    return ctx, listener, clusters


def chain(listener: dict, name: str) -> dict:
    return next(c for c in listener["filter_chains"] if c["name"] == name)


def pod_matcher(listener: dict, ip: str) -> dict:
    return listener["filter_chain_matcher"]["matcher_tree"]["exact_match_map"]["map"][ip]["matcher"]


def test_listener_shape():
    _, listener, _ = compiled()
    assert listener["name"] == "inbound"
    assert listener["address"] == {"socket_address": {"address": "0.0.0.0", "port_value": 15006}}
    assert listener["transparent"] is True
    assert [f["name"] for f in listener["listener_filters"]] == [
        "envoy.filters.listener.original_dst",
        "envoy.filters.listener.tls_inspector",
    ]
    ips = listener["filter_chain_matcher"]["matcher_tree"]["exact_match_map"]["map"]
    assert sorted(ips) == ["10.244.1.5", "10.244.1.6"]  # local and meshed only


def test_strict_port_has_only_the_mtls_chain_and_rejects_the_rest():
    _, listener, _ = compiled()
    web = pod_matcher(listener, "10.244.1.5")
    by_port = web["matcher_tree"]["exact_match_map"]["map"]
    assert sorted(by_port) == ["7070", "8080", "9090"]
    strict = by_port["8080"]["matcher"]
    assert strict["matcher_tree"]["exact_match_map"]["map"] == {
        "tls": {
            "action": {
                "name": "inbound|10.244.1.5|8080|mtls",
                "typed_config": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": "inbound|10.244.1.5|8080|mtls",
                },
            }
        }
    }
    assert strict["on_no_match"]["action"]["name"] == REJECT_CHAIN
    names = [c["name"] for c in listener["filter_chains"] if c["name"].startswith("inbound|10.244.1.5|8080")]
    assert names == ["inbound|10.244.1.5|8080|mtls"]


def test_permissive_and_disabled_ports():
    _, listener, _ = compiled()
    by_port = pod_matcher(listener, "10.244.1.5")["matcher_tree"]["exact_match_map"]["map"]
    permissive = by_port["9090"]["matcher"]["matcher_tree"]["exact_match_map"]["map"]
    assert permissive["raw_buffer"]["action"]["name"] == "inbound|10.244.1.5|9090|plaintext"
    alpn = permissive["tls"]["matcher"]
    assert alpn["matcher_list"]["matchers"][0]["predicate"]["single_predicate"]["value_match"] == {"contains": "'istio"}
    assert alpn["matcher_list"]["matchers"][0]["on_match"]["action"]["name"] == "inbound|10.244.1.5|9090|mtls"
    assert alpn["on_no_match"]["action"]["name"] == "inbound|10.244.1.5|9090|tls-passthrough"
    disabled = by_port["7070"]["matcher"]["matcher_tree"]["exact_match_map"]["map"]
    assert {k: v["action"]["name"] for k, v in disabled.items()} == {
        "tls": "inbound|10.244.1.5|7070|plaintext",
        "raw_buffer": "inbound|10.244.1.5|7070|plaintext",
    }
    assert "transport_socket" not in chain(listener, "inbound|10.244.1.5|7070|plaintext")


def test_undeclared_ports_use_the_pods_passthrough_with_its_mode():
    _, listener, _ = compiled()
    web = pod_matcher(listener, "10.244.1.5")
    assert web["on_no_match"]["matcher"]["matcher_tree"]["exact_match_map"]["map"]["tls"]["action"]["name"] == (
        "inbound|10.244.1.5|passthrough|mtls"
    )
    proxy = chain(listener, "inbound|10.244.1.5|passthrough|mtls")["filters"][-1]["typed_config"]
    assert proxy["cluster"] == "InboundPassthroughCluster"


def test_http_chain_terminates_mtls_with_the_pods_identity():
    _, listener, _ = compiled()
    mtls = chain(listener, "inbound|10.244.1.5|8080|mtls")
    context = mtls["transport_socket"]["typed_config"]
    assert context["require_client_certificate"] is True
    common = context["common_tls_context"]
    assert common["tls_certificate_sds_secret_configs"][0]["name"] == "spiffe~default~web"
    assert common["combined_validation_context"]["validation_context_sds_secret_config"]["name"] == "ROOTCA"
    assert common["combined_validation_context"]["default_validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "URI", "matcher": {"prefix": "spiffe://cluster.local/"}}
    ]
    [hcm] = mtls["filters"]
    manager = hcm["typed_config"]
    assert manager["stat_prefix"] == "inbound_10.244.1.5_8080"
    assert manager["forward_client_cert_details"] == "APPEND_FORWARD"
    assert manager["set_current_client_cert_details"] == {"subject": True, "dns": True, "uri": True}
    route = manager["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
    assert route["cluster"] == "inbound|8080||"
    assert [f["name"] for f in manager["http_filters"]] == ["envoy.filters.http.router"]


def test_tcp_chain_has_network_rbac_and_tcp_proxy():
    _, listener, _ = compiled()
    tcp = chain(listener, "inbound|10.244.1.6|5432|mtls")
    assert [f["name"] for f in tcp["filters"]] == ["envoy.filters.network.rbac", "envoy.filters.network.tcp_proxy"]
    # the only ALLOW rule uses an HTTP method: on TCP it matches nothing, so everything is denied
    assert tcp["filters"][0]["typed_config"]["rules"] == {"action": "ALLOW", "policies": {}}
    assert tcp["filters"][1]["typed_config"]["cluster"] == "inbound|5432||"


def test_clusters_are_original_destination_with_the_bypass_mark():
    _, _, clusters = compiled()
    names = [c["name"] for c in clusters]
    assert names == [
        "inbound|5432||",
        "inbound|7070||",
        "inbound|8080||",
        "inbound|9090||~h2",
        "InboundPassthroughCluster",
        "InboundBlackHoleCluster",
    ]
    web = clusters[2]
    assert (web["type"], web["lb_policy"]) == ("ORIGINAL_DST", "CLUSTER_PROVIDED")
    assert web["upstream_bind_config"]["socket_options"] == [
        {"level": 1, "name": 36, "int_value": 2, "state": "STATE_PREBIND"}
    ]


def test_parity_entries_per_pod():
    ctx, *_ = compiled()
    web = {e.feature: e.status for e in ctx.parity["default/web"]}
    assert web["PeerAuthentication/default/web mtls"] == "kept"
    assert "AuthorizationPolicy/default/db-callers" in {e.feature for e in ctx.parity["default/db"]}
    assert "default/plain" not in ctx.parity


def test_conflicting_service_protocols_warn():
    text = (
        APPS
        + """
---
apiVersion: v1
kind: Service
metadata: {name: web-raw, namespace: default}
spec:
  selector: {app: web}
  ports: [{name: tcp-raw, port: 8080}]
"""
    )
    ctx, listener, _ = compiled(text=text)
    assert any("port 8080 is HTTP" in w for w in warnings(ctx))
    assert (
        chain(listener, "inbound|10.244.1.5|8080|mtls")["filters"][0]["name"]
        == "envoy.filters.network.http_connection_manager"
    )


def test_no_local_meshed_pods_gives_an_empty_listener():
    ctx = context(pod("remote", "10.244.2.5", node="node-2"))
    listener, clusters = build_inbound(ctx)
    assert listener["filter_chains"] == [] and "filter_chain_matcher" not in listener and clusters == []


@pytest.mark.envoy
def test_envoy_accepts_listener_clusters_and_sds(tmp_path: Path):
    ctx, listener, clusters = compiled(tmp_path)
    ca = LabCA.ensure(tmp_path / "ca", ctx.mesh.trust_domain)
    ensure_workload_certs(ctx.mesh.proxy.cert_dir, ca, ctx.mesh.trust_domain, tls.local_identities(ctx))
    envoy.validate(tmp_path, [listener], clusters)


# -- tls.py ------------------------------------------------------------------------------------


def test_client_socket_takes_the_certificate_named_by_the_connection_and_checks_the_destination():
    ctx = context(APPS)
    socket = tls.client_transport_socket(ctx, "outbound_.5432_._.db", ["spiffe://cluster.local/ns/default/sa/database"])
    upstream = socket["typed_config"]
    assert upstream["sni"] == "outbound_.5432_._.db"
    common = upstream["common_tls_context"]
    assert common["alpn_protocols"] == ["istio-peer-exchange", "istio"]
    assert "tls_certificate_sds_secret_configs" not in common
    selector = common["custom_tls_certificate_selector"]
    assert selector["name"] == "envoy.tls.certificate_selectors.on_demand_secret"
    assert selector["typed_config"]["config_source"]["api_config_source"]["grpc_services"] == [
        {"envoy_grpc": {"cluster_name": "dpumesh-sds"}}
    ]
    mapper = selector["typed_config"]["certificate_mapper"]
    assert mapper["name"] == "envoy.tls.upstream_certificate_mappers.filter_state_override"
    assert mapper["typed_config"]["default_value"] == tls.NO_IDENTITY
    assert common["combined_validation_context"]["default_validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "URI", "matcher": {"exact": "spiffe://cluster.local/ns/default/sa/database"}}
    ]
    anyone = tls.client_transport_socket(ctx, "", [])["typed_config"]
    assert "sni" not in anyone
    assert anyone["common_tls_context"]["combined_validation_context"]["default_validation_context"] == {
        "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"prefix": "spiffe://cluster.local/"}}]
    }


def test_simple_and_mutual_tls_from_destination_rules():
    ctx = context(APPS)
    where = ("DestinationRule", "default", "ext", "spec.trafficPolicy.tls")
    simple = tls.simple_client_transport_socket(
        ctx, {"mode": "SIMPLE", "sni": "api.example.com", "subjectAltNames": ["api.example.com"]}, where
    )
    common = simple["typed_config"]["common_tls_context"]
    assert simple["typed_config"]["sni"] == "api.example.com"
    assert common["validation_context"] == {
        "trusted_ca": {"filename": "/etc/ssl/certs/ca-certificates.crt"},
        "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": "api.example.com"}}],
    }
    names = ["10.9.0.7", "fd00::7", "spiffe://cluster.local/ns/a/sa/b", "db.example"]
    by_kind = tls.simple_client_transport_socket(ctx, {"mode": "SIMPLE", "subjectAltNames": names}, where)
    assert by_kind["typed_config"]["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "IP_ADDRESS", "matcher": {"exact": "10.9.0.7"}},
        {"san_type": "IP_ADDRESS", "matcher": {"exact": "fd00::7"}},
        {"san_type": "URI", "matcher": {"exact": "spiffe://cluster.local/ns/a/sa/b"}},
        {"san_type": "DNS", "matcher": {"exact": "db.example"}},
    ]
    files = {"mode": "MUTUAL", "clientCertificate": "/c.pem", "privateKey": "/k.pem", "caCertificates": "/ca.pem"}
    mutual = tls.simple_client_transport_socket(ctx, files, where)["typed_config"]["common_tls_context"]
    assert mutual["tls_certificates"] == [
        {"certificate_chain": {"filename": "/c.pem"}, "private_key": {"filename": "/k.pem"}}
    ]
    credential = tls.simple_client_transport_socket(
        ctx, {"mode": "MUTUAL", "credentialName": "ext-cred"}, where[:3], "other"
    )
    common = credential["typed_config"]["common_tls_context"]
    assert common["tls_certificate_sds_secret_configs"][0]["name"] == "kubernetes~other~ext-cred"
    assert (
        common["combined_validation_context"]["validation_context_sds_secret_config"]["name"]
        == "kubernetes~other~ext-cred-cacert"
    )
    skip = tls.simple_client_transport_socket(ctx, {"mode": "SIMPLE", "insecureSkipVerify": True}, where)
    assert "validation_context" not in skip["typed_config"]["common_tls_context"]
    assert not ctx.diag.errors


def test_every_secret_the_config_names_is_in_the_certificate_layout(tmp_path: Path):
    text = (
        APPS
        + """
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ext, namespace: default}
spec: {host: ext.example.com, trafficPolicy: {tls: {mode: SIMPLE, credentialName: ext-ca}}}
"""
    )
    ctx = context(text, tmp_path)
    listener, inbound_clusters = build_inbound(ctx)
    outbound = [
        tls.simple_client_transport_socket(ctx, {"mode": "MUTUAL", "credentialName": "ext-ca"}, ("DR", "default", "x")),
        tls.client_transport_socket(ctx, "", []),
    ]
    names = sorted(set(re.findall(r"'name': '((?:spiffe|kubernetes)~[^']*|ROOTCA)'", repr([listener, outbound]))))
    assert names == [
        "ROOTCA",
        "kubernetes~default~ext-ca",
        "kubernetes~default~ext-ca-cacert",
        "spiffe~default~database",
        "spiffe~default~web",
    ]
    store = SecretStore(Path(ctx.mesh.proxy.cert_dir))
    certs = f"{tmp_path}/certs"
    assert store.files("spiffe~default~web") == [
        Path(f"{certs}/spiffe~default~web/{f}") for f in ("cert.pem", "key.pem")
    ]
    assert store.files("ROOTCA") == [Path(f"{certs}/root-cert.pem")]
    assert store.files("kubernetes~default~ext-ca") == [
        Path(f"{certs}/credentials/default/ext-ca/{f}") for f in ("tls.crt", "tls.key")
    ]
    assert store.files("kubernetes~default~ext-ca-cacert") == [Path(f"{certs}/credentials/default/ext-ca/ca.crt")]
    # Every secret source is the node's SDS service.
    sources = re.findall(r"'sds_config': (\{[^}]*\}*)", repr([listener, inbound_clusters, outbound]))
    assert sources and all("dpumesh-sds" in source for source in sources)


def test_envoy_accepts_client_sockets(tmp_path: Path):
    ctx, listener, clusters = compiled(tmp_path)
    ca = LabCA.ensure(tmp_path / "ca", ctx.mesh.trust_domain)
    ensure_workload_certs(ctx.mesh.proxy.cert_dir, ca, ctx.mesh.trust_domain, tls.local_identities(ctx))
    where = ("DestinationRule", "default", "ext")
    sockets = [
        tls.client_transport_socket(ctx, "db", ["spiffe://cluster.local/ns/default/sa/database"]),
        tls.simple_client_transport_socket(ctx, {"mode": "SIMPLE", "subjectAltNames": ["a.example"]}, where),
        tls.simple_client_transport_socket(
            ctx,
            {"mode": "MUTUAL", "clientCertificate": f"{ctx.mesh.proxy.cert_dir}/spiffe~default~web/cert.pem",
             "privateKey": f"{ctx.mesh.proxy.cert_dir}/spiffe~default~web/key.pem",
             "caCertificates": f"{ctx.mesh.proxy.cert_dir}/root-cert.pem"},
            where,
        ),
    ]  # fmt: skip
    extra = [
        {
            "name": f"out-{i}",
            "type": "STATIC",
            "connect_timeout": "1s",
            "transport_socket": socket,
            "load_assignment": {
                "cluster_name": f"out-{i}",
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {"endpoint": {"address": {"socket_address": {"address": "10.0.0.1", "port_value": 443}}}}
                        ]
                    }
                ],
            },
        }
        for i, socket in enumerate(sockets)
    ]
    assert not ctx.diag.errors
    envoy.validate(tmp_path, [listener], clusters + extra)
