"""DestinationRules → Envoy clusters, named as Istio names them.

Routes ask the catalog for a cluster (`ref`); the catalog decides which
variant a source class needs (its DestinationRule; for DestinationRule
credentials, its namespace) and builds each distinct cluster once. The client
identity is not part of a cluster: it is chosen per connection (see `tls`).
"""

from __future__ import annotations

from typing import Any

from dpumesh.compiler import tls
from dpumesh.compiler.bootstrap import CLUSTER, encode_resource
from dpumesh.compiler.context import CompileContext, typed
from dpumesh.compiler.durations import envoy_duration, parse_duration
from dpumesh.compiler.registry import Host, HostEndpoint, is_http
from dpumesh.compiler.views import View, destination_rule_for
from dpumesh.describe import describe_cluster
from dpumesh.state.model import IstioObject

PASSTHROUGH = "PassthroughCluster"
BLACKHOLE = "BlackHoleCluster"
MAX = 4294967295  # Istio's "unlimited" circuit-breaker thresholds
SIMPLE_LB = {
    "ROUND_ROBIN": "ROUND_ROBIN",
    "LEAST_REQUEST": "LEAST_REQUEST",
    "LEAST_CONN": "LEAST_REQUEST",
    "RANDOM": "RANDOM",
    "PASSTHROUGH": "CLUSTER_PROVIDED",
    "UNSPECIFIED": "LEAST_REQUEST",
}
TLS_MODES = ("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL")
H2_UPGRADE_POLICIES = ("DEFAULT", "DO_NOT_UPGRADE", "UPGRADE")
POLICY_KEYS = (
    "loadBalancer",
    "connectionPool",
    "outlierDetection",
    "tls",
    "portLevelSettings",
    "tunnel",
    "proxyProtocol",
)


def istio_name(port: int, subset: str, fqdn: str) -> str:
    return f"outbound|{port}|{subset}|{fqdn}"


def upstream_mark(mark: int) -> dict[str, Any]:
    """Bind config that sets SO_MARK on upstream sockets, so the dataplane can tell them apart."""
    return {
        "source_address": {"address": "0.0.0.0", "port_value": 0},
        "socket_options": [{"level": 1, "name": 36, "int_value": mark, "state": "STATE_PREBIND"}],
    }


# (fqdn, port, subset, namespace/name of the DestinationRule or "", client namespace, signals HTTP):
# DestinationRule credentialName secrets are the client namespace's. A plain tuple: the catalog looks one up
# for every route.
ClusterKey = tuple[str, int, str, str, str, bool]
HTTP_SIGNAL_SUFFIX = "~http"  # the variant an HTTP route uses for a port whose protocol the server detects


