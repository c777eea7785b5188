"""A compiled bundle with accessors for the parts tests look at."""

from __future__ import annotations

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

    def class_of(self, pod_ip: str) -> str:
        tree = self.listener("outbound")["filter_chain_matcher"]["matcher_tree"]["custom_match"]["typed_config"]
        for entry in tree["range_matchers"]:
            if any(r["address_prefix"] == pod_ip for r in entry["ranges"]):
                return entry["on_match"]["matcher"]["on_no_match"]["action"]["name"].split("~")[0]
        raise KeyError(pod_ip)


def network_filter(chain: dict[str, Any], name: str) -> dict[str, Any]:
    """The typed config of the chain's network filter `name`."""
    return next(f["typed_config"] for f in chain["filters"] if f["name"] == name)


def pod_ip(compiled: Compiled, key: str) -> str:
    return next(p.ip for p in compiled.state.pods if p.meta.key == key)
