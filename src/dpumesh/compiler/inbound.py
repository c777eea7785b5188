"""The inbound listener: every local meshed pod's sidecar inbound side, in one listener.

Connections reach it through TPROXY with the original destination kept, so the
accepted socket's local address is the pod's IP:port. A filter chain matcher picks
the chain: destination IP (the pod) → destination port (a port a Service declares
for the pod, else the pod's passthrough) → transport (TLS or plaintext, per the
port's mTLS mode; in PERMISSIVE, TLS that does not offer an `istio` ALPN goes to
the application untouched, as with a sidecar). A plaintext connection to a STRICT
port finds no chain and is closed.

A Sidecar with `ingress` listeners that applies to the pod replaces the Service ports, as in Istio: its
ports (with their protocols) are the pod's inbound ports, and `defaultEndpoint` chooses the pod port the
connection goes to (`0.0.0.0:P`, or `127.0.0.1:P`, which is the pod IP here: the proxy is outside the pod).

On a port a Service declares without a protocol, the protocol is detected per connection, as a sidecar
detects it: mTLS whose ALPN says HTTP (`istio-http/1.1`, what client proxies offer for HTTP to such a port)
and plaintext the HTTP inspector recognises go to an HTTP chain (HTTP authorization rules, JWT), anything
else to the port's TCP chain (TCP authorization rules).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dpumesh.compiler.authz import AuthorizationPolicies
from dpumesh.compiler.clusters import MAX, upstream_mark
from dpumesh.compiler.context import DIFFERENT, KEPT, UNSUPPORTED, CompileContext, typed
from dpumesh.compiler.jwt import RequestAuthentications
from dpumesh.compiler.outbound import inspector_for_ports, plaintext_http
from dpumesh.compiler.peerauth import DISABLE, STRICT, PeerAuthentications
from dpumesh.compiler.registry import is_http, port_protocol
from dpumesh.compiler.tls import server_transport_socket
from dpumesh.compiler.views import sidecar_for
from dpumesh.state.model import IstioObject, Pod

LISTENER_NAME = "inbound"
PASSTHROUGH = "InboundPassthroughCluster"
REJECT_CHAIN = "inbound|plaintext-rejected"
REJECT_CLUSTER = "InboundBlackHoleCluster"  # no endpoints: tcp_proxy closes the connection at once
HTTP_ALPN = ["h2", "http/1.1"]
TCP_ALPN = ["istio-peer-exchange", "h2", "http/1.1"]
# Marks the accepted socket's local address (the pod IP:port under TPROXY) as the original
# destination, which ORIGINAL_DST clusters require.
ORIGINAL_DST = {
    "name": "envoy.filters.listener.original_dst",
    "typed_config": typed("envoy.extensions.filters.listener.original_dst.v3.OriginalDst"),
}
TLS_INSPECTOR = {
    "name": "envoy.filters.listener.tls_inspector",
    "typed_config": typed("envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"),
}
_INPUTS = "envoy.extensions.matching.common_inputs.network.v3"


def _input(name: str, type_name: str) -> dict[str, Any]:
    return {"name": f"envoy.matching.inputs.{name}", "typed_config": typed(f"{_INPUTS}.{type_name}")}


def _select(chain: str) -> dict[str, Any]:
    return {"action": {"name": chain, "typed_config": typed("google.protobuf.StringValue", value=chain)}}


_APPLICATION_PROTOCOL = _input("application_protocol", "ApplicationProtocolInput")


def _by_alpn(choices: list[tuple[dict[str, Any], str]], otherwise: dict[str, Any]) -> dict[str, Any]:
    """The chain of the first (string matcher of the offered ALPN values, chain) that matches, else `otherwise`."""
    matchers = [
        {
            "predicate": {"single_predicate": {"input": _APPLICATION_PROTOCOL, "value_match": match}},
            "on_match": _select(chain),
        }
        for match, chain in choices
    ]
    return {"matcher_list": {"matchers": matchers}, "on_no_match": otherwise}


# Istio 1.24 (ENABLE_INBOUND_RETRY_POLICY): retry a request the application's connection reset before it was sent.
INBOUND_RETRY = {"retry_on": "reset-before-request", "num_retries": 2}
H2_SUFFIX = "~h2"
DETECTED = "DETECTED"  # the protocol of HTTP found on a port a Service declares without one
DETECTED_SUFFIX = "~detected"
# The ALPN of a client proxy's mTLS carrying HTTP (`tls.ISTIO_HTTP_ALPN`, and Istio's other values), and of
# any client proxy's mTLS.
HTTP_SIGNAL = {"safe_regex": {"google_re2": {}, "regex": ".*'istio-(http/1\\.[01]|h2)'.*"}}
ISTIO_SIGNAL = {"contains": "'istio"}


TARGET_MARK = "~to"  # a cluster whose connections go to another pod port: inbound|<port>||~to<target>


def inbound_cluster_name(port: int, protocol: str = "TCP", target: int | None = None) -> str:
    """`inbound|<port>||` as Istio names it; HTTP2/gRPC ports get their own cluster, which speaks HTTP/2, and
    detected HTTP one that speaks what the client spoke; a Sidecar ingress port that forwards to another pod
    port one per target port."""
    suffix = {"HTTP2": H2_SUFFIX, "GRPC": H2_SUFFIX, DETECTED: DETECTED_SUFFIX}.get(protocol, "")
    if target is not None and target != port:
        suffix += f"{TARGET_MARK}{target}"
    return f"inbound|{port}||{suffix}"


@dataclass(frozen=True)
class IngressPort:
    """One port of a Sidecar's ingress listeners."""

    protocol: str
    detected: bool  # no protocol: detected per connection
    target: int  # the pod port connections go to
    endpoint: str  # defaultEndpoint as written ("" when unset)


