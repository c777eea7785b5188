"""Sidecar ingress listeners: their ports replace the pod's Service ports, defaultEndpoint picks the pod port."""

from __future__ import annotations

import json

from support.compiled import network_filter
from support.state import pod

from dpumesh.bundle import validate_with_envoy, write_tree
from dpumesh.compiler.parity import features_of


def _service(app: str) -> str:
    """A Service for pods labelled app=<app>: HTTP port 80 to the pods' 8080."""
    return f"""
---
apiVersion: v1
kind: Service
metadata: {{name: {app}, namespace: shop}}
spec:
  selector: {{app: {app}}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
"""


STATE = (
    pod("legacy-app", "10.244.1.40", "app: legacy-app", namespace="shop", sa="legacy")
    + pod("plain-app", "10.244.1.41", "app: plain-app", namespace="shop", sa="plain")
    + _service("legacy-app")
    + _service("plain-app")
    + """
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: legacy-app, namespace: shop}
spec:
  workloadSelector: {labels: {app: legacy-app}}
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http-front}
    defaultEndpoint: 0.0.0.0:8080
  - port: {number: 7000, protocol: TCP, name: tcp-admin}
    defaultEndpoint: 127.0.0.1:7001
  - port: {number: 7100, name: any}
"""
)
LEGACY, PLAIN = "10.244.1.40", "10.244.1.41"


def upstream(c, chain_name: str) -> str:
    chain = next(ch for ch in c.listener("inbound")["filter_chains"] if ch["name"] == chain_name)
    if any(f["name"] == "envoy.filters.network.http_connection_manager" for f in chain["filters"]):
        manager = network_filter(chain, "envoy.filters.network.http_connection_manager")
        return manager["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["cluster"]
    return network_filter(chain, "envoy.filters.network.tcp_proxy")["cluster"]


def test_ingress_ports_replace_the_service_ports_of_the_selected_pod_only(compile_docs):
    c = compile_docs(STATE)
    label = f"inbound|{LEGACY}"
    assert c.inbound_chain_for(LEGACY, 9080) == f"{label}|9080|plaintext"
    assert c.inbound_chain_for(LEGACY, 9080, alpn="'istio-http/1.1','istio'") == f"{label}|9080|mtls"
    assert c.inbound_chain_for(LEGACY, 7000) == f"{label}|7000|plaintext"
    # The Service's port is no longer an inbound port of the pod: it goes the pod's passthrough way.
    assert c.inbound_chain_for(LEGACY, 8080) == f"{label}|passthrough|plaintext"
    # A pod the Sidecar does not select keeps its Service ports.
    assert c.inbound_chain_for(PLAIN, 8080) == f"inbound|{PLAIN}|8080|plaintext"


def test_default_endpoint_sends_the_connection_to_that_pod_port_under_istios_cluster_name(compile_docs, tmp_path):
    c = compile_docs(STATE)
    assert write_tree(
        tmp_path / "node", c.bundle.files, lambda d: validate_with_envoy(d, "/etc/dpumesh/proxy/current/envoy")
    )
    http = c.cluster(upstream(c, f"inbound|{LEGACY}|9080|plaintext"))
    assert http["name"] == "inbound|9080||~to8080" and http["alt_stat_name"] == "inbound|9080||"
    assert http["type"] == "ORIGINAL_DST" and http["original_dst_lb_config"] == {"upstream_port_override": 8080}
    tcp = c.cluster(upstream(c, f"inbound|{LEGACY}|7000|plaintext"))
    assert tcp["original_dst_lb_config"] == {"upstream_port_override": 7001}
    # HTTP on 9080 (the ingress port's protocol), TCP on 7000; without a protocol, HTTP is detected on 7100.
    chains = {ch["name"] for ch in c.listener("inbound")["filter_chains"]}
    assert f"inbound|{LEGACY}|7100|http|plaintext" in chains
    same_port = c.cluster(upstream(c, f"inbound|{LEGACY}|7100|plaintext"))
    assert same_port["name"] == "inbound|7100||" and "original_dst_lb_config" not in same_port


def test_the_parity_report_states_the_loopback_endpoint_and_what_is_not_translated(compile_docs):
    last = "  - port: {number: 7100, name: any}"
    text = STATE.replace(last, f"{last}\n    bind: 10.0.0.1")
    c = compile_docs(text)
    parity = json.loads(c.bundle.files["parity.json"])
    entries = {f["feature"]: f for f in features_of(parity, "shop/legacy-app")}
    assert entries["Sidecar/shop/legacy-app ingress"]["status"] == "kept"
    loopback = entries["Sidecar/shop/legacy-app ingress port 7000"]
    assert loopback["status"] == "kept-with-difference" and "port 7001" in loopback["detail"]
    assert entries["Sidecar/shop/legacy-app ingress[2].bind"]["status"] == "unsupported"
    assert not [f for f in features_of(parity, "shop/plain-app") if f["feature"].startswith("Sidecar/")]


def test_an_empty_host_is_the_instance_ip_and_an_empty_endpoint_is_unset_as_istio_accepts_them(compile_docs):
    text = STATE.replace("defaultEndpoint: 0.0.0.0:8080", 'defaultEndpoint: ":8080"').replace(
        "defaultEndpoint: 127.0.0.1:7001", 'defaultEndpoint: ""'
    )
    c = compile_docs(text)
    assert c.cluster(upstream(c, f"inbound|{LEGACY}|9080|plaintext"))["original_dst_lb_config"] == {
        "upstream_port_override": 8080
    }
    unset = c.cluster(upstream(c, f"inbound|{LEGACY}|7000|plaintext"))
    assert unset["name"] == "inbound|7000||" and "original_dst_lb_config" not in unset
