"""Workload identity and TLS: Istio-mutual sockets, DestinationRule TLS, and where secrets come from.

Every secret (each local pod's certificate, the root CA, DestinationRule
credentials) comes from the node's SDS service (`dpumesh sds`, gRPC over a Unix
socket), which reads the certificate layout of `dpumesh.certs` and pushes rotated
files; the proxy keeps no file watch per identity.

The client certificate of outbound Istio mTLS depends on the *source pod* of each
connection. A listener filter stores that pod's secret name in the connection's filter
state (`source_filter`), and every mTLS cluster fetches it on demand. One cluster
then serves every identity, while connections of different identities never share an
upstream connection: the filter state object is hashed into the connection-pool key.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any

from dpumesh.compiler.context import ROOT_CA_SECRET, CompileContext, secret_name, typed
from dpumesh.state.model import Pod

TLS_SOCKET = "envoy.transport_sockets.tls"
SECRET_TYPE = "envoy.extensions.transport_sockets.tls.v3.Secret"
ISTIO_ALPN = ["istio-peer-exchange", "istio"]
# What a client proxy offers for HTTP to a port whose protocol the server side detects: the server cannot look
# inside the mTLS stream, so it picks its HTTP chain by this ALPN, as Istio's sidecars do (their istio.alpn
# filter). The server's HTTP codec then tells HTTP/1.1 from HTTP/2 itself.
ISTIO_HTTP_ALPN = ["istio-http/1.1"]
ON_DEMAND_KEY = "envoy.tls.certificate_mappers.on_demand_secret"  # filter state the upstream mapper reads
NO_IDENTITY = "dpumesh-no-identity"  # the SDS service never serves it: a connection without a source identity fails
SDS_CLUSTER = "dpumesh-sds"
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"  # Istio's default for SIMPLE/MUTUAL without a CA
DR_TLS_MODES = ("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL")
TLS_PARAMS = {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"}


def _sds_ref(secret: str) -> dict[str, Any]:
    return {"name": secret, "sds_config": grpc_sds_source()}


def _uri_san(matcher: dict[str, str]) -> dict[str, Any]:
    return {"san_type": "URI", "matcher": matcher}


def trust_domain_san(ctx: CompileContext) -> dict[str, Any]:
    """Any workload identity of the mesh's trust domain."""
    return _domain_san(ctx.mesh.trust_domain)


def _domain_san(trust_domain: str) -> dict[str, Any]:
    return _uri_san({"prefix": f"spiffe://{trust_domain}/"})


def grpc_sds_source() -> dict[str, Any]:
    """The node's SDS service, reached through the bootstrap's `dpumesh-sds` cluster."""
    return {
        "resource_api_version": "V3",
        "api_config_source": {
            "api_type": "GRPC",
            "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": SDS_CLUSTER}}],
        },
    }


# Parts of every Istio-mutual socket, the same in each of thousands of clusters (never changed once built).
_ON_DEMAND_SELECTOR = {
    "name": "envoy.tls.certificate_selectors.on_demand_secret",
    "typed_config": typed(
        "envoy.extensions.transport_sockets.tls.cert_selectors.on_demand_secret.v3.Config",
        config_source=grpc_sds_source(),
        certificate_mapper={
            "name": "envoy.tls.upstream_certificate_mappers.filter_state_override",
            "typed_config": typed(
                "envoy.extensions.transport_sockets.tls.cert_mappers.filter_state_override.v3.Config",
                default_value=NO_IDENTITY,
            ),
        },
    ),
}
_ROOT_CA_REF = _sds_ref(ROOT_CA_SECRET)


@functools.lru_cache(maxsize=4096)
def _istio_client_context(peer_sans: tuple[str, ...], alpn: tuple[str, ...], trust_domain: str) -> dict[str, Any]:
    """The part of an Istio-mutual socket clusters share (thousands of clusters, few sets of peers): one
    object per set, never changed once built."""
    sans = [_uri_san({"exact": san}) for san in peer_sans] or [_domain_san(trust_domain)]
    return {
        "tls_params": TLS_PARAMS,
        "alpn_protocols": list(alpn),
        "custom_tls_certificate_selector": _ON_DEMAND_SELECTOR,
        "combined_validation_context": {
            "default_validation_context": {"match_typed_subject_alt_names": sans},
            "validation_context_sds_secret_config": _ROOT_CA_REF,
        },
    }


