"""The dpu-proxy's static bootstrap: admin, node identity, LDS/CDS from files, the SDS service.

Envoy watches the directory of `lds.yaml` / `cds.yaml` and reloads a file when
it is moved into place, so a config change needs no restart. The one static
cluster reaches the node's SDS service (`dpumesh sds`) over its Unix socket.
"""

from __future__ import annotations

import json
from typing import Any

from dpumesh.compiler.context import CompileContext, typed
from dpumesh.compiler.tls import SDS_CLUSTER
from dpumesh.configfile import compact_json

RE2_MAX_PROGRAM_SIZE = 32768


def bootstrap(ctx: CompileContext) -> dict[str, Any]:
    layout = ctx.mesh.proxy

    def source(name: str) -> dict[str, Any]:
        config: dict[str, Any] = {"path": f"{layout.config_dir}/{name}"}
        if layout.watch_dir:
            config["watched_directory"] = {"path": layout.watch_dir}
        return {"path_config_source": config, "resource_api_version": "V3"}

    return {
        "node": {
            "id": f"dpu-proxy~{ctx.node}",
            "cluster": "dpu-proxy",
            "metadata": {"dpumesh_node": ctx.node, "trust_domain": ctx.mesh.trust_domain},
        },
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": layout.admin_port}},
        },
        "static_resources": {"clusters": [sds_cluster(layout.sds_socket)]},
        "dynamic_resources": {
            "lds_config": source("lds.yaml"),
            "cds_config": source("cds.yaml"),
        },
        "layered_runtime": {
            "layers": [
                {
                    "name": "static",
                    "static_layer": {
                        "overload.global_downstream_max_connections": 100000,
                        # Route conditions name every class they select (one regex alternative each), and
                        # VirtualService regexes may be long: Envoy's default limit (100) rejects both.
                        "re2.max_program_size.error_level": RE2_MAX_PROGRAM_SIZE,
                    },
                },
                {"name": "admin", "admin_layer": {}},
            ]
        },
    }


def sds_cluster(socket_path: str) -> dict[str, Any]:
    return {
        "name": SDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": typed(
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                explicit_http_config={"http2_protocol_options": {}},
            )
        },
        "load_assignment": {
            "cluster_name": SDS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": socket_path}}}}]}],
        },
    }


def discovery_response_pieces(type_name: str, resources: list[bytes | list[bytes]], version: str) -> list[bytes]:
    """A discovery response (version, type URL, resources) as compact JSON, from resources already encoded.

    The response is the concatenation of the pieces (a resource may itself be given as pieces): a node's
    responses reach tens of megabytes, and are hashed and written without being joined first.
    """
    url = f"type.googleapis.com/{type_name}"
    head = json.dumps({"version_info": version, "type_url": url}, separators=(",", ":"))[:-1]
    pieces = [head.encode() + b',"resources":[']
    for i, resource in enumerate(resources):
        if i:
            pieces.append(b",")
        if isinstance(resource, bytes):
            pieces.append(resource)
        else:
            pieces += resource
    pieces.append(b"]}\n")
    return pieces


LISTENER = "envoy.config.listener.v3.Listener"
CLUSTER = "envoy.config.cluster.v3.Cluster"


def encode_resource(type_name: str, resource: dict[str, Any]) -> bytes:
    """One resource of a discovery response, compact JSON with its `@type` first."""
    return compact_json({"@type": f"type.googleapis.com/{type_name}", **resource})
