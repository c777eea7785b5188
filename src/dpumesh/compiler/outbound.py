"""The outbound listener, shared by every source class of the node.

A sidecar decides per pod what a host means (visibility, VirtualService,
DestinationRule, sourceLabels). Here one listener serves every class: a listener
filter stores the source pod's class and certificate in the connection's filter
state, chains and route tables are shared, and only where classes really differ
does the config split them — by class in the chain matcher (TCP), or by a
`filter_state` condition on the routes (HTTP). Most hosts look the same to every
class, so the config grows with classes + hosts, not classes times hosts.

Only the listener filter knows pod IPs (`listener_head`); the chains and the chain
matcher (`OutboundBuilder.body`) name classes alone, so nodes whose pods form the same
classes share them. The route and chain of one host for one `View` are built once per
state and reused by every node (`ctx.memo`).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson

from dpumesh.compiler import tls
from dpumesh.compiler.clusters import BLACKHOLE, PASSTHROUGH, ClusterCatalog
from dpumesh.compiler.context import CompileContext, typed
from dpumesh.compiler.registry import Host, is_http
from dpumesh.compiler.routes import RouteBuilder, default_route
from dpumesh.compiler.vhost_helper import BuiltVhost, Trace, VhostHelper
from dpumesh.compiler.views import (
    ANY_NAMESPACE,
    SourceClass,
    View,
    digest_of,
    egress_scope,
    host_dependence,
    not_imported,
    view_of,
    virtual_service_candidates,
    virtual_service_for,
)
from dpumesh.configfile import compact_json
from dpumesh.describe import describe_vhost

INPUT = "envoy.extensions.matching.common_inputs.network.v3."
CLASS_KEY = "dpumesh.source_class"  # filter state: the source pod's class, read by gated routes
CATCH_ALL = {"prefix": "/"}


@functools.lru_cache(maxsize=65536)
def _action(chain: str) -> dict[str, Any]:
    """The on_match selecting a chain (one shared object per name: `by_class` groups by identity)."""
    return {"action": {"name": chain, "typed_config": typed("google.protobuf.StringValue", value=chain)}}


def _input(kind: str) -> dict[str, Any]:
    return {"name": kind, "typed_config": typed(INPUT + kind)}


# What the HTTP inspector detected: HTTP/1.x or h2c (prior knowledge), the protocols Istio routes as HTTP.
DETECTED_HTTP = ("'http/1.0'", "'http/1.1'", "'h2c'")


def plaintext_http(http_chain: str, otherwise: dict[str, Any]) -> dict[str, Any]:
    """For a plaintext connection: the HTTP chain when the HTTP inspector found HTTP, `otherwise` if not."""
    return {
        "matcher": {
            "matcher_tree": {
                "input": _input("ApplicationProtocolInput"),
                "exact_match_map": {"map": dict.fromkeys(DETECTED_HTTP, _action(http_chain))},
            },
            "on_no_match": otherwise,
        }
    }


def http_detected(http_chain: str, otherwise: dict[str, Any]) -> dict[str, Any]:
    """The HTTP chain for plaintext HTTP, `otherwise` for TLS or any other protocol."""
    return {
        "matcher": {
            "matcher_tree": {"input": _input("TransportProtocolInput"), "exact_match_map": {"map": {"tls": otherwise}}},
            "on_no_match": plaintext_http(http_chain, otherwise),
        }
    }


# The chain matcher's view of the class the listener filter stored (listener filters run before it).
CLASS_INPUT = {"name": "FilterStateInput", "typed_config": typed(INPUT + "FilterStateInput", key=CLASS_KEY)}


def listener_head(
    ctx: CompileContext, classes: list[SourceClass], sni_ports: set[int], sniffed_ports: set[int]
) -> dict[str, Any]:
    """The outbound listener without its chains: what only this node's pods decide (their IPs).

    The inspectors wait for the client's first bytes, so each runs only on the destination ports that need it
    (TLS: ports with hosts matched by SNI; HTTP: ports whose protocol is detected). A server-first protocol
    (MySQL, SMTP) on any other port is forwarded at once.
    """
    inspectors = [
        inspector_for_ports("tls_inspector", "tls_inspector.v3.TlsInspector", sni_ports),
        inspector_for_ports("http_inspector", "http_inspector.v3.HttpInspector", sniffed_ports),
    ]
    return {
        "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
        "name": "outbound",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": ctx.mesh.proxy.outbound_port}},
        "transparent": True,
        "metadata": {"filter_metadata": {"dpumesh": {"source_classes": {c.name: c.ips for c in classes}}}},
        # original_dst marks the TPROXYed destination as restored: ORIGINAL_DST clusters
        # (passthrough, resolution NONE) connect only to a restored destination.
        "listener_filters": [
            {
                "name": "envoy.filters.listener.original_dst",
                "typed_config": typed("envoy.extensions.filters.listener.original_dst.v3.OriginalDst"),
            },
            *[i for i in inspectors if i],
            tls.source_filter(
                ctx,
                CLASS_KEY,
                {p.ip: c.name for c in classes for p in c.pods},
                [p for c in classes for p in c.pods],
            ),
        ],
        # A client that sends nothing on an inspected port is forwarded as TCP after the inspectors' timeout.
        "continue_on_listener_filters_timeout": True,
    }


def inspector_for_ports(name: str, config: str, ports: set[int]) -> dict[str, Any] | None:
    """A listener filter that runs only for connections to `ports` (none: no filter)."""
    if not ports:
        return None
    runs: list[list[int]] = []
    for port in sorted(ports):
        if runs and runs[-1][1] == port:
            runs[-1][1] = port + 1
        else:
            runs.append([port, port + 1])
    ranges = [{"destination_port_range": {"start": start, "end": end}} for start, end in runs]
    enabled = ranges[0] if len(ranges) == 1 else {"or_match": {"rules": ranges}}
    return {
        "name": f"envoy.filters.listener.{name}",
        "typed_config": typed(f"envoy.extensions.filters.listener.{config}"),
        "filter_disabled": {"not_match": enabled},
    }


def tcp_proxy_chain(name: str, stat: str, cluster: str) -> dict[str, Any]:
    return _tcp_proxy(name, stat_prefix=stat, cluster=cluster)


def _tcp_proxy(name: str, **config: Any) -> dict[str, Any]:
    proxy = typed("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", **config)
    return {"name": name, "filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": proxy}]}


def host_domains(host: Host, port: int) -> list[str]:
    """The names every client namespace may use for the host, with and without the port."""
    names = [host.fqdn]
    if host.kind == "Service":
        base = f"{host.short_name}.{host.namespace}"
        names += [f"{base}.svc", base]
    names += host.vips
    return [d for name in names for d in (name, f"{name}:{port}")]


def short_domains(host: Host, port: int) -> list[str]:
    """The names only clients in the host's own namespace may use."""
    return [host.short_name, f"{host.short_name}:{port}"] if host.kind == "Service" else []