def client_transport_socket(
    ctx: CompileContext, sni: str, peer_sans: list[str], alpn: list[str] = ISTIO_ALPN
) -> dict[str, Any]:
    """ISTIO_MUTUAL towards a mesh workload, presenting the certificate of the connection's *source* pod."""
    context: dict[str, Any] = {
        "common_tls_context": _istio_client_context(tuple(peer_sans), tuple(alpn), ctx.mesh.trust_domain)
    }
    if sni:
        context["sni"] = sni
    return {
        "name": TLS_SOCKET,
        "typed_config": typed("envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", **context),
    }


def _by_source_ip(values: dict[str, str]) -> dict[str, Any]:
    """A format string giving the value of the connection's source IP: a constant when all are equal."""
    if len(set(values.values())) <= 1:
        return {"text_format_source": {"inline_string": next(iter(values.values()), NO_IDENTITY)}}
    table = ", ".join(f"'{ip}': '{value}'" for ip, value in sorted(values.items()))
    return {
        "text_format_source": {"inline_string": f"%CEL({{{table}}}[source.address.split(':')[0]])%"},
        "formatters": [
            {
                "name": "envoy.formatter.cel",
                "typed_config": typed(
                    "envoy.extensions.formatter.cel.v3.Cel", cel_config={"enable_string_functions": True}
                ),
            }
        ],
    }


def source_filter(ctx: CompileContext, class_key: str, classes: dict[str, str], pods: list[Pod]) -> dict[str, Any]:
    """The outbound listener filter that names each connection's source class and client certificate.

    Both come from the source pod's IP, once per connection, before any chain runs: the chains
    and routes are shared by every class, and every mTLS cluster reads the certificate name.
    """
    secrets = {p.ip: secret_name(p.namespace, p.service_account) for p in pods}
    return {
        "name": "envoy.filters.listener.set_filter_state",
        "typed_config": typed(
            "envoy.extensions.filters.listener.set_filter_state.v3.Config",
            on_accept=[
                {"object_key": class_key, "factory_key": "envoy.string", "format_string": _by_source_ip(classes)},
                {
                    "object_key": ON_DEMAND_KEY,
                    # hashable, so the value is part of the upstream connection-pool key
                    "factory_key": "envoy.hashable_string",
                    "shared_with_upstream": "ONCE",
                    "format_string": _by_source_ip(secrets),
                },
            ],
        ),
    }


def server_transport_socket(
    ctx: CompileContext, namespace: str, service_account: str, alpn: list[str] | None = None
) -> dict[str, Any]:
    """The inbound mTLS side: the *destination* pod's identity, peers of the trust domain only."""
    common: dict[str, Any] = {
        "tls_params": TLS_PARAMS,
        "tls_certificate_sds_secret_configs": [_sds_ref(secret_name(namespace, service_account))],
        "combined_validation_context": {
            "default_validation_context": {"match_typed_subject_alt_names": [trust_domain_san(ctx)]},
            "validation_context_sds_secret_config": _sds_ref(ROOT_CA_SECRET),
        },
    }
    if alpn:
        common["alpn_protocols"] = alpn
    return {
        "name": TLS_SOCKET,
        "typed_config": typed(
            "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            common_tls_context=common,
            require_client_certificate=True,
        ),
    }


CREDENTIAL_PREFIX = "kubernetes~"


def credential_secret(client_namespace: str, credential_name: str) -> str:
    """SDS secret of a DestinationRule credentialName, looked up in the client's namespace as Istio does."""
    return f"{CREDENTIAL_PREFIX}{client_namespace}~{credential_name}"


