"""Outbound semantics of the shared proxy, asserted on the generated Envoy config."""

from __future__ import annotations

import json

from support.compiled import inspects, network_filter, pod_ip

from dpumesh.compiler.parity import features_of

FQDN = "reviews.shop.svc.cluster.local"
# One meshed pod and one HTTP Service `api` in namespace shop, for tests that add one Istio object.
API_POD_AND_SERVICE = """
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: shop}
spec: {nodeName: node-1, containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec: {ports: [{name: http, port: 80}]}
---
"""


def routes_for(c, pod: str, port: int = 9080, host: str = FQDN):
    return c.routes_for(pod_ip(c, pod), port, host)


def test_pods_with_the_same_view_share_a_class_and_others_do_not(compile_dir):
    c = compile_dir("basic")
    frontend, reviews, client = (
        c.class_of(pod_ip(c, p)) for p in ("shop/frontend-0", "shop/reviews-v1-0", "other/client-0")
    )
    # The service account only picks the client certificate, per connection: one namespace, one view, one class.
    assert frontend == reviews
    assert client != frontend
    assert c.bundle.stats["classes"] == 2


def test_non_meshed_pods_have_no_class(compile_dir):
    c = compile_dir("basic")
    ips = {ip for ips in c.source_classes().values() for ip in ips}
    assert pod_ip(c, "shop/frontend-0") in ips
    assert pod_ip(c, "legacy/old-0") not in ips


def test_host_domains_depend_on_the_client_namespace(compile_dir):
    c = compile_dir("basic")
    for pod in ("shop/frontend-0", "other/client-0"):
        for name in (FQDN, "reviews.shop.svc", "reviews.shop", f"{FQDN}:9080"):
            assert routes_for(c, pod, host=name) == routes_for(c, pod), (pod, name)
    for name in ("reviews", "reviews:9080"):
        assert routes_for(c, "shop/frontend-0", host=name) == routes_for(c, "shop/frontend-0")
        # a short name resolves in the client's own namespace only: elsewhere it is an unknown host
        assert [r["name"] for r in routes_for(c, "other/client-0", host=name)] == ["allow_any"]


def test_header_match_routes_to_subset_and_weights_split(compile_dir):
    c = compile_dir("basic")
    first, second = routes_for(c, "shop/frontend-0")
    assert first["match"]["headers"] == [{"name": "end-user", "string_match": {"exact": "jason"}}]
    assert first["route"]["cluster"].startswith(f"outbound|9080|v2|{FQDN}")
    weighted = second["route"]["weighted_clusters"]["clusters"]
    assert [(w["name"].split("~")[0], w["weight"]) for w in weighted] == [
        (f"outbound|9080|v1|{FQDN}", 80),
        (f"outbound|9080|v2|{FQDN}", 20),
    ]


def test_istio_defaults_no_timeout_and_two_retries(compile_dir):
    c = compile_dir("basic")
    route = routes_for(c, "shop/reviews-v1-0", 80, "frontend.shop.svc.cluster.local")[0]
    assert route["route"]["timeout"] == "0s"
    retry = route["route"]["retry_policy"]
    assert retry["num_retries"] == 2
    assert retry["retry_on"] == "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    assert retry["retriable_status_codes"] == [503]


