"""A compiled bundle with accessors for the parts tests look at."""

from __future__ import annotations

import re
from typing import Any

import yaml


class Compiled:
    """A compiled bundle with accessors for the parts tests look at."""

    def __init__(self, bundle, state):
        self.bundle = bundle
        self.state = state
        self.lds = yaml.safe_load(bundle.files["envoy/lds.yaml"])["resources"]
        self.cds = yaml.safe_load(bundle.files["envoy/cds.yaml"])["resources"]

    def listener(self, name: str) -> dict[str, Any]:
        return next(x for x in self.lds if x["name"] == name)

    def chain(self, name: str) -> dict[str, Any]:
        return next(c for c in self.listener("outbound")["filter_chains"] if c["name"] == name)

    def cluster(self, name: str) -> dict[str, Any]:
        return next(c for c in self.cds if c["name"] == name)

    def cluster_names(self) -> list[str]:
        return [c["name"] for c in self.cds]

    def route_config(self, chain: str) -> dict[str, Any]:
        return network_filter(self.chain(chain), "envoy.filters.network.http_connection_manager")["route_config"]

    def vhost(self, chain: str, name: str) -> dict[str, Any]:
        return next(v for v in self.route_config(chain)["virtual_hosts"] if v["name"] == name)

    def source_classes(self) -> dict[str, list[str]]:
        return self.listener("outbound")["metadata"]["filter_metadata"]["dpumesh"]["source_classes"]

    def class_of(self, pod_ip: str) -> str:
        return next(name for name, ips in self.source_classes().items() if pod_ip in ips)

    def chain_for(self, source: str, address: str, port: int, sni: str = "", http: str = "") -> str:
        """The chain the outbound listener's matcher picks for a connection, as Envoy evaluates it.

        `sni`: the TLS ClientHello's server name (the connection is TLS when given); `http`: what the HTTP
        inspector would detect in plaintext ("'http/1.1'", "'h2c'"). Each counts only where its inspector runs.
        """
        listener = self.listener("outbound")
        tls = bool(sni) and inspects(listener, "envoy.filters.listener.tls_inspector", port)
        inputs = {
            "DestinationPortInput": str(port),
            "DestinationIPInput": address,
            "ServerNameInput": sni if tls else "",
            "TransportProtocolInput": "tls" if tls else "raw_buffer",
            "ApplicationProtocolInput": http
            if inspects(listener, "envoy.filters.listener.http_inspector", port)
            else "",
            "FilterStateInput": next((c for c, ips in self.source_classes().items() if source in ips), ""),
        }
        return _evaluate(listener["filter_chain_matcher"], inputs)

    def inbound_chain_for(self, address: str, port: int, alpn: str = "", http: str = "") -> str:
        """The chain the inbound listener's matcher picks for a connection to `address`:`port`.

        `alpn`: the ALPN values a TLS client offers, as Envoy gives them ("'istio-http/1.1'"; the connection is
        TLS when given); `http`: what the HTTP inspector would detect in plaintext, where it runs.
        """
        listener = self.listener("inbound")
        inspected = inspects(listener, "envoy.filters.listener.http_inspector", port)
        inputs = {
            "DestinationIPInput": address,
            "DestinationPortInput": str(port),
            "TransportProtocolInput": "tls" if alpn else "raw_buffer",
            "ApplicationProtocolInput": alpn or (http if inspected else ""),
        }
        return _evaluate(listener["filter_chain_matcher"], inputs)

    def routes_for(self, source: str, port: int, authority: str) -> list[dict[str, Any]]:
        """The routes a request from `source` with this authority can reach, in order, without the class gates.

        Chosen as Envoy does: the virtual host by domain (exact, else `*`), then the routes whose
        source-class condition (and, for those, `:authority` condition) holds for the source's class.
        """
        chain = self.chain_for(source, "192.0.2.1", port)
        vhosts = self.route_config(chain)["virtual_hosts"]
        vhost = next((v for v in vhosts if authority in v["domains"]), None)
        vhost = vhost or next(v for v in vhosts if "*" in v["domains"])
        cls = self.class_of(source)
        out = []
        for route in vhost["routes"]:
            match = dict(route["match"])
            gate = match.pop("filter_state", None)
            if gate is not None:
                if not _string_matches(gate["string_match"], cls):
                    continue
                headers = match.pop("headers", [])
                gates = [h for h in headers if h["name"] == ":authority"]
                if any(not _string_matches(h["string_match"], authority) for h in gates):
                    continue
                if [h for h in headers if h["name"] != ":authority"]:
                    match["headers"] = [h for h in headers if h["name"] != ":authority"]
            out.append({**route, "match": match})
            if match == {"prefix": "/"}:
                break  # every later route is unreachable for this source
        return out


def _string_matches(matcher: dict[str, Any], value: str) -> bool:
    if "exact" in matcher:
        return value == matcher["exact"]
    return re.fullmatch(matcher["safe_regex"]["regex"], value) is not None


def _evaluate(on_match: dict[str, Any], inputs: dict[str, str]) -> str:
    """The action a matcher picks, as Envoy evaluates it; `inputs` by input type (DestinationPortInput, ...)."""
    while "action" not in on_match:
        matcher = on_match.get("matcher", on_match)
        tree = matcher.get("matcher_tree")
        chosen = None
        if tree is not None:
            value = inputs[_input_type(tree["input"])]
            chosen = tree["exact_match_map"]["map"].get(value)
        for candidate in (matcher.get("matcher_list") or {}).get("matchers", []):
            predicate = candidate["predicate"]["single_predicate"]
            if _string_matches(predicate["value_match"], inputs[_input_type(predicate["input"])]):
                chosen = candidate["on_match"]
                break
        on_match = chosen if chosen is not None else matcher["on_no_match"]
    return on_match["action"]["name"]


def _input_type(matcher_input: dict[str, Any]) -> str:
    return matcher_input["typed_config"]["@type"].rsplit(".", 1)[-1]


def _string_matches(match: dict[str, Any], value: str) -> bool:
    if "contains" in match:
        return match["contains"] in value
    if "exact" in match:
        return match["exact"] == value
    return re.fullmatch(match["safe_regex"]["regex"], value) is not None


def inspects(listener: dict[str, Any], name: str, port: int) -> bool:
    """Whether listener filter `name` runs for connections to `port` (its `filter_disabled` predicate)."""
    found = next((f for f in listener["listener_filters"] if f["name"] == name), None)
    return found is not None and not _predicate(found.get("filter_disabled"), port)


def _predicate(rule: dict[str, Any] | None, port: int) -> bool:
    if rule is None:
        return False
    if "not_match" in rule:
        return not _predicate(rule["not_match"], port)
    if "or_match" in rule:
        return any(_predicate(r, port) for r in rule["or_match"]["rules"])
    span = rule["destination_port_range"]
    return span["start"] <= port < span["end"]


def network_filter(chain: dict[str, Any], name: str) -> dict[str, Any]:
    """The typed config of the chain's network filter `name`."""
    return next(f["typed_config"] for f in chain["filters"] if f["name"] == name)


def pod_ip(compiled: Compiled, key: str) -> str:
    return next(p.ip for p in compiled.state.pods if p.meta.key == key)