def simple_client_transport_socket(
    ctx: CompileContext, dr_tls: Any, where: tuple[str, ...], client_namespace: str | None = None
) -> dict[str, Any] | None:
    """A DestinationRule `tls` block in mode SIMPLE or MUTUAL as an UpstreamTlsContext.

    `where` is (kind, namespace, name[, field path of the tls block, by default
    spec.trafficPolicy.tls]); problems are reported
    through ctx.diag and give None. `client_namespace` picks the credentialName secret
    (the source pod's namespace; the rule's own namespace when not given).
    """
    kind, namespace, name, path = (*where, "spec.trafficPolicy.tls") if len(where) == 3 else where
    diag_error = ctx.diag.error

    def error(field: str, message: str) -> None:
        diag_error(kind, namespace, name, f"{path}.{field}" if field else path, message)

    if not isinstance(dr_tls, dict):
        error("", "must be a mapping")
        return None
    mode = dr_tls.get("mode", "DISABLE")
    if mode not in ("SIMPLE", "MUTUAL"):
        error("mode", f"{mode!r} is not SIMPLE or MUTUAL" if mode not in DR_TLS_MODES else f"{mode} has no TLS")
        return None
    strings = ("credentialName", "caCertificates", "clientCertificate", "privateKey", "sni", "caCrl")
    bad = [f for f in strings if f in dr_tls and not isinstance(dr_tls[f], str)]
    for f in bad:
        error(f, "must be a string")
    sans = dr_tls.get("subjectAltNames") or []
    if not isinstance(sans, list) or not all(isinstance(s, str) and s for s in sans):
        error("subjectAltNames", "must be a list of non-empty strings")
        bad.append("subjectAltNames")
    skip_verify = dr_tls.get("insecureSkipVerify", False)
    if not isinstance(skip_verify, bool):
        error("insecureSkipVerify", f"{skip_verify!r} is not true or false")
        bad.append("insecureSkipVerify")
    if bad:
        return None
    credential = dr_tls.get("credentialName", "")
    files = {f: dr_tls.get(f, "") for f in ("caCertificates", "clientCertificate", "privateKey")}
    for f, value in files.items():
        if value and not value.startswith("/"):
            error(f, f"{value!r} is not an absolute path")
            return None
    if credential and any(files.values()):
        given = ", ".join(f for f, v in files.items() if v)
        error("credentialName", f"cannot be combined with {given}")
        return None
    if mode == "MUTUAL" and not credential and not (files["clientCertificate"] and files["privateKey"]):
        error("clientCertificate", "MUTUAL needs clientCertificate and privateKey, or credentialName")
        return None
    if mode == "SIMPLE" and (files["clientCertificate"] or files["privateKey"]):
        error("clientCertificate" if files["clientCertificate"] else "privateKey", "is only used in mode MUTUAL")
        return None

    common: dict[str, Any] = {"tls_params": TLS_PARAMS}
    client_ns = client_namespace or namespace
    if credential:
        secret = credential_secret(client_ns, credential)
        if mode == "MUTUAL":
            common["tls_certificate_sds_secret_configs"] = [_sds_ref(secret)]
        validation_source: dict[str, Any] = {"validation_context_sds_secret_config": _sds_ref(f"{secret}-cacert")}
    else:
        if mode == "MUTUAL":
            common["tls_certificates"] = [
                {
                    "certificate_chain": {"filename": files["clientCertificate"]},
                    "private_key": {"filename": files["privateKey"]},
                }
            ]
        ca = files["caCertificates"] or SYSTEM_CA_BUNDLE
        validation_source = {"validation_context": {"trusted_ca": {"filename": ca}}}
        if dr_tls.get("caCrl"):
            validation_source["validation_context"]["crl"] = {"filename": dr_tls["caCrl"]}
    if not skip_verify:
        matchers = [_san(s) for s in sans]
        if "validation_context" in validation_source:
            validation = validation_source["validation_context"]
            if matchers:
                validation["match_typed_subject_alt_names"] = matchers
            common["validation_context"] = validation
        else:
            common["combined_validation_context"] = {
                "default_validation_context": {"match_typed_subject_alt_names": matchers} if matchers else {},
                **validation_source,
            }
    context: dict[str, Any] = {"common_tls_context": common}
    if dr_tls.get("sni"):
        context["sni"] = dr_tls["sni"]
    return {
        "name": TLS_SOCKET,
        "typed_config": typed("envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", **context),
    }


def _san(name: str) -> dict[str, Any]:
    """The SAN matcher of a subjectAltNames entry: a SPIFFE URI, an IP address or a DNS name."""
    if name.startswith("spiffe://"):
        return _uri_san({"exact": name})
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return {"san_type": "DNS", "matcher": {"exact": name}}
    return {"san_type": "IP_ADDRESS", "matcher": {"exact": name}}


def local_identities(ctx: CompileContext) -> list[tuple[str, str]]:
    """(namespace, service account) of every meshed pod on the node, sorted."""
    return sorted({(p.namespace, p.service_account) for p in ctx.local_meshed_pods})