def sidecar_ingress(ctx: CompileContext, pod: Pod) -> tuple[IstioObject, dict[int, IngressPort]] | None:
    """(the Sidecar, its ingress ports) when the Sidecar that applies to the pod has ingress listeners."""
    sidecar = sidecar_for(ctx, pod)
    listeners = sidecar.spec.get("ingress") if sidecar is not None else None
    if not listeners:
        return None
    ports: dict[int, IngressPort] = {}
    for item in listeners:
        number = int(item["port"]["number"])
        protocol, explicit = port_protocol("", str(item["port"].get("protocol") or ""))
        endpoint = str(item.get("defaultEndpoint") or "")
        target = number
        if endpoint and not endpoint.startswith("unix://"):
            target = int(endpoint.rsplit(":", 1)[1])
        ports.setdefault(number, IngressPort(protocol, not explicit, target, endpoint))
    return sidecar, ports


@dataclass(frozen=True)
class PortChains:
    """Chain names of one (pod, port): mTLS, plaintext, and TLS the proxy does not terminate; on a port whose
    protocol is detected, also the mTLS and plaintext chains for HTTP."""

    mtls: str
    plain: str
    foreign_tls: str
    mtls_http: str = ""
    plain_http: str = ""


def declared_ports(ctx: CompileContext, pod: Pod) -> dict[int, str]:
    """{pod port: protocol} for every Service port that has the pod as an endpoint (first Service wins)."""
    ports: dict[int, tuple[str, str]] = {}
    for host, hp, endpoint in _service_endpoints_by_address(ctx).get(pod.ip, []):
        seen = ports.setdefault(endpoint.port, (hp.protocol, host.source))
        if _family(seen[0]) != _family(hp.protocol):
            kind, namespace, name = "Service", *host.source.split("/", 1)
            ctx.diag.warn(
                kind, namespace, name, f"spec.ports[{hp.name or hp.number}]",
                f"pod {pod.meta.key} port {endpoint.port} is {seen[0]} for {seen[1]}; "
                f"that protocol is used",
            )  # fmt: skip
    return {port: protocol for port, (protocol, _) in sorted(ports.items())}


