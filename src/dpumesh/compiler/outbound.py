"""The outbound listener: one filter-chain tree per source class.

The listener's matcher picks the class by source pod IP, then the chain by
destination port and IP — the decisions a sidecar makes for its own pod,
made here per class of identical pods.
"""

from __future__ import annotations

from typing import Any

from dpumesh.compiler import tls
from dpumesh.compiler.clusters import BLACKHOLE, PASSTHROUGH, ClusterCatalog
from dpumesh.compiler.context import CompileContext, typed
from dpumesh.compiler.registry import Host, is_http
from dpumesh.compiler.routes import RouteBuilder, default_route
from dpumesh.compiler.views import SourceClass, virtual_service_for, visible_hosts

INPUT = "envoy.extensions.matching.common_inputs.network.v3."


def _action(chain: str) -> dict[str, Any]:
    return {"action": {"name": chain, "typed_config": typed("google.protobuf.StringValue", value=chain)}}


def _input(kind: str) -> dict[str, Any]:
    return {"name": kind, "typed_config": typed(INPUT + kind)}


def tcp_proxy_chain(name: str, stat: str, cluster: str) -> dict[str, Any]:
    return {
        "name": name,
        "filters": [
            {
                "name": "envoy.filters.network.tcp_proxy",
                "typed_config": typed(
                    "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", stat_prefix=stat, cluster=cluster
                ),
            }
        ],
    }


def domains_for(host: Host, port: int, client_ns: str) -> list[str]:
    """Every name a client in `client_ns` may use for the host, with and without the port."""
    names = [host.fqdn]
    if host.kind == "Service":
        base = f"{host.short_name}.{host.namespace}"
        names += [f"{base}.svc", base]
        if client_ns == host.namespace:
            names.append(host.short_name)
    names += host.vips
    return [d for name in names for d in (name, f"{name}:{port}")]