class ClusterCatalog:
    @classmethod
    def shared(cls, ctx: CompileContext) -> ClusterCatalog:
        """The catalog of the whole state: a cluster is the same on every node, so it is built once."""
        key = ("cluster-catalog",)
        if key not in ctx.memo:
            ctx.memo[key] = cls(ctx)
        return ctx.memo[key]

    def __init__(self, ctx: CompileContext):
        self.ctx = ctx
        # Each cluster is written once for every node, as CDS JSON and as its describe.txt line, when built;
        # the dicts are not kept (thousands of them, which the garbage collector would rescan).
        self.encoded: dict[str, bytes] = {}
        self.described: dict[str, str] = {}
        self.hash_policies: dict[str, list[dict[str, Any]]] = {}
        self._names: dict[ClusterKey, str] = {}
        self._identities: dict[frozenset[str], list[str]] = {}
        self._lb_endpoints: dict[int, tuple[HostEndpoint, dict[str, Any]]] = {}
        self._bind_config = upstream_mark(ctx.mesh.proxy.capture_mark)  # the same in every cluster, never changed

    # -- naming ---------------------------------------------------------------------------
    def ref(
        self, cls: View, dest: dict[str, Any], listener_port: int, vs: IstioObject | None, http: bool = False
    ) -> str:
        """The cluster name for a route destination, as seen by `cls` (`http`: from an HTTP route)."""
        ns = vs.meta.namespace if vs is not None else cls.namespace
        fqdn = self.ctx.registry.resolve(str(dest.get("host")), ns)
        host = self.ctx.registry.hosts.get(fqdn)
        subset = str(dest.get("subset") or "")
        port = (dest.get("port") or {}).get("number")
        if port is None:
            port = next(iter(host.ports)) if host is not None and len(host.ports) == 1 else listener_port
        if host is None or port not in host.ports:
            # Unknown host or port: Istio points at a cluster that does not exist → 503 at request time.
            return istio_name(port, subset, fqdn)
        return self.cluster_for(cls, host, port, subset, http)

    def cluster_for(self, cls: View, host: Host, port: int, subset: str = "", http: bool = False) -> str:
        """The cluster for (host, port, subset) as seen by `cls`.

        HTTP routes (`http`) to a port whose protocol is detected use a variant that tells the server's proxy, by
        its ALPN, that the connection carries HTTP: that proxy then applies its HTTP chain (HTTP authorization
        rules), as a sidecar does. TCP chains use the plain cluster.
        """
        dr = destination_rule_for(self.ctx, cls.namespace, host, cls.source_matches)
        if subset and not _find_subset(dr, subset):
            # Undefined subset → 503, like Istio: a name no cluster has, even where another
            # namespace's DestinationRule defines that subset under Istio's name.
            return f"{istio_name(port, subset, host.fqdn)}~undefined-subset"
        dr_key = dr.meta.key if dr else ""
        signals = http and host.sniffs(port)
        key: ClusterKey = (host.fqdn, port, subset, dr_key, cls.namespace, signals)
        name = self._names.get(key)
        if name is not None:
            return name
        # Only DestinationRule credentials make a cluster depend on the client's namespace; a cluster
        # without them, built for one class, serves every class that resolves the same rule.
        any_client: ClusterKey = (host.fqdn, port, subset, dr_key, "", signals)
        name = self._names.get(any_client)
        if name is not None:
            self._names[key] = name
            return name
        cluster, hash_policy = self.build(cls, host, port, subset, dr, signals)
        name = istio_name(port, subset, host.fqdn) + (HTTP_SIGNAL_SUFFIX if signals else "")
        if _uses_credentials(cluster):
            name += f"~{cls.namespace}"
        else:
            self._names[any_client] = name
        if dr and (dr.meta.namespace != host.namespace or dr.spec.get("workloadSelector")):
            name += f"~dr={dr.meta.key}"
        cluster["name"] = name
        cluster["alt_stat_name"] = istio_name(port, subset, host.fqdn)
        if hash_policy:
            self.hash_policies[name] = hash_policy  # by the full name: its routes alone, not another variant's
        if name not in self.encoded:
            self.encoded[name] = encode_resource(CLUSTER, cluster)
            self.described[name] = describe_cluster(cluster)
        self._names[key] = name
        return name

    # -- building -------------------------------------------------------------------------
    def build(
        self, cls: View, host: Host, port: int, subset: str, dr: IstioObject | None, signals_http: bool = False
    ) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
        """The cluster, and the hash policy its routes need (`apply_load_balancer`)."""
        hp = host.ports[port]
        policy = effective_policy(dr, subset, port)
        endpoints = hp.endpoints
        subset_labels = (_find_subset(dr, subset) or {}).get("labels") or {} if subset else {}
        if subset_labels:
            wanted = [(k, str(v)) for k, v in subset_labels.items()]
            endpoints = [e for e in endpoints if all(e.labels.get(k) == v for k, v in wanted)]
        cluster: dict[str, Any] = {
            "connect_timeout": "10s",
            "upstream_bind_config": self._bind_config,
            "circuit_breakers": {
                "thresholds": [
                    {"max_connections": MAX, "max_pending_requests": MAX, "max_requests": MAX, "max_retries": MAX}
                ]
            },
            "common_lb_config": {},
        }
        if host.resolution == "NONE":
            cluster.update({"type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED"})
        else:
            cluster["type"] = "STRICT_DNS" if host.resolution == "DNS" else "STATIC"
            cluster["lb_policy"] = "LEAST_REQUEST"
            cluster["load_assignment"] = {
                "cluster_name": istio_name(port, subset, host.fqdn),
                "endpoints": [{"lb_endpoints": [self._lb_endpoint(e) for e in endpoints]}] if endpoints else [],
            }
        if host.sniffs(port):
            cluster["typed_extension_protocol_options"] = _http_options(http2=False, downstream=True)
        elif _upstream_http2(hp.protocol, policy.get("connectionPool")):
            cluster["typed_extension_protocol_options"] = _http_options(http2=True)
        where = ("DestinationRule", dr.meta.namespace, dr.meta.name) if dr else None
        hash_policy = self.apply_load_balancer(cluster, policy.get("loadBalancer"), where, is_http(hp.protocol))
        self.apply_connection_pool(cluster, policy.get("connectionPool"), where, hp.protocol, host.sniffs(port))
        self.apply_outlier(cluster, policy.get("outlierDetection"), where)
        alpn = tls.ISTIO_HTTP_ALPN if signals_http else tls.ISTIO_ALPN
        self.apply_tls(cluster, cls, host, port, subset, policy.get("tls"), where, endpoints, alpn)
        if not cluster["common_lb_config"]:
            del cluster["common_lb_config"]
        return cluster, hash_policy

    def apply_load_balancer(self, cluster, lb, where, http: bool) -> list[dict[str, Any]] | None:
        """The load balancer into `cluster`; returns the hash policy its routes need (consistent hash)."""
        if not lb:
            return None
        if "simple" in lb:
            simple = lb["simple"]
            if simple not in SIMPLE_LB:
                self._error(where, "trafficPolicy.loadBalancer.simple", f"{simple!r} is not one of {sorted(SIMPLE_LB)}")
                return None
            if simple == "PASSTHROUGH":
                cluster.update({"type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED"})
                cluster.pop("load_assignment", None)
            else:
                cluster["lb_policy"] = SIMPLE_LB[simple]
        elif "consistentHash" in lb:
            ch = lb["consistentHash"] or {}
            policy: dict[str, Any]
            if "httpHeaderName" in ch:
                policy = {"header": {"header_name": str(ch["httpHeaderName"])}}
            elif "httpCookie" in ch:
                cookie = ch["httpCookie"] or {}
                if not cookie.get("name"):
                    self._error(where, "trafficPolicy.loadBalancer.consistentHash.httpCookie.name", "is required")
                    return None
                policy = {"cookie": {"name": cookie["name"]}}
                if cookie.get("ttl"):
                    policy["cookie"]["ttl"] = envoy_duration(parse_duration(cookie["ttl"]) or 0)
                if cookie.get("path"):
                    policy["cookie"]["path"] = cookie["path"]
            elif ch.get("useSourceIp"):
                policy = {"connection_properties": {"source_ip": True}}
            elif "httpQueryParameterName" in ch:
                policy = {"query_parameter": {"name": str(ch["httpQueryParameterName"])}}
            else:
                self._error(where, "trafficPolicy.loadBalancer.consistentHash", "names no hash key")
                return None
            if "maglev" in ch:
                cluster["lb_policy"] = "MAGLEV"
                size = (ch.get("maglev") or {}).get("tableSize")
                if size:
                    cluster["maglev_lb_config"] = {"table_size": size}
            else:
                cluster["lb_policy"] = "RING_HASH"
                size = (ch.get("ringHash") or {}).get("minimumRingSize") or ch.get("minimumRingSize") or 1024
                cluster["ring_hash_lb_config"] = {"minimum_ring_size": size}
            if http or "connection_properties" in policy:
                return [policy]
        # localityLbSetting: one node, one locality: nothing to do (reported in parity)
        return None

    def apply_connection_pool(self, cluster, pool, where, protocol, sniffed: bool = False) -> None:
        if not pool:
            return
        thresholds = cluster["circuit_breakers"]["thresholds"][0]
        tcp, http = pool.get("tcp") or {}, pool.get("http") or {}
        fld = "trafficPolicy.connectionPool"
        for key, target in (("maxConnections", "max_connections"),):
            if key in tcp:
                thresholds[target] = self._positive(where, f"{fld}.tcp.{key}", tcp[key])
        if "connectTimeout" in tcp:
            self._set_duration(cluster, "connect_timeout", where, f"{fld}.tcp.connectTimeout", tcp["connectTimeout"])
        for key, target in (
            ("http1MaxPendingRequests", "max_pending_requests"),
            ("http2MaxRequests", "max_requests"),
            ("maxRetries", "max_retries"),
        ):
            if key in http:
                thresholds[target] = self._positive(where, f"{fld}.http.{key}", http[key])
        options: dict[str, Any] = {}
        if "maxRequestsPerConnection" in http:
            options["max_requests_per_connection"] = self._positive(
                where, f"{fld}.http.maxRequestsPerConnection", http["maxRequestsPerConnection"]
            )
        if "idleTimeout" in http:
            self._set_duration(options, "idle_timeout", where, f"{fld}.http.idleTimeout", http["idleTimeout"])
        if http.get("h2UpgradePolicy", "DEFAULT") not in H2_UPGRADE_POLICIES:
            message = f"{http['h2UpgradePolicy']!r} is not one of {H2_UPGRADE_POLICIES}"
            self._error(where, f"{fld}.http.h2UpgradePolicy", message)
        if options and (is_http(protocol) or sniffed):
            http2 = _upstream_http2(protocol, pool)
            cluster["typed_extension_protocol_options"] = _http_options(http2, common=options, downstream=sniffed)

    def apply_outlier(self, cluster, od, where) -> None:
        if not od:
            return
        fld = "trafficPolicy.outlierDetection"
        out: dict[str, Any] = {"enforcing_consecutive_5xx": 0, "enforcing_success_rate": 0}
        if "consecutive5xxErrors" in od:
            out["consecutive_5xx"] = self._positive(where, f"{fld}.consecutive5xxErrors", od["consecutive5xxErrors"])
            out["enforcing_consecutive_5xx"] = 100
        if "consecutiveGatewayErrors" in od:
            out["consecutive_gateway_failure"] = self._positive(
                where, f"{fld}.consecutiveGatewayErrors", od["consecutiveGatewayErrors"]
            )
            out["enforcing_consecutive_gateway_failure"] = 100
        for key, target in (("interval", "interval"), ("baseEjectionTime", "base_ejection_time")):
            if key in od:
                self._set_duration(out, target, where, f"{fld}.{key}", od[key])
        if "maxEjectionPercent" in od:
            out["max_ejection_percent"] = self._positive(where, f"{fld}.maxEjectionPercent", od["maxEjectionPercent"])
        if "minHealthPercent" in od:
            cluster["common_lb_config"]["healthy_panic_threshold"] = {"value": float(od["minHealthPercent"])}
        cluster["outlier_detection"] = out

    def apply_tls(self, cluster, cls, host: Host, port, subset, settings, where, endpoints, alpn) -> None:
        mode = (settings or {}).get("mode", "")
        if settings and mode not in TLS_MODES:
            self._error(where, "trafficPolicy.tls.mode", f"{mode!r} is not one of {TLS_MODES}")
            return

        def istio() -> dict[str, Any]:
            sni = f"outbound_.{port}_.{subset}_.{host.fqdn}"
            return tls.client_transport_socket(self.ctx, sni, self._peer_identities(endpoints), alpn)

        if mode == "ISTIO_MUTUAL":
            cluster["transport_socket"] = istio()
        elif mode in ("SIMPLE", "MUTUAL"):
            cluster["transport_socket"] = tls.simple_client_transport_socket(
                self.ctx, settings, where, client_namespace=cls.namespace
            )
        elif mode == "" and not host.mesh_external and any(e.meshed for e in endpoints):
            # Istio's auto mTLS: Istio TLS to endpoints that have a proxy, plaintext to the rest.
            cluster["transport_socket_matches"] = [
                {"name": "tlsMode-istio", "match": {"tlsMode": "istio"}, "transport_socket": istio()},
                _PLAINTEXT_MATCH,
            ]

    def _lb_endpoint(self, e: HostEndpoint) -> dict[str, Any]:
        """An endpoint as clusters list it: one object per endpoint, shared by its clusters (never changed)."""
        found = self._lb_endpoints.get(id(e))
        if found is None:
            found = self._lb_endpoints[id(e)] = (e, _lb_endpoint(e))  # keeps e, so its id stays its own
        return found[1]

    def _peer_identities(self, endpoints: list[HostEndpoint]) -> list[str]:
        """The SPIFFE identities of the endpoints' service accounts, sorted (once per set of accounts)."""
        accounts = frozenset(e.service_account for e in endpoints if e.service_account)
        found = self._identities.get(accounts)
        if found is None:
            found = self._identities[accounts] = sorted(
                {self.ctx.identity(*account.split("/", 1)) for account in accounts}
            )
        return found

    # -- helpers --------------------------------------------------------------------------
    def _error(self, where, fld: str, message: str) -> None:
        if where:
            self.ctx.diag.error(*where, f"spec.{fld}", message)

    def _set_duration(self, target: dict[str, Any], key: str, where, fld: str, value: Any) -> None:
        """target[key] = value as an Envoy duration, or an error naming the field."""
        seconds = parse_duration(value)
        if seconds is None:
            self._error(where, fld, f"{value!r} is not a duration")
        else:
            target[key] = envoy_duration(seconds)

    def _positive(self, where, fld: str, value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            self._error(where, fld, f"{value!r} is not a non-negative integer")
            return 0
        return value

    def fixed_clusters(self) -> list[dict[str, Any]]:
        return [
            {
                "name": PASSTHROUGH,
                "type": "ORIGINAL_DST",
                "lb_policy": "CLUSTER_PROVIDED",
                "connect_timeout": "10s",
                "upstream_bind_config": upstream_mark(self.ctx.mesh.proxy.capture_mark),
            },
            {"name": BLACKHOLE, "type": "STATIC", "connect_timeout": "10s"},
        ]


def _find_subset(dr: IstioObject | None, subset: str) -> dict[str, Any] | None:
    if dr is None:
        return None
    for s in dr.spec.get("subsets") or []:
        if isinstance(s, dict) and s.get("name") == subset:
            return s
    return None


def effective_policy(dr: IstioObject | None, subset: str, port: int) -> dict[str, Any]:
    """Top-level policy, then the subset's, each refined by its portLevelSettings for `port`."""
    if dr is None:
        return {}
    layers = [dr.spec.get("trafficPolicy") or {}]
    if subset:
        layers.append((_find_subset(dr, subset) or {}).get("trafficPolicy") or {})
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update({k: v for k, v in layer.items() if k in POLICY_KEYS and k != "portLevelSettings"})
        for pls in layer.get("portLevelSettings") or []:
            if isinstance(pls, dict) and (pls.get("port") or {}).get("number") == port:
                merged.update({k: v for k, v in pls.items() if k != "port"})
    return merged


def _lb_endpoint(e: HostEndpoint) -> dict[str, Any]:
    out: dict[str, Any] = {"endpoint": {"address": {"socket_address": {"address": e.address, "port_value": e.port}}}}
    if e.meshed:
        out["metadata"] = ISTIO_ENDPOINT
    return out


# Auto mTLS: plaintext to endpoints without a proxy (shared by every such cluster, never changed).
_PLAINTEXT_MATCH = {
    "name": "tlsMode-disabled",
    "match": {},
    "transport_socket": {
        "name": "envoy.transport_sockets.raw_buffer",
        "typed_config": typed("envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"),
    },
}
ISTIO_ENDPOINT = {"filter_metadata": {"envoy.transport_socket_match": {"tlsMode": "istio"}}}  # shared, never changed


def _upstream_http2(protocol: str, pool: dict[str, Any] | None) -> bool:
    """HTTP2/gRPC ports speak HTTP/2 to the server's proxy; an HTTP/1.1 port too when the DestinationRule's
    h2UpgradePolicy is UPGRADE (otherwise meshConfig's default, DO_NOT_UPGRADE). The server's proxy speaks the
    port's own protocol to the application either way (`inbound.py`)."""
    upgrade = ((pool or {}).get("http") or {}).get("h2UpgradePolicy")
    return protocol in ("HTTP2", "GRPC") or (is_http(protocol) and upgrade == "UPGRADE")


def _http_options(http2: bool, common: dict[str, Any] | None = None, downstream: bool = False) -> dict[str, Any]:
    """The upstream HTTP version: HTTP/2 or HTTP/1.1, or the client's own on a port whose protocol is detected."""
    if downstream:
        version = {"use_downstream_protocol_config": {"http_protocol_options": {}, "http2_protocol_options": {}}}
    else:
        version = {"explicit_http_config": {"http2_protocol_options": {}} if http2 else {"http_protocol_options": {}}}
    options = typed(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        **version,
        **({"common_http_protocol_options": common} if common else {}),
    )
    return {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": options}


def _uses_credentials(cluster: dict[str, Any]) -> bool:
    """Whether the cluster reads a DestinationRule credentialName secret (one per client namespace).

    Only a SIMPLE/MUTUAL socket may (its client certificate or its CA); auto-mTLS matches are Istio sockets.
    """
    socket = cluster.get("transport_socket")
    if not socket:
        return False
    common = socket["typed_config"].get("common_tls_context", {})
    refs = [*common.get("tls_certificate_sds_secret_configs", [])]
    refs.append(common.get("combined_validation_context", {}).get("validation_context_sds_secret_config"))
    return any(ref and ref["name"].startswith(tls.CREDENTIAL_PREFIX) for ref in refs)