def detected_ports(ctx: CompileContext, pod: Pod) -> list[int]:
    """The pod's ports that a Service declares without a protocol: a sidecar would detect it per connection."""
    found = {e.port for host, hp, e in _service_endpoints_by_address(ctx).get(pod.ip, []) if host.sniffs(hp.number)}
    return sorted(found)


def _service_endpoints_by_address(ctx: CompileContext) -> dict[str, list]:
    """Pod IP → (host, port, endpoint) of every Service endpoint, in registry order (built once per state)."""
    key = ("service-endpoints-by-address",)
    if key not in ctx.memo:
        index: dict[str, list] = {}
        for host in ctx.registry.hosts.values():
            if host.kind == "Service":
                for hp in host.ports.values():
                    for endpoint in hp.endpoints:
                        index.setdefault(endpoint.address, []).append((host, hp, endpoint))
        ctx.memo[key] = index
    return ctx.memo[key]


def _family(protocol: str) -> str:
    return "HTTP" if is_http(protocol) else "TCP"


class InboundBuilder:
    def __init__(self, ctx: CompileContext):
        self.ctx = ctx
        self.peer = PeerAuthentications(ctx)
        self.authz = AuthorizationPolicies(ctx)
        self.jwt = RequestAuthentications(ctx)
        self.chains: list[dict[str, Any]] = []
        self.cluster_names: set[str] = set()
        self._rejecting = False  # the reject chain is added once
        self.sniffed_ports: set[int] = set()  # ports where plaintext HTTP is detected: HTTP inspector
        self._targets: dict[int, int] = {}  # the pod being built: port -> the pod port it forwards to

    # -- filters ----------------------------------------------------------------------------
    def http_filters(self, pod: Pod, port: int, protocol: str) -> list[dict[str, Any]]:
        cluster = inbound_cluster_name(port, protocol, self._targets.get(port))
        self.cluster_names.add(cluster)
        action: dict[str, Any] = {
            "cluster": cluster,
            "timeout": "0s",
            "max_stream_duration": {"max_stream_duration": "0s", "grpc_timeout_header_max": "0s"},
        }
        if protocol != "GRPC":
            action["retry_policy"] = dict(INBOUND_RETRY)
        route = {
            "name": "default",
            "match": {"prefix": "/"},
            "route": action,
            "decorator": {"operation": f"{pod.name}.{pod.namespace}:{port}/*"},
        }
        manager = typed(
            "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            stat_prefix=f"inbound_{pod.ip}_{port}",
            codec_type="AUTO",
            route_config={
                "name": cluster,
                "validate_clusters": False,
                "virtual_hosts": [{"name": f"inbound|http|{port}", "domains": ["*"], "routes": [route]}],
            },
            http_filters=[
                *self.jwt.http_filters(pod),  # before RBAC: its rules read the validated token's claims
                *self.authz.http_filters(pod),
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": typed("envoy.extensions.filters.http.router.v3.Router"),
                },
            ],
            use_remote_address=False,
            normalize_path=True,
            path_with_escaped_slashes_action="KEEP_UNCHANGED",
            forward_client_cert_details="APPEND_FORWARD",
            set_current_client_cert_details={"subject": True, "dns": True, "uri": True},
            upgrade_configs=[{"upgrade_type": "websocket"}],
        )
        return [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]

    def tcp_filters(self, pod: Pod, port: int | None, protocol: str = "TCP") -> list[dict[str, Any]]:
        cluster = PASSTHROUGH if port is None else inbound_cluster_name(port, protocol, self._targets.get(port))
        self.cluster_names.add(cluster)
        proxy = typed(
            "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            stat_prefix=f"inbound_{pod.ip}_{port or 'passthrough'}",
            cluster=cluster,
        )
        return [*self.authz.network_filters(pod), {"name": "envoy.filters.network.tcp_proxy", "typed_config": proxy}]

    # -- chains -----------------------------------------------------------------------------
    def add_chain(self, name: str, filters: list[dict[str, Any]], tls: dict[str, Any] | None = None) -> str:
        chain: dict[str, Any] = {"name": name, "filters": filters}
        if tls:
            chain["transport_socket"] = tls
        self.chains.append(chain)
        return name

    def detecting_chains(self, pod: Pod, port: int, mode: str) -> PortChains:
        """The chains of a port whose protocol is detected: the TCP ones, and HTTP ones beside them."""
        tcp = self.port_chains(pod, port, "TCP", mode)
        label = f"inbound|{pod.ip}|{port}|http"
        mtls_http = plain_http = ""
        if mode != DISABLE:
            tls = server_transport_socket(self.ctx, pod.namespace, pod.service_account, HTTP_ALPN)
            mtls_http = self.add_chain(f"{label}|mtls", self.http_filters(pod, port, DETECTED), tls)
        if mode != STRICT:
            plain_http = self.add_chain(f"{label}|plaintext", self.http_filters(pod, port, DETECTED))
        return PortChains(tcp.mtls, tcp.plain, tcp.foreign_tls, mtls_http, plain_http)

    def port_chains(self, pod: Pod, port: int | None, protocol: str, mode: str) -> PortChains:
        """The chains a (pod, port) needs in `mode`; port None is the pod's passthrough."""
        label = f"inbound|{pod.ip}|{port or 'passthrough'}"
        http = port is not None and is_http(protocol)

        def filters() -> list[dict[str, Any]]:
            return self.http_filters(pod, port, protocol) if http and port is not None else self.tcp_filters(pod, port)

        mtls = plain = foreign = ""
        if mode == STRICT:
            self.reject_chain()
        if mode != DISABLE:
            tls = server_transport_socket(self.ctx, pod.namespace, pod.service_account, HTTP_ALPN if http else TCP_ALPN)
            mtls = self.add_chain(f"{label}|mtls", filters(), tls)
        if mode != STRICT:
            plain = self.add_chain(f"{label}|plaintext", filters())
            foreign = plain
            if http:
                foreign = self.add_chain(f"{label}|tls-passthrough", self.tcp_filters(pod, port, protocol))
        return PortChains(mtls, plain, foreign)

    def reject_chain(self) -> None:
        """Closes the connection at once: plaintext to a STRICT port, like a sidecar that has no chain for it."""
        if self._rejecting:
            return
        self._rejecting = True
        proxy = typed(
            "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            stat_prefix="inbound_plaintext_rejected",
            cluster=REJECT_CLUSTER,
        )
        self.add_chain(REJECT_CHAIN, [{"name": "envoy.filters.network.tcp_proxy", "typed_config": proxy}])

    @staticmethod
    def transport_matcher(mode: str, chains: PortChains) -> dict[str, Any]:
        transport = _input("transport_protocol", "TransportProtocolInput")
        mtls = _select(chains.mtls)
        if chains.mtls_http:
            mtls = {"matcher": _by_alpn([(HTTP_SIGNAL, chains.mtls_http)], mtls)}
        plain = _select(chains.plain)
        if chains.plain_http:
            plain = plaintext_http(chains.plain_http, plain)
        if mode == STRICT:
            # Explicit: a nested matcher without a match would fall back to the pod's passthrough.
            return {
                "matcher_tree": {"input": transport, "exact_match_map": {"map": {"tls": mtls}}},
                "on_no_match": _select(REJECT_CHAIN),
            }
        elif mode == DISABLE:
            branches = {"tls": _select(chains.foreign_tls), "raw_buffer": plain}
        else:
            choices = [(ISTIO_SIGNAL, chains.mtls)]
            if chains.mtls_http:
                choices.insert(0, (HTTP_SIGNAL, chains.mtls_http))  # the first that matches wins
            branches = {"tls": {"matcher": _by_alpn(choices, _select(chains.foreign_tls))}, "raw_buffer": plain}
        return {"matcher_tree": {"input": transport, "exact_match_map": {"map": branches}}}

    def pod_matcher(self, pod: Pod) -> dict[str, Any]:
        resolved = self.peer.for_pod(pod)
        self.peer.note(pod, resolved)
        self.authz.note(pod)
        self.jwt.note(pod)
        ingress = sidecar_ingress(self.ctx, pod)
        if ingress is None:
            ports = declared_ports(self.ctx, pod)
            detected = set(detected_ports(self.ctx, pod))
            self._targets = {}
        else:
            ports = {number: p.protocol for number, p in ingress[1].items()}
            detected = {number for number, p in ingress[1].items() if p.detected}
            self._targets = {number: p.target for number, p in ingress[1].items()}
            self._note_ingress(pod, *ingress)
        for port in resolved.port_modes:
            ports.setdefault(port, "TCP")  # portLevelMtls applies to undeclared ports too, as plain TCP
        by_port = {}
        for port, protocol in ports.items():
            mode = resolved.for_port(port)
            if port in detected and not is_http(protocol):
                chains = self.detecting_chains(pod, port, mode)
                if chains.plain_http:
                    self.sniffed_ports.add(port)
            else:
                chains = self.port_chains(pod, port, protocol, mode)
            by_port[str(port)] = {"matcher": self.transport_matcher(mode, chains)}
        passthrough = self.transport_matcher(resolved.mode, self.port_chains(pod, None, "TCP", resolved.mode))
        self.ctx.note(
            [pod],
            "inbound traffic to ports no Service declares",
            DIFFERENT,
            "forwarded as TCP with the pod's mTLS mode and TCP authorization rules; a sidecar sniffs HTTP",
        )
        if not by_port:
            return passthrough
        return {
            "matcher_tree": {
                "input": _input("destination_port", "DestinationPortInput"),
                "exact_match_map": {"map": by_port},
            },
            "on_no_match": {"matcher": passthrough},
        }

    def _note_ingress(self, pod: Pod, sidecar: IstioObject, ports: dict[int, IngressPort]) -> None:
        """The parity report's entries for the Sidecar ingress listeners of one pod."""
        feature = f"Sidecar/{sidecar.meta.key} ingress"
        self.ctx.note([pod], feature, KEPT, "its ports replace the Service ports of the pod, as in Istio")
        for number, port in sorted(ports.items()):
            where, endpoint = f"{feature} port {number}", port.endpoint
            if endpoint.startswith("unix://"):
                detail = "a socket inside the pod is out of the proxy's reach; sent to the pod IP, same port"
                self.ctx.note([pod], where, UNSUPPORTED, f"defaultEndpoint {endpoint}: {detail}")
            elif endpoint.startswith(("127.0.0.1:", "[::1]:")):
                detail = f"sent to the pod IP, port {port.target}: the application must accept there too"
                self.ctx.note([pod], where, DIFFERENT, f"defaultEndpoint {endpoint}: {detail}")
        for i, item in enumerate(sidecar.spec.get("ingress") or []):
            for field in ("bind", "tls", "connectionPool"):
                if item.get(field):
                    self.ctx.note([pod], f"{feature}[{i}].{field}", UNSUPPORTED, "not translated by dpumesh")
            if item.get("captureMode") == "NONE":
                detail = "NONE (a listener the application connects to) has no meaning off the pod"
                self.ctx.note([pod], f"{feature}[{i}].captureMode", UNSUPPORTED, detail)

    # -- assembly ---------------------------------------------------------------------------
    def listener(self) -> dict[str, Any]:
        pods = sorted(self.ctx.local_meshed_pods, key=lambda p: p.ip)
        by_ip = {pod.ip: {"matcher": self.pod_matcher(pod)} for pod in pods}
        # Only where plaintext HTTP is detected: a server-first protocol elsewhere is not held by the inspector.
        http_inspector = inspector_for_ports("http_inspector", "http_inspector.v3.HttpInspector", self.sniffed_ports)
        listener: dict[str, Any] = {
            "name": LISTENER_NAME,
            "address": {"socket_address": {"address": "0.0.0.0", "port_value": self.ctx.mesh.proxy.inbound_port}},
            "transparent": True,
            "listener_filters": [ORIGINAL_DST, TLS_INSPECTOR, *([http_inspector] if http_inspector else [])],
            # A server-first protocol sends nothing for the TLS inspector: go on as plaintext after the timeout.
            "continue_on_listener_filters_timeout": True,
            "traffic_direction": "INBOUND",
            "filter_chains": self.chains,
        }
        if by_ip:
            listener["filter_chain_matcher"] = {
                "matcher_tree": {
                    "input": _input("destination_ip", "DestinationIPInput"),
                    "exact_match_map": {"map": by_ip},
                }
            }
        return listener

    def clusters(self) -> list[dict[str, Any]]:
        names = sorted((n for n in self.cluster_names if n != PASSTHROUGH), key=lambda n: (int(n.split("|")[1]), n))
        if self.chains:
            names.append(PASSTHROUGH)
        clusters = [self.original_destination(name) for name in names]
        if any(c["name"] == REJECT_CHAIN for c in self.chains):
            clusters.append({"name": REJECT_CLUSTER, "type": "STATIC", "connect_timeout": "1s"})
        return clusters + self.jwt.clusters()

    def original_destination(self, name: str) -> dict[str, Any]:
        """Connect to the address the client dialled, marked so the dataplane sends it straight to the pod.

        HTTP reaches the application in its port's protocol, as from a sidecar, whatever the client proxy spoke:
        HTTP/2 for HTTP2/gRPC ports, HTTP/1.1 otherwise (TCP ports use the cluster through tcp_proxy only).
        """
        base, _, target = name.partition(TARGET_MARK)
        http2, detected = base.endswith(H2_SUFFIX), base.endswith(DETECTED_SUFFIX)
        protocol = {"http2_protocol_options": {}} if http2 else {"http_protocol_options": {}}
        if detected:  # what the client spoke: HTTP/1.1, or HTTP/2 (h2c)
            version = {"use_downstream_protocol_config": {"http_protocol_options": {}, "http2_protocol_options": {}}}
        else:
            version = {"explicit_http_config": protocol}
        options = typed("envoy.extensions.upstreams.http.v3.HttpProtocolOptions", **version)
        cluster = {
            "name": name,
            "type": "ORIGINAL_DST",
            "lb_policy": "CLUSTER_PROVIDED",
            "connect_timeout": "10s",
            "cleanup_interval": "60s",
            "upstream_bind_config": upstream_mark(self.ctx.mesh.proxy.bypass_mark),
            "circuit_breakers": {
                "thresholds": [
                    {"max_connections": MAX, "max_pending_requests": MAX, "max_requests": MAX, "max_retries": MAX}
                ]
            },
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": options},
        }
        if target:  # the original destination's address, the Sidecar ingress listener's port
            cluster["original_dst_lb_config"] = {"upstream_port_override": int(target)}
        if "~" in name:
            cluster["alt_stat_name"] = name.split("~", 1)[0]
        return cluster


def build_inbound(ctx: CompileContext) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The `inbound` listener and the clusters its chains use."""
    builder = InboundBuilder(ctx)
    listener = builder.listener()
    return listener, builder.clusters()


def validate_security(ctx: CompileContext) -> None:
    """Report every PeerAuthentication/AuthorizationPolicy/RequestAuthentication problem (node-independent)."""
    PeerAuthentications(ctx)
    AuthorizationPolicies(ctx)
    RequestAuthentications(ctx)