class OutboundBuilder:
    def __init__(self, ctx: CompileContext, catalog: ClusterCatalog):
        self.ctx = ctx
        self.catalog = catalog
        self.chains: list[dict[str, Any]] = []
        self._chain_names: set[str] = set()

    def _add_chain(self, chain: dict[str, Any]) -> None:
        if chain["name"] not in self._chain_names:
            self._chain_names.add(chain["name"])
            self.chains.append(chain)

    def passthrough_cluster(self, cls: SourceClass) -> str:
        return PASSTHROUGH if cls.outbound_policy == "ALLOW_ANY" else BLACKHOLE

    def build(self, classes: list[SourceClass]) -> dict[str, Any]:
        range_matchers = []
        for cls in classes:
            tree = self.class_tree(cls)
            range_matchers.append(
                {
                    "ranges": [{"address_prefix": ip, "prefix_len": 32} for ip in cls.ips],
                    "on_match": {"matcher": tree},
                }
            )
        fallback = tcp_proxy_chain("passthrough", "PassthroughCluster", PASSTHROUGH)
        self._add_chain(fallback)
        listener: dict[str, Any] = {
            "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
            "name": "outbound",
            "address": {"socket_address": {"address": "0.0.0.0", "port_value": self.ctx.mesh.proxy.outbound_port}},
            "transparent": True,
            # original_dst marks the TPROXYed destination as restored: ORIGINAL_DST clusters
            # (passthrough, resolution NONE) connect only to a restored destination.
            "listener_filters": [
                {
                    "name": "envoy.filters.listener.original_dst",
                    "typed_config": typed("envoy.extensions.filters.listener.original_dst.v3.OriginalDst"),
                },
                {
                    "name": "envoy.filters.listener.tls_inspector",
                    "typed_config": typed("envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"),
                },
            ],
            "filter_chains": self.chains,
        }
        matcher: dict[str, Any] = {"on_no_match": _action("passthrough")}
        if range_matchers:
            matcher["matcher_tree"] = {
                "input": _input("SourceIPInput"),
                "custom_match": {
                    "name": "source-class",
                    "typed_config": typed("xds.type.matcher.v3.IPMatcher", range_matchers=range_matchers),
                },
            }
        listener["filter_chain_matcher"] = matcher
        return listener

    def class_tree(self, cls: SourceClass) -> dict[str, Any]:
        first_chain = len(self.chains)
        tree = self._class_matcher(cls)
        # Every chain of the class may originate Istio mTLS: it names the source pod's certificate first.
        identity = tls.identity_filter(self.ctx, cls.pods)
        for chain in self.chains[first_chain:]:
            if not chain["name"].endswith("~passthrough"):
                chain["filters"].insert(0, identity)
        return tree

    def _class_matcher(self, cls: SourceClass) -> dict[str, Any]:
        hosts = visible_hosts(self.ctx, cls)
        by_port: dict[int, list[Host]] = {}
        for host in hosts:
            for port in host.ports:
                by_port.setdefault(port, []).append(host)
        default_chain = f"{cls.name}~passthrough"
        self._add_chain(tcp_proxy_chain(default_chain, self.passthrough_cluster(cls), self.passthrough_cluster(cls)))
        port_map = {}
        for port, port_hosts in sorted(by_port.items()):
            port_map[str(port)] = self.port_entry(cls, port, port_hosts, default_chain)
        tree: dict[str, Any] = {"on_no_match": _action(default_chain)}
        if port_map:
            tree["matcher_tree"] = {"input": _input("DestinationPortInput"), "exact_match_map": {"map": port_map}}
        return tree

    def port_entry(self, cls: SourceClass, port: int, hosts: list[Host], default_chain: str) -> dict[str, Any]:
        """Destination IP first (VIPs, headless pod IPs), then TLS SNI, then the port's HTTP chain."""
        http_hosts = [h for h in hosts if is_http(h.ports[port].protocol)]
        other = [h for h in hosts if not is_http(h.ports[port].protocol)]
        fallback = _action(self.http_chain(cls, port, http_hosts)) if http_hosts else _action(default_chain)
        ip_map: dict[str, Any] = {}
        sni_map: dict[str, Any] = {}
        for host in other:
            addresses = [v for v in host.vips if "/" not in v]
            if not addresses and host.resolution == "NONE":
                addresses = sorted({e.address for e in host.ports[port].endpoints})  # headless: per pod IP
            if addresses:
                chain = self.tcp_chain(cls, port, host)
                for address in addresses:
                    ip_map.setdefault(address, _action(chain))
            elif host.ports[port].protocol == "TLS":
                sni_map[host.fqdn] = _action(self.tcp_chain(cls, port, host))
        for sni, chain in self.tls_routes(cls, port, other).items():
            sni_map[sni] = _action(chain)
        if sni_map:
            fallback = {
                "matcher": {
                    "matcher_tree": {"input": _input("ServerNameInput"), "exact_match_map": {"map": sni_map}},
                    "on_no_match": fallback,
                }
            }
        if not ip_map:
            return fallback
        return {
            "matcher": {
                "matcher_tree": {"input": _input("DestinationIPInput"), "exact_match_map": {"map": ip_map}},
                "on_no_match": fallback,
            }
        }

    def tls_routes(self, cls: SourceClass, port: int, hosts: list[Host]) -> dict[str, str]:
        """VirtualService `tls` routes: SNI → chain, for TLS hosts on this port."""
        out: dict[str, str] = {}
        for host in hosts:
            if host.ports[port].protocol != "TLS":
                continue
            vs = virtual_service_for(self.ctx, cls.namespace, host)
            for ri, route in enumerate((vs.spec.get("tls") or []) if vs else []):
                builder = RouteBuilder(self.ctx.diag, vs)
                for mi, match in enumerate((route or {}).get("match") or []):
                    if not self._l4_match_applies(cls, vs, f"tls{ri}", mi, match, port):
                        continue
                    dests = builder.destinations(f"spec.tls[{ri}].route", route)
                    if not dests:
                        continue
                    name = f"{cls.name}~tls~{vs.meta.key}~{ri}_{port}"
                    weighted = [
                        {"name": self.catalog.ref(cls, d["destination"], port, vs), "weight": d["weight"]}
                        for d in dests
                        if d["weight"]
                    ]
                    if name not in self._chain_names:
                        self._add_chain(self._weighted_tcp_chain(name, f"outbound|{port}||{host.fqdn}", weighted))
                    for sni in match.get("sniHosts") or []:
                        out.setdefault(self.ctx.registry.resolve(sni, vs.meta.namespace), name)
                    self.ctx.note(cls.pods, f"VirtualService/{vs.meta.key} tls[{ri}]", "kept")
        return out

    # -- TCP / TLS ------------------------------------------------------------------------
    def tcp_chain(self, cls: SourceClass, port: int, host: Host) -> str:
        name = f"{cls.name}~{host.vips[0] if host.vips else host.fqdn}_{port}"
        vs = virtual_service_for(self.ctx, cls.namespace, host)
        cluster = self.catalog.cluster_for(cls, host, port)
        routes = (vs.spec.get("tcp") or []) if vs else []
        for ri, route in enumerate(routes):
            matches = (route or {}).get("match") or [{}]
            if any(self._l4_match_applies(cls, vs, f"tcp{ri}", mi, m, port) for mi, m in enumerate(matches)):
                dests = RouteBuilder(self.ctx.diag, vs).destinations(f"spec.tcp[{ri}].route", route)
                if not dests:
                    break
                if len(dests) == 1:
                    cluster = self.catalog.ref(cls, dests[0]["destination"], port, vs)
                    self.ctx.note(cls.pods, f"VirtualService/{vs.meta.key} tcp[{ri}]", "kept")
                else:
                    weighted = [
                        {"name": self.catalog.ref(cls, d["destination"], port, vs), "weight": d["weight"]}
                        for d in dests
                        if d["weight"]
                    ]
                    self._add_chain(self._weighted_tcp_chain(name, f"outbound|{port}||{host.fqdn}", weighted))
                    self.ctx.note(cls.pods, f"VirtualService/{vs.meta.key} tcp[{ri}] weights", "kept")
                    return name
                break
        self._add_chain(tcp_proxy_chain(name, f"outbound|{port}||{host.fqdn}", cluster))
        return name

    def _weighted_tcp_chain(self, name: str, stat: str, weighted: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "name": name,
            "filters": [
                {
                    "name": "envoy.filters.network.tcp_proxy",
                    "typed_config": typed(
                        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                        stat_prefix=stat,
                        weighted_clusters={"clusters": weighted},
                    ),
                }
            ],
        }

    def _l4_match_applies(self, cls, vs, section: str, mi: int, match: dict[str, Any], port: int) -> bool:
        if not isinstance(match, dict):
            return False
        if "port" in match and match["port"] != port:
            return False
        if "sourceLabels" in match and f"{vs.meta.key}/{section}/{mi}" not in cls.source_matches:
            return False
        return not ("sourceNamespace" in match and match["sourceNamespace"] != cls.namespace)

    # -- HTTP -----------------------------------------------------------------------------
    def http_chain(self, cls: SourceClass, port: int, hosts: list[Host]) -> str:
        name = f"{cls.name}~0.0.0.0_{port}"
        vhosts = []
        seen_domains: set[str] = set()
        for host in hosts:
            domains = [d for d in domains_for(host, port, cls.namespace) if d not in seen_domains]
            seen_domains.update(domains)
            vhosts.append(
                {"name": f"{host.fqdn}:{port}", "domains": domains, "routes": self.host_routes(cls, port, host)}
            )
        if cls.outbound_policy == "ALLOW_ANY":
            fallback = {"name": "allow_any", "domains": ["*"], "routes": [default_route(PASSTHROUGH)]}
            fallback["routes"][0]["name"] = "allow_any"
            del fallback["routes"][0]["route"]["retry_policy"]
        else:
            fallback = {
                "name": "block_all",
                "domains": ["*"],
                "routes": [{"name": "block_all", "match": {"prefix": "/"}, "direct_response": {"status": 502}}],
            }
        vhosts.append(fallback)
        for vh in vhosts:
            for route in vh["routes"]:
                self._add_hash_policy(route)
        hcm = typed(
            "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            stat_prefix=f"outbound_0.0.0.0_{port}",
            route_config={"name": f"{port}", "virtual_hosts": vhosts, "validate_clusters": False},
            http_filters=[
                {
                    "name": "envoy.filters.http.fault",
                    "typed_config": typed("envoy.extensions.filters.http.fault.v3.HTTPFault"),
                },
                {
                    "name": "envoy.filters.http.cors",
                    "typed_config": typed("envoy.extensions.filters.http.cors.v3.Cors"),
                },
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": typed("envoy.extensions.filters.http.router.v3.Router"),
                },
            ],
            use_remote_address=False,
            normalize_path=True,
            request_id_extension={
                "typed_config": typed(
                    "envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig", use_request_id_for_trace_sampling=True
                )
            },
        )
        self._add_chain(
            {"name": name, "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        )
        return name

    def _add_hash_policy(self, route: dict[str, Any]) -> None:
        action = route.get("route") or {}
        cluster = action.get("cluster")
        if cluster is None and action.get("weighted_clusters"):
            cluster = action["weighted_clusters"]["clusters"][0]["name"]
        alt = cluster.split("~", 1)[0] if cluster else None
        if alt in self.catalog.hash_policies:
            action["hash_policy"] = self.catalog.hash_policies[alt]

    def host_routes(self, cls: SourceClass, port: int, host: Host) -> list[dict[str, Any]]:
        vs = virtual_service_for(self.ctx, cls.namespace, host)
        if vs is None or not vs.spec.get("http"):
            return [default_route(self.catalog.cluster_for(cls, host, port))]
        builder = RouteBuilder(self.ctx.diag, vs)

        def cluster_of(dest: dict[str, Any], listener_port: int) -> str:
            return self.catalog.ref(cls, dest, listener_port, vs)

        def applies(ri: int):
            def check(mi: int, match: dict[str, Any]) -> bool:
                if "port" in match and match["port"] != port:
                    return False
                if "sourceLabels" in match and f"{vs.meta.key}/{ri}/{mi}" not in cls.source_matches:
                    return False
                if "sourceNamespace" in match and match["sourceNamespace"] != cls.namespace:
                    return False
                gateways = match.get("gateways")
                return not (gateways and "mesh" not in gateways)

            return check

        routes = []
        for ri, route in enumerate(vs.spec.get("http") or []):
            built = builder.http_route(ri, route, port, cluster_of, applies(ri))
            routes.extend(built)
            if built:
                for feature in _route_features(route):
                    self.ctx.note(cls.pods, f"VirtualService/{vs.meta.key} http[{ri}].{feature}", "kept")
        self.ctx.note(cls.pods, f"VirtualService/{vs.meta.key} -> {host.fqdn}", "kept")
        return routes


def _route_features(route: Any) -> list[str]:
    if not isinstance(route, dict):
        return []
    return sorted(k for k in route if k not in ("name",))
