"""Build a CompileContext for node-1 from YAML text, as the compiler does before compiling."""

from __future__ import annotations

import textwrap
from pathlib import Path

import yaml

from dpumesh.compiler.context import CompileContext
from dpumesh.compiler.registry import ServiceRegistry
from dpumesh.compiler.settings import MeshSettings, ProxyLayout
from dpumesh.errors import Diagnostics
from dpumesh.state import build_state

NODE = """
apiVersion: v1
kind: Node
metadata: {name: node-1, labels: {dpumesh.io/dpu: "true"}}
spec: {podCIDR: 10.244.1.0/24}
---
apiVersion: v1
kind: Node
metadata: {name: node-2, labels: {dpumesh.io/dpu: "true"}}
spec: {podCIDR: 10.244.2.0/24}
---
apiVersion: v1
kind: Namespace
metadata: {name: default, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: other, labels: {istio-injection: enabled}}
"""


def pod(name: str, ip: str, labels: str = "", namespace: str = "default", sa: str = "", node: str = "node-1") -> str:
    """A Pod document; `labels` in YAML flow style without braces (e.g. 'app: web')."""
    return f"""
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}, labels: {{{labels}}}}}
spec:
  nodeName: {node}
  serviceAccountName: {sa or name}
  containers: [{{name: c}}]
status: {{podIP: {ip}}}
"""


def context(text: str, root: Path | None = None, with_node: bool = True, **mesh_fields) -> CompileContext:
    """The context of node-1 for `text` (plus the two nodes and namespaces above when with_node)."""
    body = (NODE + "\n---\n" if with_node else "") + textwrap.dedent(text)
    state = build_state([d for d in yaml.safe_load_all(body) if d])
    layout = ProxyLayout(config_dir=f"{root}/envoy", cert_dir=f"{root}/certs") if root else ProxyLayout()
    mesh = MeshSettings(proxy=layout, **mesh_fields)
    diag = Diagnostics()
    return CompileContext(state, mesh, "node-1", diag, ServiceRegistry(state, mesh.cluster_domain, diag))


def errors(ctx: CompileContext) -> list[str]:
    return [str(p) for p in ctx.diag.errors]


def warnings(ctx: CompileContext) -> list[str]:
    return [str(p) for p in ctx.diag.warnings]