def _encoded_vhost(vhost: dict[str, Any]) -> tuple[bytes, str]:
    """A virtual host's JSON and its describe lines, joined: what the listener and `describe.txt` take of it."""
    return compact_json(vhost), "\n".join(describe_vhost(vhost))


def view_suffix(view: View) -> str:
    if view.namespace == ANY_NAMESPACE and not view.source_matches and not view.not_imported:
        return ""
    digest = f"~{digest_of(sorted(view.source_matches))}" if view.source_matches else ""
    if view.not_imported:
        digest += f"~not={digest_of(sorted(view.not_imported))}"
    return f"~{view.namespace or '*'}{digest}"


class _HttpSplit(NamedTuple):
    """One destination port's hosts, by what the port's HTTP chain does with them."""

    chain_hosts: list  # (host, classes that see it) of the HTTP chain: HTTP hosts, then those detected
    other: list  # the hosts that are not HTTP (the detected ones among them)
    sniffed: bool  # some host's protocol is detected on this port
    http_classes: set[str]  # classes that see an HTTP host
    chain_classes: set[str]  # classes that see a host of the chain


class Built(NamedTuple):
    """One host's routes (or chain) for one View, with the clusters it names and its parity notes."""

    value: Any
    clusters: tuple[str, ...]
    notes: tuple[tuple[str, str], ...]


class _Recorder:
    """Builds for a View while recording every cluster named and every parity note."""

    def __init__(self, catalog: ClusterCatalog, view: View):
        self.catalog, self.view = catalog, view
        self.clusters: list[str] = []
        self.notes: list[tuple[str, str]] = []

    def ref(self, dest: dict[str, Any], port: int, vs, http: bool = False) -> str:
        name = self.catalog.ref(self.view, dest, port, vs, http)
        self.clusters.append(name)
        return name

    def cluster_for(self, host: Host, port: int, http: bool = False) -> str:
        name = self.catalog.cluster_for(self.view, host, port, http=http)
        self.clusters.append(name)
        return name

    def note(self, feature: str) -> None:
        self.notes.append((feature, "kept"))

    def built(self, value: Any) -> Built:
        return Built(value, tuple(dict.fromkeys(self.clusters)), tuple(dict.fromkeys(self.notes)))


@functools.lru_cache(maxsize=4096)
def _gate(names: tuple[str, ...]) -> dict[str, Any]:
    if len(names) == 1:
        return {"key": CLASS_KEY, "string_match": {"exact": names[0]}}
    return {"key": CLASS_KEY, "string_match": {"safe_regex": {"regex": "|".join(re.escape(n) for n in names)}}}


def _class_gate(classes: list[SourceClass]) -> dict[str, Any]:
    return _gate(tuple(c.name for c in classes))


