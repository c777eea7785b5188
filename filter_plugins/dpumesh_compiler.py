"""Jinja filters over the dpumesh compiler, for templates and assertions in roles."""

from __future__ import annotations

from dpumesh.compiler.clusters import istio_name
from dpumesh.compiler.registry import port_protocol
from dpumesh.compiler.settings import MeshSettings


def dpumesh_spiffe_id(service_account: str, namespace: str, trust_domain: str = "cluster.local") -> str:
    """{{ 'reviews' | dpumesh_spiffe_id('shop', 'cluster.local') }} → spiffe://cluster.local/ns/shop/sa/reviews"""
    return MeshSettings(trust_domain=trust_domain).spiffe(namespace, service_account)


def dpumesh_port_protocol(port_name: str, app_protocol: str = "") -> str:
    """Istio's protocol for a Service port: {{ 'http-web' | dpumesh_port_protocol }} → HTTP"""
    return port_protocol(port_name or "", app_protocol or "")[0]


def dpumesh_cluster_name(fqdn: str, port: int, subset: str = "") -> str:
    """Istio's outbound cluster name: outbound|PORT|SUBSET|FQDN"""
    return istio_name(int(port), subset, fqdn)


class FilterModule:
    def filters(self):
        return {
            "dpumesh_spiffe_id": dpumesh_spiffe_id,
            "dpumesh_port_protocol": dpumesh_port_protocol,
            "dpumesh_cluster_name": dpumesh_cluster_name,
        }