def test_subsets_select_endpoints_by_label(compile_dir):
    c = compile_dir("basic")
    v1 = next(x for x in c.cds if x["name"].startswith(f"outbound|9080|v1|{FQDN}"))
    v2 = next(x for x in c.cds if x["name"].startswith(f"outbound|9080|v2|{FQDN}"))
    addr = lambda cl: [  # noqa: E731
        e["endpoint"]["address"]["socket_address"]["address"]
        for e in cl["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert addr(v1) == [pod_ip(c, "shop/reviews-v1-0")]
    assert addr(v2) == [pod_ip(c, "shop/reviews-v2-0")]
    assert v1["alt_stat_name"] == f"outbound|9080|v1|{FQDN}"
    assert v1["circuit_breakers"]["thresholds"][0]["max_connections"] == 100


def test_auto_mtls_uses_the_source_pods_identity(compile_dir):
    c = compile_dir("basic")
    frontend = "frontend.shop.svc.cluster.local"
    # One cluster for every client identity: the certificate is chosen per connection.
    assert [n for n in c.cluster_names() if n.startswith(f"outbound|80||{frontend}")] == [f"outbound|80||{frontend}"]
    cluster = c.cluster(f"outbound|80||{frontend}")
    match = cluster["transport_socket_matches"][0]
    assert match["match"] == {"tlsMode": "istio"}
    common = match["transport_socket"]["typed_config"]["common_tls_context"]
    assert common["custom_tls_certificate_selector"]["name"] == "envoy.tls.certificate_selectors.on_demand_secret"
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert endpoint["metadata"]["filter_metadata"]["envoy.transport_socket_match"] == {"tlsMode": "istio"}
    # A listener filter names the source pod's certificate for each connection, before any chain runs.
    [source] = [f for f in c.listener("outbound")["listener_filters"] if f["name"].endswith("set_filter_state")]
    state = next(v for v in source["typed_config"]["on_accept"] if v["object_key"].endswith("on_demand_secret"))
    assert state["factory_key"] == "envoy.hashable_string"
    table = state["format_string"]["text_format_source"]["inline_string"]
    for pod in ("shop/reviews-v1-0", "shop/frontend-0", "other/client-0"):
        p = next(p for p in c.state.pods if p.meta.key == pod)
        assert f"'{p.ip}': 'spiffe~{p.namespace}~{p.service_account}'" in table
    assert pod_ip(c, "legacy/old-0") not in table


def test_plaintext_to_pods_without_a_proxy(compile_dir):
    c = compile_dir("basic")
    cluster = next(x for x in c.cds if x["name"].startswith("outbound|80||old.legacy.svc.cluster.local"))
    assert "transport_socket_matches" not in cluster and "transport_socket" not in cluster


def _vip(c, fqdn: str) -> str:
    return next(s.cluster_ip for s in c.state.services if f"{s.name}.{s.namespace}.svc.cluster.local" == fqdn)


def test_export_to_dot_hides_a_service_from_other_namespaces(compile_dir):
    c = compile_dir("basic")
    db = next(s for s in c.state.services if any(p.port == 5432 for p in s.ports))
    shop = c.chain_for(pod_ip(c, "shop/frontend-0"), db.cluster_ip, 5432)
    assert network_filter(c.chain(shop), "envoy.filters.network.tcp_proxy")["cluster"].startswith("outbound|5432||")
    assert c.chain_for(pod_ip(c, "other/client-0"), db.cluster_ip, 5432) == "passthrough"


def test_allow_any_passes_unknown_hosts_through(compile_dir):
    c = compile_dir("basic")
    [route] = routes_for(c, "shop/frontend-0", 9080, "unknown.example.com")
    assert route["route"]["cluster"] == "PassthroughCluster"
    assert c.chain_for(pod_ip(c, "shop/frontend-0"), "192.0.2.9", 4444) == "passthrough"


def test_registry_only_answers_502_for_unknown_hosts(compile_dir):
    c = compile_dir("basic", outbound_traffic_policy="REGISTRY_ONLY")
    [route] = routes_for(c, "shop/frontend-0", 9080, "unknown.example.com")
    assert route["direct_response"] == {"status": 502}
    chain = c.chain_for(pod_ip(c, "shop/frontend-0"), "192.0.2.9", 4444)
    assert network_filter(c.chain(chain), "envoy.filters.network.tcp_proxy")["cluster"] == "BlackHoleCluster"


def test_oldest_virtual_service_wins(compile_dir):
    c = compile_dir("features")
    routes = routes_for(c, "shop/frontend-0")
    assert routes[0]["name"] == "jason"  # from `reviews` (2026-01), not `reviews-newer` (2026-06)
    assert not any(
        r.get("typed_per_filter_config", {}).get("envoy.filters.http.fault", {}).get("abort", {}).get("http_status")
        == 500
        for r in routes
    )


def test_match_forms(compile_dir):
    c = compile_dir("features")
    first = routes_for(c, "shop/frontend-0")[0]["match"]
    assert first["prefix"] == "/api"
    assert {"name": ":method", "string_match": {"exact": "GET"}} in first["headers"]
    assert first["query_parameters"] == [{"name": "debug", "string_match": {"exact": "1"}}]
    # the frontend's sourceLabels match catches all its requests: read the other routes as another pod does
    regex = routes_for(c, "shop/reviews-v1-0")[1]["match"]
    assert regex["safe_regex"] == {"regex": "^/v[0-9]+/items$"}
    assert regex["case_sensitive"] is False


def test_source_labels_apply_only_to_matching_pods(compile_dir):
    c = compile_dir("features")
    frontend = [r["name"] for r in routes_for(c, "shop/frontend-0")]
    reviews = [r["name"] for r in routes_for(c, "shop/reviews-v1-0")]
    # http[0] has two matches; the second (sourceLabels app=frontend) exists only for the frontend's class.
    assert frontend.count("jason") == 2
    assert reviews.count("jason") == 1


def test_fault_redirect_direct_response_rewrite(compile_dir):
    c = compile_dir("features")
    routes = {
        r["match"].get("path") or r["match"].get("prefix") or r["match"].get("safe_regex", {}).get("regex"): r
        for r in routes_for(c, "shop/reviews-v1-0")
    }
    fault = routes["^/v[0-9]+/items$"]["typed_per_filter_config"]["envoy.filters.http.fault"]
    assert fault["delay"] == {"fixed_delay": "1.5s", "percentage": {"numerator": 100000, "denominator": "MILLION"}}
    assert fault["abort"] == {"http_status": 503, "percentage": {"numerator": 5000, "denominator": "MILLION"}}
    assert routes["/old"]["redirect"] == {
        "path_redirect": "/new",
        "host_redirect": "reviews.shop",
        "response_code": "PERMANENT_REDIRECT",
    }
    assert routes["/teapot"]["direct_response"] == {"status": 418, "body": {"inline_string": "short and stout"}}
    rewrite = routes["/rewrite"]["route"]
    assert rewrite["prefix_rewrite"] == "/" and rewrite["host_rewrite_literal"] == "reviews.internal"


def test_timeout_retries_mirror_cors_and_headers(compile_dir):
    c = compile_dir("features")
    routes = routes_for(c, "shop/reviews-v1-0")
    last = routes[-1]
    action = last["route"]
    assert action["timeout"] == "3s"
    assert action["retry_policy"]["num_retries"] == 5
    assert action["retry_policy"]["per_try_timeout"] == "0.5s"
    assert action["retry_policy"]["retry_on"] == "5xx,reset,retriable-status-codes"
    assert action["retry_policy"]["retriable_status_codes"] == [429]
    mirror = action["request_mirror_policies"][0]
    assert mirror["cluster"].startswith(f"outbound|9080|v2|{FQDN}")
    assert mirror["runtime_fraction"]["default_value"] == {"numerator": 250000, "denominator": "MILLION"}
    cors = last["typed_per_filter_config"]["envoy.filters.http.cors"]
    assert cors["allow_methods"] == "GET,POST" and cors["max_age"] == "86400" and cors["allow_credentials"] is True
    canary = action["weighted_clusters"]["clusters"][1]
    assert canary["request_headers_to_add"][0]["header"] == {"key": "x-canary", "value": "1"}
    jason = routes[0]
    assert jason["request_headers_to_add"][0] == {
        "header": {"key": "x-route", "value": "jason"},
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
    }
    assert jason["request_headers_to_remove"] == ["x-drop"]


def test_attempts_zero_disables_retries(compile_docs):
    c = compile_docs(
        API_POD_AND_SERVICE
        + """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: shop}
spec: {hosts: [api], http: [{retries: {attempts: 0}, route: [{destination: {host: api}}]}]}
"""
    )
    route = routes_for(c, "shop/a", 80, "api.shop.svc.cluster.local")[0]
    assert "retry_policy" not in route["route"]


def test_destination_rule_policies(compile_dir):
    c = compile_dir("features")
    v1 = c.cluster(f"outbound|9080|v1|{FQDN}")
    assert v1["lb_policy"] == "ROUND_ROBIN"  # portLevelSettings for 9080 override the consistent hash
    assert v1["connect_timeout"] == "2s"
    t = v1["circuit_breakers"]["thresholds"][0]
    assert (t["max_connections"], t["max_pending_requests"], t["max_requests"], t["max_retries"]) == (100, 10, 200, 3)
    assert v1["outlier_detection"]["consecutive_5xx"] == 5 and v1["outlier_detection"]["base_ejection_time"] == "30s"
    opts = v1["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert opts["common_http_protocol_options"] == {"max_requests_per_connection": 5, "idle_timeout": "30s"}
    v2 = c.cluster(f"outbound|9080|v2|{FQDN}")
    assert v2["lb_policy"] == "RANDOM"  # subset policy overrides
    assert "transport_socket" in v2  # ISTIO_MUTUAL forced by the subset


def test_destination_rule_in_client_namespace_wins(compile_dir):
    c = compile_dir("features")
    frontend = "frontend.shop.svc.cluster.local"
    routes = routes_for(c, "other/client-0")
    # Only the client-namespace rule applies to `other`; it defines no subsets → a cluster that does not exist
    # (503), even though shop's own rule defines v2 under Istio's name.
    assert routes[0]["route"]["cluster"] == f"outbound|9080|v2|{FQDN}~undefined-subset"
    assert f"outbound|9080|v2|{FQDN}~undefined-subset" not in c.cluster_names()
    assert f"outbound|9080|v2|{FQDN}" in c.cluster_names()
    assert not any(n.startswith(f"outbound|80||{frontend}~other") for n in c.cluster_names())  # Sidecar scope
    assert f"outbound|9080|v1|{FQDN}" in c.cluster_names()  # shop's own rule: Istio's name, no suffix


def test_consistent_hash_sets_route_hash_policy(compile_docs):
    c = compile_docs(
        API_POD_AND_SERVICE
        + """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: shop}
spec: {host: api, trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: session, ttl: 60s}}}}}
"""
    )
    route = routes_for(c, "shop/a", 80, "api.shop.svc.cluster.local")[0]
    assert route["route"]["hash_policy"] == [{"cookie": {"name": "session", "ttl": "60s"}}]
    cluster = c.cluster(route["route"]["cluster"])
    assert cluster["lb_policy"] == "RING_HASH"


def test_a_client_namespace_hash_policy_stays_with_its_own_clusters(compile_docs):
    """Only `other` has a consistent-hash DestinationRule for api: shop's routes to api hash nothing, though
    other's cluster variant of api (a suffix apart) is built first."""
    c = compile_docs(
        API_POD_AND_SERVICE
        + """
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: other}
spec: {nodeName: node-1, containers: [{name: c, image: x}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api-sticky, namespace: other}
spec: {host: api.shop.svc.cluster.local, trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}}
"""
    )
    api = "api.shop.svc.cluster.local"
    theirs = routes_for(c, "other/b", 80, api)[0]["route"]
    ours = routes_for(c, "shop/a", 80, api)[0]["route"]
    assert theirs["cluster"] == f"outbound|80||{api}~dr=other/api-sticky"
    assert theirs["hash_policy"] == [{"header": {"header_name": "x-user"}}]
    assert ours["cluster"] == f"outbound|80||{api}"
    assert "hash_policy" not in ours


def test_sidecar_egress_scopes_visible_hosts_and_policy(compile_dir):
    c = compile_dir("features")
    client = pod_ip(c, "other/client-0")
    frontend = "frontend.shop.svc.cluster.local"
    assert c.chain_for(client, "192.0.2.1", 9080) == "0.0.0.0_9080"  # shop/reviews is listed in the Sidecar
    assert routes_for(c, "other/client-0")[0]["route"]["cluster"].startswith(f"outbound|9080|v2|{FQDN}")
    # frontend and old are not: port 80 is not HTTP for this class, and the Sidecar's REGISTRY_ONLY blocks
    assert c.chain_for(client, "192.0.2.1", 80) == "blackhole"
    assert c.chain_for(pod_ip(c, "shop/frontend-0"), "192.0.2.1", 80) == "0.0.0.0_80"
    assert [r["name"] for r in routes_for(c, "other/client-0", 9080, frontend)] == ["block_all"]


def test_tcp_weights_and_service_entries(compile_dir):
    c = compile_dir("features")
    db_vip = next(s.cluster_ip for s in c.state.services if any(p.port == 5432 for p in s.ports))
    db = c.chain(c.chain_for(pod_ip(c, "shop/frontend-0"), db_vip, 5432))
    weighted = network_filter(db, "envoy.filters.network.tcp_proxy")["weighted_clusters"]["clusters"]
    assert [w["weight"] for w in weighted] == [90, 10]
    ext = next(n for n in c.cluster_names() if n.startswith("outbound|443||api.payments.example.com"))
    assert c.cluster(ext)["type"] == "STRICT_DNS"
    static = next(n for n in c.cluster_names() if n.startswith("outbound|3306||legacy-db.internal"))
    lb = c.cluster(static)["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert lb["endpoint"]["address"]["socket_address"] == {"address": "192.0.2.11", "port_value": 3306}


def test_tls_hosts_without_vip_are_matched_by_sni(compile_dir):
    c = compile_dir("features")
    chain = c.chain_for(pod_ip(c, "shop/frontend-0"), "203.0.113.7", 443, sni="api.payments.example.com")
    assert chain == "api.payments.example.com_443"
    proxy = network_filter(c.chain(chain), "envoy.filters.network.tcp_proxy")
    assert proxy["cluster"].startswith("outbound|443||api.payments.example.com")
    assert c.chain_for(pod_ip(c, "shop/frontend-0"), "203.0.113.7", 443, sni="other.example.com") == "passthrough"


def test_unsupported_kinds_are_reported_not_dropped(compile_dir):
    import json

    c = compile_dir("features")
    parity = json.loads(c.bundle.files["parity.json"])
    features = features_of(parity, "shop/frontend-0")
    assert {
        "feature": "EnvoyFilter/shop/custom-lua",
        "status": "unsupported",
        "detail": "EnvoyFilter is not translated by dpumesh",
    } in features


def test_compilation_is_deterministic(compile_dir):
    assert compile_dir("features").bundle.files == compile_dir("features").bundle.files


def test_steering_model(compile_dir):
    import json

    c = compile_dir("basic", network_mode="overlay")
    steering = json.loads(c.bundle.files["steering.json"])
    assert steering["schema"] == "dpumesh.io/steering/v1" and steering["network_mode"] == "overlay"
    pods = {f"{p['namespace']}/{p['name']}": p for p in steering["pods"]}
    assert set(pods) == {"shop/frontend-0", "shop/reviews-v1-0", "other/client-0", "legacy/old-0"}
    assert pods["legacy/old-0"]["meshed"] is False and pods["legacy/old-0"]["capture"]["outbound"] is False
    assert pods["shop/frontend-0"]["capture"]["outbound"] is True
    assert steering["remote_nodes"] == [
        {
            "node": "node-2",
            "fabric_ip": "192.168.250.2",
            "pod_cidr": "10.244.2.0/24",
            "pod_ips": sorted(
                [
                    pod_ip(compile_dir("basic", node="node-2"), "shop/reviews-v2-0"),
                    pod_ip(compile_dir("basic", node="node-2"), "shop/db-0"),
                ]
            ),
        }
    ]
    assert steering["version"] == c.bundle.version


SCOPED_CLIENTS = """
apiVersion: v1
kind: Pod
metadata: {name: plain, namespace: other}
spec: {nodeName: node-1, containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: Pod
metadata: {name: shop-only, namespace: other, labels: {egress: shop-only}}
spec: {nodeName: node-1, containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: Pod
metadata: {name: with-legacy, namespace: other, labels: {egress: with-legacy}}
spec: {nodeName: node-1, containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: Pod
metadata: {name: by-host, namespace: other, labels: {egress: by-host}}
spec: {nodeName: node-1, containers: [{name: c, image: x}]}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: shop-only, namespace: other}
spec: {workloadSelector: {labels: {egress: shop-only}}, egress: [{hosts: ["./*", "shop/*"]}]}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: with-legacy, namespace: other}
spec: {workloadSelector: {labels: {egress: with-legacy}}, egress: [{hosts: ["shop/*", "legacy/*"]}]}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: by-host, namespace: other}
spec: {workloadSelector: {labels: {egress: by-host}}, egress: [{hosts: ["*/api.shop.svc.cluster.local"]}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api-teapot, namespace: legacy}
spec:
  hosts: [api.shop.svc.cluster.local]
  http:
  - fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: api.shop.svc.cluster.local}}]
"""


def test_sidecar_egress_imports_a_virtual_service_only_from_the_namespaces_it_names(compile_docs):
    """istiod gives a sidecar a VirtualService only when its Sidecar's egress names the VirtualService's namespace
    (or `*`) with a host overlapping the VirtualService's; the Service itself may be imported through another one."""
    c = compile_docs(API_POD_AND_SERVICE + SCOPED_CLIENTS)
    api = "api.shop.svc.cluster.local"

    def aborts(pod: str) -> bool:
        route = routes_for(c, pod, 80, api)[0]
        return "envoy.filters.http.fault" in route.get("typed_per_filter_config", {})

    assert aborts("other/plain")  # no Sidecar: every VirtualService exported to it
    assert not aborts("other/shop-only")  # sees the Service, not legacy's VirtualService: the default route
    assert routes_for(c, "other/shop-only", 80, api)[0]["route"]["cluster"].startswith(f"outbound|80||{api}")
    assert aborts("other/with-legacy")
    assert aborts("other/by-host")
    classes = {c.class_of(pod_ip(c, f"other/{p}")) for p in ("plain", "shop-only", "with-legacy", "by-host")}
    assert len(classes) == 4


DETECTED_AND_SERVER_FIRST = """
apiVersion: v1
kind: Service
metadata: {name: detect, namespace: shop}
spec: {clusterIP: 10.96.50.1, ports: [{port: 8000}]}
---
apiVersion: v1
kind: Service
metadata: {name: mysql, namespace: shop}
spec: {clusterIP: 10.96.50.2, ports: [{name: mysql, port: 3306}]}
---
apiVersion: v1
kind: Service
metadata: {name: secure, namespace: shop}
spec: {clusterIP: 10.96.50.3, ports: [{name: https, port: 8443}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: detect, namespace: shop}
spec:
  hosts: [detect]
  http: [{fault: {abort: {httpStatus: 418, percentage: {value: 100}}}, route: [{destination: {host: detect}}]}]
"""


def test_a_port_without_protocol_is_detected_per_connection_and_only_inspected_ports_wait(compile_docs):
    """Istio detects the protocol of a Service port with no name or appProtocol: HTTP/1.x and h2c are routed as
    HTTP (VirtualService http routes apply), anything else as TCP. Inspectors wait for the client's bytes, so
    each runs only where needed: a server-first protocol on a TCP port is forwarded at once."""
    c = compile_docs(API_POD_AND_SERVICE + DETECTED_AND_SERVER_FIRST)
    client, detect = pod_ip(c, "shop/a"), "detect.shop.svc.cluster.local"
    tcp_chain = c.chain_for(client, "10.96.50.1", 8000)
    assert tcp_chain != "0.0.0.0_8000" and tcp_chain not in ("passthrough", "blackhole")
    assert network_filter(c.chain(tcp_chain), "envoy.filters.network.tcp_proxy")["cluster"].startswith(
        f"outbound|8000||{detect}"
    )
    for detected in ("'http/1.1'", "'http/1.0'", "'h2c'"):
        assert c.chain_for(client, "10.96.50.1", 8000, http=detected) == "0.0.0.0_8000"
    assert c.chain_for(client, "10.96.50.1", 8000, http="'h2'") == tcp_chain  # only plaintext HTTP is detected
    assert c.chain_for(client, "10.96.50.1", 8000, sni=detect) == tcp_chain  # TLS stays TCP
    # Plaintext HTTP to an address no Service has stays passthrough on this port, as under Istio.
    assert c.chain_for(client, "192.0.2.1", 8000, http="'http/1.1'") == "passthrough"
    route = c.vhost("0.0.0.0_8000", f"{detect}:8000")["routes"][0]
    assert route["typed_per_filter_config"]["envoy.filters.http.fault"]["abort"]["http_status"] == 418
    # The upstream speaks what the client spoke.
    options = c.cluster(route["route"]["cluster"])["typed_extension_protocol_options"]
    http_options = options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert set(http_options["use_downstream_protocol_config"]) == {"http_protocol_options", "http2_protocol_options"}

    listener = c.listener("outbound")
    assert [p for p in (80, 3306, 8000, 8443) if inspects(listener, "envoy.filters.listener.http_inspector", p)] == [
        8000
    ]
    assert [p for p in (80, 3306, 8000, 8443) if inspects(listener, "envoy.filters.listener.tls_inspector", p)] == [
        8443
    ]
    assert listener["continue_on_listener_filters_timeout"] is True
    features = {f["feature"]: f for f in features_of(json.loads(c.bundle.files["parity.json"]), "shop/a")}
    assert features[f"protocol of {detect}:8000"]["status"] == "kept"


def test_the_receiving_side_of_a_port_without_protocol_detects_http_as_a_sidecar_does(compile_docs, tmp_path):
    """The server's proxy cannot see inside mTLS: the client's proxy offers ALPN istio-http/1.1 for HTTP to such a
    port (its HTTP routes use a cluster variant that does), and the server picks its HTTP chain by it; plaintext
    is detected by the HTTP inspector, on that port only. Anything else is the port's TCP chain."""
    from dpumesh.bundle import validate_with_envoy, write_tree

    c = compile_docs(
        API_POD_AND_SERVICE
        + """
apiVersion: v1
kind: Service
metadata: {name: detect, namespace: shop}
spec: {selector: {app: detect}, ports: [{port: 8000}]}
---
apiVersion: v1
kind: Pod
metadata: {name: detect-0, namespace: shop, labels: {app: detect}}
spec: {nodeName: node-1, containers: [{name: c, image: x}]}
"""
    )
    client, server, detect = pod_ip(c, "shop/a"), pod_ip(c, "shop/detect-0"), "detect.shop.svc.cluster.local"
    # Client side: HTTP routes signal HTTP, the TCP chain does not.
    route = c.vhost("0.0.0.0_8000", f"{detect}:8000")["routes"][-1]
    http_cluster = c.cluster(route["route"]["cluster"])
    assert http_cluster["name"] == f"outbound|8000||{detect}~http"
    assert http_cluster["alt_stat_name"] == f"outbound|8000||{detect}"
    tcp_vip = next(h for h in c.state.services if h.meta.key == "shop/detect").cluster_ip
    tcp_cluster = c.cluster(
        network_filter(c.chain(c.chain_for(client, tcp_vip, 8000)), "envoy.filters.network.tcp_proxy")["cluster"]
    )
    assert tcp_cluster["name"] == f"outbound|8000||{detect}"

    def alpn(cluster: dict) -> list[str]:
        sockets = [m["transport_socket"] for m in cluster["transport_socket_matches"] if m["name"] == "tlsMode-istio"]
        return sockets[0]["typed_config"]["common_tls_context"]["alpn_protocols"]

    assert alpn(http_cluster) == ["istio-http/1.1"]
    assert alpn(tcp_cluster) == ["istio-peer-exchange", "istio"]
    # Server side (PERMISSIVE): HTTP chains for signalled mTLS and detected plaintext, TCP chains otherwise.
    label = f"inbound|{server}|8000"
    assert c.inbound_chain_for(server, 8000, alpn="'istio-http/1.1'") == f"{label}|http|mtls"
    assert c.inbound_chain_for(server, 8000, alpn="'istio-h2'") == f"{label}|http|mtls"
    assert c.inbound_chain_for(server, 8000, alpn="'istio-peer-exchange','istio'") == f"{label}|mtls"
    assert c.inbound_chain_for(server, 8000, alpn="'h2','http/1.1'") == f"{label}|plaintext"  # foreign TLS
    for detected in ("'http/1.1'", "'http/1.0'", "'h2c'"):
        assert c.inbound_chain_for(server, 8000, http=detected) == f"{label}|http|plaintext"
    assert c.inbound_chain_for(server, 8000) == f"{label}|plaintext"
    inbound = c.listener("inbound")
    chain = next(ch for ch in inbound["filter_chains"] if ch["name"] == f"{label}|http|mtls")
    manager = network_filter(chain, "envoy.filters.network.http_connection_manager")
    upstream = manager["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["cluster"]
    assert upstream == "inbound|8000||~detected"
    options = c.cluster(upstream)["typed_extension_protocol_options"]
    assert "use_downstream_protocol_config" in options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert [p for p in (80, 8000, 9000) if inspects(inbound, "envoy.filters.listener.http_inspector", p)] == [8000]
    features = {f["feature"] for f in features_of(json.loads(c.bundle.files["parity.json"]), "shop/detect-0")}
    assert "inbound protocol of port 8000" not in features
    assert write_tree(
        tmp_path / "node", c.bundle.files, lambda d: validate_with_envoy(d, "/etc/dpumesh/proxy/current/envoy")
    )


TWO_RULES_ONE_HOST = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api-base, namespace: shop, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  host: api
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api-canary, namespace: shop, creationTimestamp: "2026-02-01T00:00:00Z"}
spec:
  host: api.shop.svc.cluster.local
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
  subsets: [{name: v1, labels: {version: other}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: shop}
spec:
  hosts: [api]
  http:
  - match: [{headers: {x-canary: {exact: "1"}}}]
    route: [{destination: {host: api, subset: v2}}]
  - route: [{destination: {host: api, subset: v1}}]
"""


def test_destination_rules_for_one_host_in_one_namespace_are_merged_as_istiod_merges_them(compile_docs):
    """The older rule's traffic policy, every subset whose name is not taken yet; what is dropped is warned about."""
    c = compile_docs(API_POD_AND_SERVICE + TWO_RULES_ONE_HOST)
    api = "api.shop.svc.cluster.local"
    canary, stable = (r["route"]["cluster"] for r in c.routes_for(pod_ip(c, "shop/a"), 80, api))
    assert canary == f"outbound|80|v2|{api}"  # the newer rule's subset: not an undefined-subset 503
    assert stable == f"outbound|80|v1|{api}"
    for name in (canary, stable):
        assert c.cluster(name)["lb_policy"] == "RANDOM"  # the older rule's policy
    assert c.cluster(stable)["load_assignment"]["cluster_name"] == stable
    warnings = {(w.name, w.field): w.message for w in c.bundle.warnings}
    assert "api-base" in warnings[("api-canary", "spec.trafficPolicy")]
    assert "'v1'" in warnings[("api-canary", "spec.subsets[0]")]
    assert ("api-canary", "spec.subsets[1]") not in warnings


SELECTED_RULE = """
apiVersion: v1
kind: Pod
metadata: {name: canary-client, namespace: shop, labels: {role: canary}}
spec: {nodeName: node-1, containers: [{name: c, image: x}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: shop}
spec:
  host: api
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api-for-canaries, namespace: shop}
spec:
  host: api
  workloadSelector: {matchLabels: {role: canary}}
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
  subsets: [{name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: shop}
spec:
  hosts: [api]
  http:
  - match: [{headers: {x-version: {exact: "2"}}}]
    route: [{destination: {host: api, subset: v2}}]
  - route: [{destination: {host: api}}]
"""


def test_a_destination_rule_with_a_workload_selector_applies_to_the_clients_it_selects_only(compile_docs):
    """istiod gives a selected client the rule with the workloadSelector instead of the namespace's rule."""
    c = compile_docs(API_POD_AND_SERVICE + SELECTED_RULE)
    api = "api.shop.svc.cluster.local"
    selected, plain = pod_ip(c, "shop/canary-client"), pod_ip(c, "shop/a")
    assert c.class_of(selected) != c.class_of(plain)
    v2_selected, default_selected = (r["route"]["cluster"] for r in c.routes_for(selected, 80, api))
    v2_plain, default_plain = (r["route"]["cluster"] for r in c.routes_for(plain, 80, api))
    assert v2_selected == f"outbound|80|v2|{api}~dr=shop/api-for-canaries"
    assert v2_plain == f"outbound|80|v2|{api}~undefined-subset"  # the namespace's rule has no v2: 503
    assert default_selected == f"outbound|80||{api}~dr=shop/api-for-canaries"
    assert default_plain == f"outbound|80||{api}"
    assert c.cluster(default_selected)["lb_policy"] == "RANDOM"
    assert c.cluster(default_plain)["lb_policy"] == "LEAST_REQUEST"
    features = {f["feature"] for f in features_of(json.loads(c.bundle.files["parity.json"]), "shop/canary-client")}
    assert not any("workloadSelector" in f for f in features)