def _gated(route: dict[str, Any], gate: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**route, "match": {**route["match"], "filter_state": gate, **extra}}


def _terminal(routes: list[dict[str, Any]]) -> bool:
    """Whether the last route catches every request (so no request falls through to later routes)."""
    return bool(routes) and routes[-1]["match"] == CATCH_ALL


class OutboundBuilder:
    def __init__(self, ctx: CompileContext, catalog: ClusterCatalog):
        self.ctx = ctx
        self.catalog = catalog
        self.chains: dict[str, dict[str, Any]] = {}
        self.used_clusters: dict[str, None] = {}
        self.classes: list[SourceClass] = []
        self._plain: list[SourceClass] = []
        self._scoped: list[SourceClass] = []
        self._scopes: list[tuple[str, frozenset[str]]] = []  # (class name, the hosts it sees) of scoped classes
        self._namespaces: set[str] = set()
        self.sniffed_ports: set[int] = set()  # ports where some host's protocol is detected: HTTP inspector
        self.sni_ports: set[int] = set()  # ports where some host is matched by SNI: TLS inspector
        self._seen: dict[tuple, list[SourceClass]] = {}
        self._per_list: dict[tuple, tuple[tuple, Any]] = {}
        self._helper: VhostHelper | None = None
        self._vhost_index = 0  # HTTP virtual hosts planned so far, in `body`'s order
        self._trace: list | None = None  # in the helper: what building the current virtual host used
        self.described_vhosts: dict[int, str] = {}  # id of an encoded virtual host → its describe lines, joined

    # -- the listener ---------------------------------------------------------------------
    def setup(self, classes: list[SourceClass]) -> None:
        self.classes = classes
        self._plain = [c for c in classes if not c.egress_scoped]
        self._scoped = [c for c in classes if c.egress_scoped]
        self._scopes = [(c.name, self._scope_of(c)) for c in self._scoped]
        self._namespaces = {c.namespace for c in classes}

    def body(self, classes: list[SourceClass], helper: VhostHelper | None = None) -> dict[str, Any]:
        """The listener's chains and chain matcher: the same for every node with these classes.

        `helper` builds HTTP virtual hosts alongside (`vhost_helper`); `_planned_vhost` takes those it built.
        """
        self.setup(classes)
        self._helper, self._vhost_index = helper, 0
        self._add_chain(tcp_proxy_chain("passthrough", "PassthroughCluster", PASSTHROUGH))
        self._add_chain(tcp_proxy_chain("blackhole", "BlackHoleCluster", BLACKHOLE))
        port_map = {str(port): self.port_entry(port, hosts) for port, hosts in self.hosts_by_port().items()}
        fallback = self.by_class({c.name: self.passthrough(c) for c in classes})
        matcher: dict[str, Any] = {"on_no_match": fallback}
        if port_map:
            matcher = {
                "matcher_tree": {"input": _input("DestinationPortInput"), "exact_match_map": {"map": port_map}},
                "on_no_match": fallback,
            }
        return {"filter_chains": list(self.chains.values()), "filter_chain_matcher": matcher}

    def for_helper(self, classes: list[SourceClass]) -> OutboundBuilder:
        """This builder, ready to build the virtual hosts of `classes` in a helper (`traced_vhost`)."""
        self.setup(classes)
        return self

    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def planned_vhosts(self) -> list[tuple[int, list[SourceClass], tuple]]:
        """Every HTTP virtual host `body` builds from a plan, in its order: (port, the chain's users, entry)."""
        planned = []
        for port, hosts in self.hosts_by_port().items():
            split = self._http_split(port, hosts)
            if split.chain_hosts:
                users, entries, _ = self.http_plan(port, split.chain_hosts, split.chain_classes)
                planned += [(port, users, entry) for entry in entries]
        return planned

    def encoded_cluster(self, name: str) -> tuple[bytes, str] | None:
        """A cluster built so far: its CDS JSON and describe line."""
        if name not in self.catalog.encoded:
            return None
        return self.catalog.encoded[name], self.catalog.described[name]

    def traced_vhost(self, planned: tuple[int, list[SourceClass], tuple]) -> BuiltVhost:
        """In the helper: one planned virtual host (`planned_vhosts`), encoded, with what building it did."""
        port, users, entry = planned
        diag = self.ctx.diag
        errors, warnings = len(diag.errors), len(diag.warnings)
        self._trace = []
        encoded, described = _encoded_vhost(self.host_vhost(port, *entry, users=users))
        trace = Trace(tuple(self._trace), tuple(diag.errors[errors:]), tuple(diag.warnings[warnings:]))
        self._trace = None
        return BuiltVhost((port, entry[0].fqdn), encoded, described, trace)

    def _planned_vhost(self, port: int, users: list[SourceClass], entry: tuple) -> orjson.Fragment:
        """The virtual host of one planned entry, encoded: the helper's, replayed, or built here.

        Encoded and described as soon as built, as the helper does: this work then overlaps the helper's.
        """
        index = self._vhost_index
        self._vhost_index += 1
        done = self._helper.get(index, (port, entry[0].fqdn)) if self._helper else None
        if done is None:
            encoded, described = _encoded_vhost(self.host_vhost(port, *entry, users=users))
        else:
            self._replay(done.trace)
            encoded, described = done.json, done.described
        fragment = orjson.Fragment(encoded)
        self.described_vhosts[id(fragment)] = described
        return fragment

    def _replay(self, trace: Trace) -> None:
        """What building a virtual host in the helper did, done here: clusters used, notes, problems."""
        used, encoded = self.used_clusters, self.catalog.encoded
        for clusters, group, notes in trace.uses:
            for name in clusters:
                used[name] = None  # a name used before keeps its place
                if name not in encoded and (found := self._helper.cluster(name)):
                    encoded[name], self.catalog.described[name] = found
            for feature, status in notes:
                self.ctx.note_classes(group, feature, status)
        if trace.errors or trace.warnings:
            self.ctx.diag.errors += trace.errors
            self.ctx.diag.warnings += trace.warnings

    def _add_chain(self, chain: dict[str, Any]) -> str:
        self.chains.setdefault(chain["name"], chain)
        return chain["name"]

    def _use(self, built: Built, classes: list[SourceClass]) -> Any:
        self.used_clusters.update(dict.fromkeys(built.clusters))
        group = None
        if built.notes:
            group = self.per_list("names", (classes,), lambda: frozenset(c.name for c in classes))
            for feature, status in built.notes:
                self.ctx.note_classes(group, feature, status)
        if self._trace is not None:
            self._trace.append((built.clusters, group, built.notes))
        return built.value

    def passthrough(self, cls: SourceClass) -> dict[str, Any]:
        return _action("passthrough" if cls.outbound_policy == "ALLOW_ANY" else "blackhole")

    def by_class(self, per_class: dict[str, dict[str, Any]], others: dict[str, Any] | None = None) -> dict[str, Any]:
        """One on_match for every class, split by the connection's class only where the classes differ.

        `others` is what connections of classes outside `per_class` get; when None, the largest group takes them.
        """
        groups: dict[Any, tuple[dict[str, Any], list[str]]] = {}
        for name, on_match in per_class.items():
            key = id(on_match) if "action" in on_match else json.dumps(on_match, sort_keys=True)
            groups.setdefault(key, (on_match, []))[1].append(name)
        ordered = sorted(groups.values(), key=lambda g: (-len(g[1]), g[1][0]))
        if others is None:
            if not ordered:
                return _action("passthrough")
            others = ordered.pop(0)[0]
        ordered = [g for g in ordered if g[0] is not others and g[0] != others]
        if not ordered:
            return others
        by_name = sorted((name, on_match) for on_match, names in ordered for name in names)
        return {
            "matcher": {
                "matcher_tree": {"input": CLASS_INPUT, "exact_match_map": {"map": dict(by_name)}},
                "on_no_match": others,
            }
        }

    # -- which classes see which hosts ------------------------------------------------------
    def hosts_by_port(self) -> dict[int, list[tuple[Host, list[SourceClass]]]]:
        key = ("hosts-by-port",)
        if key not in self.ctx.memo:
            by_port: dict[int, list[Host]] = {}
            for host in sorted(self.ctx.registry.hosts.values(), key=lambda h: h.fqdn):
                for port in host.ports:
                    by_port.setdefault(port, []).append(host)
            self.ctx.memo[key] = dict(sorted(by_port.items()))
        out: dict[int, list[tuple[Host, list[SourceClass]]]] = {}
        for port, hosts in self.ctx.memo[key].items():
            seen = [(h, s) for h in hosts if (s := self.seen_by(h))]
            if seen:
                out[port] = seen
        return out

    def seen_by(self, host: Host) -> list[SourceClass]:
        """The classes that see the host; hosts seen by the same classes share one list object."""
        exported = "*" if host.export_to in ([], ["*"]) else (host.namespace, tuple(host.export_to))
        scoped = tuple(name for name, scope in self._scopes if host.fqdn in scope)
        key = (exported, scoped)
        if key not in self._seen:
            plain = [c for c in self._plain if exported == "*" or host.visible_to(c.namespace)]
            self._seen[key] = sorted(plain + [c for c in self._scoped if c.name in scoped], key=lambda c: c.name)
        return self._seen[key]

    def _scope_of(self, cls: SourceClass) -> frozenset[str]:
        """The hosts a Sidecar's egress lets the class see (exportTo aside), once per state."""
        key = ("egress-scope", cls.sidecar.meta.key, cls.namespace)
        if key not in self.ctx.memo:
            allowed = egress_scope(self.ctx, cls.sidecar)
            hosts = self.ctx.registry.hosts
            self.ctx.memo[key] = frozenset(f for f in allowed if hosts[f].visible_to(cls.namespace))
        return self.ctx.memo[key]

    def per_list(self, kind: str, lists: tuple, compute: Callable[[], Any]) -> Any:
        """`compute()` once per identity of `lists` (the class lists this build reuses for many hosts).

        The entry keeps the lists alive, so their ids cannot be reused by other lists meanwhile.
        """
        key = (kind, *map(id, lists))
        found = self._per_list.get(key)
        if found is None:
            found = self._per_list[key] = (lists, compute())
        return found[1]

    def gate(self, classes: list[SourceClass]) -> dict[str, Any]:
        """The filter_state condition selecting `classes`."""
        return self.per_list("gate", (classes,), lambda: _class_gate(classes))

    def views(self, host: Host, classes: list[SourceClass]) -> dict[View, list[SourceClass]]:
        dep = host_dependence(self.ctx, host)
        if (
            dep.namespaces is not None
            and not dep.source_ids
            and dep.namespaces.isdisjoint(self._namespaces)
            and self._all_import(host, classes)
        ):
            return {View(ANY_NAMESPACE): classes}  # the common case: no class here sees the host its own way
        groups: dict[View, list[SourceClass]] = {}
        for cls in classes:
            groups.setdefault(view_of(self.ctx, cls, host), []).append(cls)
        return groups

    def _all_import(self, host: Host, classes: list[SourceClass]) -> bool:
        """Whether the Sidecar egress of each of `classes` (those that see the host) imports every
        VirtualService of the host."""
        if not self._scoped or not virtual_service_candidates(self.ctx, host):
            return True
        sidecars = self.per_list(
            "sidecars",
            (classes,),
            lambda: [*{c.sidecar.meta.key: c.sidecar for c in classes if c.egress_scoped}.values()],
        )
        return not any(not_imported(self.ctx, sidecar, host) for sidecar in sidecars)

    # -- one destination port -------------------------------------------------------------
    def port_entry(self, port: int, hosts: list[tuple[Host, list[SourceClass]]]) -> dict[str, Any]:
        """Destination IP first (VIPs, headless pod IPs), then TLS SNI, then the port's HTTP chain.

        A host whose protocol is detected is in both: its addresses lead to the HTTP chain when the connection
        speaks HTTP/1.x or h2c, to its TCP chain otherwise.
        """
        split = self._http_split(port, hosts)
        other, http_classes = split.other, split.http_classes
        http_chain = self.http_chain(port, split.chain_hosts, split.chain_classes) if split.chain_hosts else ""
        sni_hosts = [(h, s) for h, s in other if h.ports[port].protocol == "TLS"]
        if split.sniffed:
            self.sniffed_ports.add(port)
        if sni_hosts:
            self.sni_ports.add(port)
        rest: dict[str, dict[str, Any]] = {}
        for cls in self.classes:
            fallback = _action(http_chain) if cls.name in http_classes else self.passthrough(cls)
            sni_map = self.sni_map(cls, port, sni_hosts) if sni_hosts else {}
            rest[cls.name] = fallback
            if sni_map:
                rest[cls.name] = {
                    "matcher": {
                        "matcher_tree": {"input": _input("ServerNameInput"), "exact_match_map": {"map": sni_map}},
                        "on_no_match": fallback,
                    }
                }
        port_rest = self.by_class(rest)
        ip_map: dict[str, Any] = {}
        for host, seen in other:
            addresses = [v for v in host.vips if "/" not in v]
            if not addresses and host.resolution == "NONE":
                addresses = sorted({e.address for e in host.ports[port].endpoints})  # headless: per pod IP
            if not addresses:
                continue
            views = self.views(host, seen)

            def tcp_or_http(chain: str, host: Host = host) -> dict[str, Any]:
                return http_detected(http_chain, _action(chain)) if host.sniffs(port) else _action(chain)

            if len(views) == 1 and len(seen) == len(self.classes):
                [(view, group)] = views.items()
                on_match = tcp_or_http(self.tcp_chain(view, port, host, group))
                for address in addresses:
                    ip_map.setdefault(address, on_match)
                continue
            per_class = {}
            for view, group in views.items():
                chain = tcp_or_http(self.tcp_chain(view, port, host, group))
                per_class.update((cls.name, chain) for cls in group)
            if len(seen) < len(self.classes):
                per_class.update({c.name: rest[c.name] for c in self.classes if c.name not in per_class})
            on_match = self.by_class(per_class)
            for address in addresses:
                ip_map.setdefault(address, on_match)
        if not ip_map:
            return port_rest
        return {
            "matcher": {
                "matcher_tree": {"input": _input("DestinationIPInput"), "exact_match_map": {"map": ip_map}},
                "on_no_match": port_rest,
            }
        }

    def _http_split(self, port: int, hosts: list[tuple[Host, list[SourceClass]]]) -> _HttpSplit:
        http_hosts = [(h, s) for h, s in hosts if is_http(h.ports[port].protocol)]
        other = [(h, s) for h, s in hosts if not is_http(h.ports[port].protocol)]
        sniffed = [(h, s) for h, s in other if h.sniffs(port)]
        http_classes = {c.name for _, seen in http_hosts for c in seen}
        chain_classes = http_classes | {c.name for _, seen in sniffed for c in seen}
        return _HttpSplit(http_hosts + sniffed, other, bool(sniffed), http_classes, chain_classes)

    # -- TCP / TLS ------------------------------------------------------------------------
    def sni_map(self, cls: SourceClass, port: int, hosts: list[tuple[Host, list[SourceClass]]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for host, seen in hosts:
            if all(c.name != cls.name for c in seen):
                continue
            view = view_of(self.ctx, cls, host)
            if not [v for v in host.vips if "/" not in v]:
                out.setdefault(host.fqdn, _action(self.tcp_chain(view, port, host, [cls])))
            for sni, chain in self._use(self._tls_routes(view, port, host), [cls]):
                self._add_chain(chain)
                out.setdefault(sni, _action(chain["name"]))
        return out

    def _tls_routes(self, view: View, port: int, host: Host) -> Built:
        """VirtualService `tls` routes of one TLS host: (SNI, chain) pairs."""
        key = ("tls-routes", port, host.fqdn, view)
        if key in self.ctx.memo:
            return self.ctx.memo[key]
        rec = _Recorder(self.catalog, view)
        out: list[tuple[str, dict[str, Any]]] = []
        vs = virtual_service_for(self.ctx, view, host)
        for ri, route in enumerate((vs.spec.get("tls") or []) if vs else []):
            for mi, match in enumerate((route or {}).get("match") or []):
                if not _l4_match_applies(view, vs, f"tls{ri}", mi, match, port):
                    continue
                dests = RouteBuilder(self.ctx.diag, vs).destinations(f"spec.tls[{ri}].route", route)
                if not dests:
                    continue
                weighted = [{"name": rec.ref(d["destination"], port, vs), "weight": d["weight"]} for d in dests]
                name = f"tls~{vs.meta.key}~{ri}_{port}{view_suffix(view)}"
                chain = _tcp_proxy(
                    name,
                    stat_prefix=f"outbound|{port}||{host.fqdn}",
                    weighted_clusters={"clusters": [w for w in weighted if w["weight"]]},
                )
                for sni in match.get("sniHosts") or []:
                    out.append((self.ctx.registry.resolve(sni, vs.meta.namespace), chain))
                rec.note(f"VirtualService/{vs.meta.key} tls[{ri}]")
        self.ctx.memo[key] = built = rec.built(out)
        return built

    def tcp_chain(self, view: View, port: int, host: Host, classes: list[SourceClass]) -> str:
        key = ("tcp-chain", port, host.fqdn, view)
        if key not in self.ctx.memo:
            self.ctx.memo[key] = self._build_tcp_chain(view, port, host)
        return self._add_chain(self._use(self.ctx.memo[key], classes))

    def _build_tcp_chain(self, view: View, port: int, host: Host) -> Built:
        rec = _Recorder(self.catalog, view)
        name = f"{host.vips[0] if host.vips else host.fqdn}_{port}{view_suffix(view)}"
        stat = f"outbound|{port}||{host.fqdn}"
        vs = virtual_service_for(self.ctx, view, host)
        for ri, route in enumerate((vs.spec.get("tcp") or []) if vs else []):
            matches = (route or {}).get("match") or [{}]
            if not any(_l4_match_applies(view, vs, f"tcp{ri}", mi, m, port) for mi, m in enumerate(matches)):
                continue
            dests = RouteBuilder(self.ctx.diag, vs).destinations(f"spec.tcp[{ri}].route", route)
            if not dests:
                break
            if len(dests) == 1:
                rec.note(f"VirtualService/{vs.meta.key} tcp[{ri}]")
                return rec.built(tcp_proxy_chain(name, stat, rec.ref(dests[0]["destination"], port, vs)))
            weighted = [{"name": rec.ref(d["destination"], port, vs), "weight": d["weight"]} for d in dests]
            rec.note(f"VirtualService/{vs.meta.key} tcp[{ri}] weights")
            return rec.built(
                _tcp_proxy(name, stat_prefix=stat, weighted_clusters={"clusters": [w for w in weighted if w["weight"]]})
            )
        return rec.built(tcp_proxy_chain(name, stat, rec.cluster_for(host, port)))

    # -- HTTP -----------------------------------------------------------------------------
    def http_plan(self, port: int, hosts: list[tuple[Host, list[SourceClass]]], http_classes: set[str]) -> tuple:
        """(the chain's users, per host (host, seen, domains, short) where it keeps a name, the contested names)."""
        users = [c for c in self.classes if c.name in http_classes]
        owner: dict[str, tuple[Host, str]] = {}  # domain → its first claim: (host, the only namespace allowed or "")
        contested: dict[str, list[tuple[Host, str]]] = {}  # domains claimed more than once → every claim, in order
        names = [(host_domains(host, port), short_domains(host, port)) for host, _ in hosts]
        for (host, _), (full, short) in zip(hosts, names, strict=True):
            for domains, claim in ((full, (host, "")), (short, (host, host.namespace))):
                for domain in domains:
                    if domain in owner:
                        contested.setdefault(domain, [owner[domain]]).append(claim)
                    else:
                        owner[domain] = claim
        planned = []
        for (host, seen), (full, short) in zip(hosts, names, strict=True):
            if contested:
                full = [d for d in full if d not in contested]
                short = [d for d in short if d not in contested]
            if full or short:
                planned.append((host, seen, full, short))
        return users, planned, {d: contested[d] for d in sorted(contested)}

    def http_chain(self, port: int, hosts: list[tuple[Host, list[SourceClass]]], http_classes: set[str]) -> str:
        """One HTTP chain and route table for the port, shared by every class that has HTTP hosts on it."""
        users, planned, contested = self.http_plan(port, hosts, http_classes)
        vhosts = [self._planned_vhost(port, users, entry) for entry in planned]
        vhosts += self.contested_vhosts(port, contested, hosts, users)
        vhosts.append(self.unknown_host_vhost(users))
        name = f"0.0.0.0_{port}"
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
        return self._add_chain(
            {"name": name, "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        )

    def fallback_routes(self, classes: list[SourceClass], **extra: Any) -> list[dict[str, Any]]:
        """What classes that do not know a host get for it: Istio's allow_any or block_all, gated."""
        out = []
        for policy in ("ALLOW_ANY", "REGISTRY_ONLY"):
            group = self._policy_group(classes, policy)
            if group:
                out.append(_gated(_unknown_host_route(policy), self.gate(group), **extra))
        return out

    def _policy_group(self, classes: list[SourceClass], policy: str) -> list[SourceClass]:
        """The classes of `classes` with this outbound policy (`classes` itself when all have it)."""
        allow = policy == "ALLOW_ANY"
        group = self.per_list(
            policy, (classes,), lambda: [c for c in classes if (c.outbound_policy == "ALLOW_ANY") == allow]
        )
        return classes if len(group) == len(classes) else group

    def host_vhost(self, port, host, seen, domains, short, users) -> dict[str, Any]:
        hidden, strangers = self.outsiders(seen, users, host.namespace)
        routes = self.fallback_routes(hidden)
        if short:
            # The short name resolves only in the host's namespace; other classes treat it as an unknown host.
            authority = {
                "name": ":authority",
                "string_match": {"safe_regex": {"regex": "|".join(map(re.escape, short))}},
            }
            routes += self.fallback_routes(strangers, headers=[authority])
        per_view = [
            (self.http_routes(view, port, host, group), group) for view, group in self.views(host, seen).items()
        ]
        routes += self.assemble(per_view, ungated_last=True)
        return {"name": f"{host.fqdn}:{port}", "domains": domains + short, "routes": routes}

    def outsiders(self, seen, users, namespace: str) -> tuple[list[SourceClass], list[SourceClass]]:
        """(users that do not see the host, classes that see it from another namespace), one list per case."""

        def compute() -> tuple[list[SourceClass], list[SourceClass]]:
            names = {c.name for c in seen}
            return [c for c in users if c.name not in names], [c for c in seen if c.namespace != namespace]

        return self.per_list(f"outsiders:{namespace}", (seen, users), compute)

    def assemble(self, per_view: list[tuple[list[dict], list[SourceClass]]], ungated_last: bool) -> list[dict]:
        """Each group's routes gated by its classes; the largest group ungated last when that is safe."""
        per_view = sorted(per_view, key=lambda x: (-len(x[1]), x[1][0].name))
        last = None
        if ungated_last and all(_terminal(r) for r, _ in per_view[1:]):
            last = per_view.pop(0)
        routes = [_gated(r, self.gate(group)) for group_routes, group in per_view for r in group_routes]
        return routes + list(last[0]) if last else routes

    def contested_vhosts(self, port, contested, hosts, users) -> list[dict[str, Any]]:
        """Names several hosts claim (two namespaces' short names, a shared VIP): each class gets its first."""
        claimants = {host.fqdn for owners in contested.values() for host, _ in owners}
        seen_by = {h.fqdn: {c.name for c in s} for h, s in hosts if h.fqdn in claimants}
        by_signature: dict[tuple, tuple[list[str], dict]] = {}
        for domain, owners in contested.items():
            choice = {}
            for cls in users:
                for host, only_ns in owners:
                    if cls.name in seen_by[host.fqdn] and only_ns in ("", cls.namespace):
                        choice[cls.name] = host
                        break
            signature = tuple(sorted((name, host.fqdn) for name, host in choice.items()))
            by_signature.setdefault(signature, ([], choice))[0].append(domain)
        vhosts = []
        for domains, choice in by_signature.values():
            per_host: dict[str, list[SourceClass]] = {}
            for cls in users:
                if cls.name in choice:
                    per_host.setdefault(choice[cls.name].fqdn, []).append(cls)
            routes = self.fallback_routes([c for c in users if c.name not in choice])
            per_view = []
            for fqdn, group in per_host.items():
                host = self.ctx.registry.hosts[fqdn]
                per_view += [(self.http_routes(v, port, host, g), g) for v, g in self.views(host, group).items()]
            routes += self.assemble(per_view, ungated_last=False)
            vhosts.append({"name": f"{domains[0]}~shared", "domains": domains, "routes": routes})
        return vhosts

    def unknown_host_vhost(self, users: list[SourceClass]) -> dict[str, Any]:
        policies = {c.outbound_policy == "ALLOW_ANY" for c in users}
        if len(policies) == 1:
            policy = "ALLOW_ANY" if policies.pop() else "REGISTRY_ONLY"
            routes = [_unknown_host_route(policy)]
        else:
            routes = self.fallback_routes(users)
        return {
            "name": "allow_any" if routes[0]["name"] == "allow_any" else "block_all",
            "domains": ["*"],
            "routes": routes,
        }

    def http_routes(self, view: View, port: int, host: Host, classes: list[SourceClass]) -> list[dict[str, Any]]:
        key = ("http-routes", port, host.fqdn, view)
        if key not in self.ctx.memo:
            self.ctx.memo[key] = self._build_http_routes(view, port, host)
        return self._use(self.ctx.memo[key], classes)

    def _build_http_routes(self, view: View, port: int, host: Host) -> Built:
        rec = _Recorder(self.catalog, view)
        vs = virtual_service_for(self.ctx, view, host)
        if vs is None or not vs.spec.get("http"):
            routes = [default_route(rec.cluster_for(host, port, http=True))]
        else:
            builder = RouteBuilder(self.ctx.diag, vs)

            def applies(ri: int):
                def check(mi: int, match: dict[str, Any]) -> bool:
                    if "port" in match and match["port"] != port:
                        return False
                    if "sourceLabels" in match and f"{vs.meta.key}/{ri}/{mi}" not in view.source_matches:
                        return False
                    if "sourceNamespace" in match and match["sourceNamespace"] != view.namespace:
                        return False
                    gateways = match.get("gateways")
                    return not (gateways and "mesh" not in gateways)

                return check

            routes = []
            for ri, route in enumerate(vs.spec.get("http") or []):
                built = builder.http_route(ri, route, port, lambda d, p: rec.ref(d, p, vs, http=True), applies(ri))
                routes.extend(built)
                if built:
                    for feature in _route_features(route):
                        rec.note(f"VirtualService/{vs.meta.key} http[{ri}].{feature}")
            rec.note(f"VirtualService/{vs.meta.key} -> {host.fqdn}")
        for route in routes:
            self._add_hash_policy(route)
        return rec.built(routes)

    def _add_hash_policy(self, route: dict[str, Any]) -> None:
        action = route.get("route") or {}
        cluster = action.get("cluster")
        if cluster is None and action.get("weighted_clusters"):
            cluster = action["weighted_clusters"]["clusters"][0]["name"]
        if cluster in self.catalog.hash_policies:  # the route's own cluster, built when the route named it
            action["hash_policy"] = self.catalog.hash_policies[cluster]


@functools.lru_cache(maxsize=2)
def _unknown_host_route(policy: str) -> dict[str, Any]:
    if policy == "ALLOW_ANY":
        route = default_route(PASSTHROUGH)
        del route["route"]["retry_policy"]
        return {**route, "name": "allow_any"}
    return {"name": "block_all", "match": dict(CATCH_ALL), "direct_response": {"status": 502}}


def _l4_match_applies(view: View, vs, section: str, mi: int, match: Any, port: int) -> bool:
    if not isinstance(match, dict):
        return False
    if "port" in match and match["port"] != port:
        return False
    if "sourceLabels" in match and f"{vs.meta.key}/{section}/{mi}" not in view.source_matches:
        return False
    return not ("sourceNamespace" in match and match["sourceNamespace"] != view.namespace)


def _route_features(route: Any) -> list[str]:
    if not isinstance(route, dict):
        return []
    return sorted(k for k in route if k not in ("name",))
