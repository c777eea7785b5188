"""The HTTP protocol of each hop: client proxy -> server proxy, and server proxy -> application.

Between the proxies a port keeps its protocol unless a DestinationRule's h2UpgradePolicy upgrades it, as
between sidecars; towards the application the server's proxy always speaks the port's own protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from support.compiled import Compiled

from dpumesh.bundle import validate_with_envoy, write_tree
from dpumesh.compiler import MeshSettings, compile_node
from dpumesh.state import build_state

STATES = Path(__file__).parent / "states"
OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HTTP1 = {"http_protocol_options": {}}
HTTP2 = {"http2_protocol_options": {}}

APPS = """
apiVersion: v1
kind: Pod
metadata: {name: client-0, namespace: shop, labels: {app: client}}
spec: {nodeName: node-1, serviceAccountName: client, containers: [{name: c, image: echo}]}
status: {podIP: 10.244.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: web-v1-0, namespace: shop, labels: {app: web, version: v1}}
spec: {nodeName: node-2, serviceAccountName: web, containers: [{name: c, image: echo}]}
status: {podIP: 10.244.2.11}
---
apiVersion: v1
kind: Pod
metadata: {name: web-v2-0, namespace: shop, labels: {app: web, version: v2, sidecar.istio.io/inject: "false"}}
spec: {nodeName: node-2, serviceAccountName: web, containers: [{name: c, image: echo}]}
status: {podIP: 10.244.2.12}
---
apiVersion: v1
kind: Pod
metadata: {name: api-0, namespace: shop, labels: {app: api}}
spec: {nodeName: node-1, serviceAccountName: api, containers: [{name: c, image: echo}]}
status: {podIP: 10.244.1.13}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  selector: {app: api}
  ports: [{name: http, port: 80, targetPort: 8080}, {name: grpc, port: 9090}, {name: tcp-raw, port: 7000}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: [web]
  http:
  - {match: [{headers: {x-version: {exact: v1}}}], route: [{destination: {host: web, subset: v1}}]}
  - {match: [{headers: {x-version: {exact: v2}}}], route: [{destination: {host: web, subset: v2}}]}
  - route: [{destination: {host: web}}]
"""
SUBSETS = "subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]"


def web_rule(policy: str = "{}") -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: web, namespace: shop}}
spec: {{host: web, trafficPolicy: {policy}, {SUBSETS}}}
"""


def compiled(extra: str = web_rule(), node: str = "node-1") -> Compiled:
    base = yaml.safe_load_all((STATES / "basic" / "cluster.yaml").read_text())
    text = "\n---\n".join((APPS, extra))
    docs = [d for d in base if d] + [d for d in yaml.safe_load_all(text) if d]
    state = build_state(docs)
    return Compiled(compile_node(state, MeshSettings(), node), state)


def clusters_named(c: Compiled, stat_name: str) -> list[dict[str, Any]]:
    """Every cluster Istio would name `stat_name` (one per client identity that needs its own)."""
    found = [x for x in c.cds if x.get("alt_stat_name", x["name"]) == stat_name]
    assert found, stat_name
    return found


def upstream(c: Compiled, stat_name: str) -> dict[str, Any]:
    """The explicit protocol of the outbound clusters Istio names `stat_name`; {} for Envoy's default, HTTP/1.1."""
    protocols = []
    for cluster in clusters_named(c, stat_name):
        options = cluster.get("typed_extension_protocol_options", {}).get(OPTIONS, {})
        assert "use_downstream_protocol_config" not in options and "auto_config" not in options
        protocols.append(options.get("explicit_http_config", {}))
    assert all(p == protocols[0] for p in protocols), protocols
    return protocols[0]


def test_http_between_meshed_pods_keeps_http1_as_between_sidecars():
    c = compiled()  # Istio's meshConfig.h2UpgradePolicy default: DO_NOT_UPGRADE
    for name in ("outbound|80|v1|web.shop.svc.cluster.local", "outbound|80||api.shop.svc.cluster.local"):
        assert upstream(c, name) == {}
    assert upstream(c, "outbound|9090||api.shop.svc.cluster.local") == HTTP2


def test_upgrade_makes_http2_to_every_endpoint_as_in_istio_even_without_other_pool_settings():
    c = compiled(web_rule("{connectionPool: {http: {h2UpgradePolicy: UPGRADE}}}"))
    assert upstream(c, "outbound|80||web.shop.svc.cluster.local") == HTTP2
    assert upstream(c, "outbound|80|v2|web.shop.svc.cluster.local") == HTTP2  # v2 has no proxy: upgraded too


def test_upgrade_with_pool_settings_keeps_them_and_do_not_upgrade_stays_http1():
    c = compiled(
        web_rule("{connectionPool: {http: {h2UpgradePolicy: UPGRADE, idleTimeout: 30s}}}")
        + """
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: shop}
spec:
  host: api
  trafficPolicy: {connectionPool: {http: {h2UpgradePolicy: DO_NOT_UPGRADE, maxRequestsPerConnection: 7}}}
"""
    )
    for cluster in clusters_named(c, "outbound|80|v1|web.shop.svc.cluster.local"):
        options = cluster["typed_extension_protocol_options"][OPTIONS]
        assert options["explicit_http_config"] == HTTP2
        assert options["common_http_protocol_options"] == {"idle_timeout": "30s"}
    for cluster in clusters_named(c, "outbound|80||api.shop.svc.cluster.local"):
        options = cluster["typed_extension_protocol_options"][OPTIONS]
        assert options["explicit_http_config"] == HTTP1
        assert options["common_http_protocol_options"] == {"max_requests_per_connection": 7}
    assert upstream(c, "outbound|9090||api.shop.svc.cluster.local") == HTTP2  # an HTTP/2 port is never downgraded


def test_upgrade_leaves_tcp_ports_alone():
    c = compiled(
        web_rule()
        + """
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: shop}
spec: {host: api, trafficPolicy: {connectionPool: {http: {h2UpgradePolicy: UPGRADE}}}}
"""
    )
    [raw] = clusters_named(c, "outbound|7000||api.shop.svc.cluster.local")
    assert "typed_extension_protocol_options" not in raw


def inbound_route(c: Compiled, pod_ip: str, port: int) -> dict[str, Any]:
    [chain] = [x for x in c.listener("inbound")["filter_chains"] if x["name"] == f"inbound|{pod_ip}|{port}|mtls"]
    manager = chain["filters"][-1]["typed_config"]
    assert manager["codec_type"] == "AUTO"  # HTTP/1.1 or HTTP/2 from the client, whatever the port declares
    assert chain["transport_socket"]["typed_config"]["common_tls_context"]["alpn_protocols"] == ["h2", "http/1.1"]
    return manager["route_config"]["virtual_hosts"][0]["routes"][0]["route"]


def test_inbound_clusters_speak_the_ports_own_protocol_to_the_application():
    c = compiled()
    http = inbound_route(c, "10.244.1.13", 8080)
    grpc = inbound_route(c, "10.244.1.13", 9090)
    assert (http["cluster"], grpc["cluster"]) == ("inbound|8080||", "inbound|9090||~h2")
    clusters = {x["name"]: x for x in c.cds}
    for name, protocol in (("inbound|8080||", HTTP1), ("inbound|9090||~h2", HTTP2)):
        options = clusters[name]["typed_extension_protocol_options"][OPTIONS]
        assert options == {"@type": f"type.googleapis.com/{OPTIONS}", "explicit_http_config": protocol}
    assert clusters["inbound|9090||~h2"]["alt_stat_name"] == "inbound|9090||"


def test_inbound_http_routes_retry_a_reset_before_the_request_as_istio_does_except_grpc():
    c = compiled()
    assert inbound_route(c, "10.244.1.13", 8080)["retry_policy"] == {
        "retry_on": "reset-before-request",
        "num_retries": 2,
    }
    assert "retry_policy" not in inbound_route(c, "10.244.1.13", 9090)


@pytest.mark.envoy
@pytest.mark.parametrize("node", ["node-1", "node-2"])
def test_the_configs_pass_envoy_validate(node, tmp_path):
    bundle = compiled(node=node).bundle
    mesh = MeshSettings()
    assert write_tree(tmp_path / "out", bundle.files, lambda staged: validate_with_envoy(staged, mesh.proxy.config_dir))
