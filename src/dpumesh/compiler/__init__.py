"""Compile Istio + Kubernetes state into one node's shared dpu-proxy config."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from typing import Any

import yaml

from dpumesh.compiler import parity
from dpumesh.compiler.bootstrap import CLUSTER, LISTENER, bootstrap, discovery_response_pieces, encode_resource
from dpumesh.compiler.clusters import ClusterCatalog
from dpumesh.compiler.context import CompileContext, ParityEntry
from dpumesh.compiler.inbound import build_inbound, validate_security
from dpumesh.compiler.outbound import OutboundBuilder, listener_head
from dpumesh.compiler.registry import ServiceRegistry, is_http
from dpumesh.compiler.settings import MeshSettings, ProxyLayout
from dpumesh.compiler.steering import steering_model
from dpumesh.compiler.validate import (
    check_merged_destination_rules,
    check_port_conflicts,
    validate_destination_rule,
    validate_sidecar,
    validate_virtual_service,
)
from dpumesh.compiler.vhost_helper import VhostHelper, wanted
from dpumesh.compiler.views import SourceClass, build_classes, cluster_classes
from dpumesh.configfile import compact_json, dump_report, dump_resources, report_item
from dpumesh.describe import describe, describe_cluster, describe_listener
from dpumesh.errors import Diagnostics, DpumeshError, InputProblem
from dpumesh.gcpause import collector_paused
from dpumesh.state.model import ClusterState


@dataclass
class NodeBundle:
    node: str
    version: str
    files: dict[str, bytes]
    warnings: list[InputProblem] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    helper_vhosts: int = 0  # outbound virtual hosts a forked helper built (`vhost_helper`)


class _PlainDumper(yaml.SafeDumper):
    """YAML without anchors/aliases: every config file reads on its own."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _dump(data: Any) -> bytes:
    return yaml.dump(data, Dumper=_PlainDumper, sort_keys=False, default_flow_style=False, width=120).encode()


def prepare(state: ClusterState, mesh: MeshSettings, node: str, only_pod: str = "") -> CompileContext:
    """The node's context, with everything node-independent checked: its problems are in `ctx.diag`."""
    ctx, unchecked = _context(state, mesh, node, only_pod)
    if unchecked:
        _check(ctx)
    return ctx


def _context(state: ClusterState, mesh: MeshSettings, node: str, only_pod: str) -> tuple[CompileContext, bool]:
    """The node's context with the state's registry, and whether the state's checks (`_check`) are still to run."""
    mesh.validate()
    if node not in state.nodes:
        raise DpumeshError(
            f"node {node!r} is not in the cluster state (known: {', '.join(sorted(state.nodes)) or 'none'})"
        )
    if not state.nodes[node].has_dpu:
        raise DpumeshError(f"node {node!r} has no DPU: label it dpumesh.io/dpu=true")
    key = _checked_key(mesh)
    if key in state.derived:
        # Another node of this state was prepared already: the registry, the findings and the
        # per-(namespace, host) lookups are the same for every node.
        registry, errors, warnings, memo = state.derived[key]
        diag = Diagnostics(list(errors), list(warnings))
        return CompileContext(state, mesh, node, diag, registry, only_pod=only_pod, memo=memo), False
    diag = Diagnostics()
    registry = ServiceRegistry(state, mesh.cluster_domain, diag)
    return CompileContext(state, mesh, node, diag, registry, only_pod=only_pod), True


def _check(ctx: CompileContext) -> None:
    """Validate everything node-independent, once per state: the findings are kept for its other nodes."""
    state = ctx.state
    catalog = ClusterCatalog(ctx)
    for vs in state.of_kind("VirtualService"):
        validate_virtual_service(ctx, vs)
    for dr in state.of_kind("DestinationRule"):
        validate_destination_rule(ctx, dr, catalog)
    check_merged_destination_rules(ctx)
    for sc in state.of_kind("Sidecar"):
        validate_sidecar(ctx, sc)
    check_port_conflicts(ctx)
    validate_security(ctx)
    state.derived[_checked_key(ctx.mesh)] = (ctx.registry, list(ctx.diag.errors), list(ctx.diag.warnings), ctx.memo)


def _checked_key(mesh: MeshSettings) -> tuple:
    """Where a state keeps what `_check` found and what its nodes share (the same for every node)."""
    return ("checked", mesh.shared_key())


def compile_sidecar(state: ClusterState, mesh: MeshSettings, pod_key: str) -> NodeBundle:
    """The config one pod's own sidecar would need, from the same compiler: the baseline of the benchmarks.

    The proxy serves that pod alone (its outbound view, its inbound ports), as an Istio sidecar does.
    """
    pod = next((p for p in state.pods if p.meta.key == pod_key), None)
    if pod is None:
        raise DpumeshError(f"pod {pod_key!r} is not in the cluster state")
    if not pod.meshed:
        raise DpumeshError(f"pod {pod_key!r} is not in the mesh: it has no sidecar to compare with")
    return compile_node(state, mesh, pod.node, only_pod=pod_key)


VERSION_SLOT = "dpumesh-version-slot"


def _with_version(pieces: list[bytes], version: str) -> bytes:
    """The response of `discovery_response_pieces(..., VERSION_SLOT)` with the version in its slot."""
    slot = f'"version_info":"{VERSION_SLOT}"'.encode()
    assert pieces[0].startswith(b"{" + slot), "discovery_response_pieces puts version_info first"
    return b"".join([pieces[0].replace(slot, f'"version_info":"{version}"'.encode(), 1), *pieces[1:]])


def compile_node(
    state: ClusterState, mesh: MeshSettings, node: str, only_pod: str = "", parallel: bool | None = None
) -> NodeBundle:
    """`parallel`: whether a forked helper builds part of the outbound virtual hosts (None: when it pays off,
    see `vhost_helper`). The bundle is the same either way."""
    with collector_paused():  # the collector would rescan the state and what earlier nodes cached
        return _compile_node(state, mesh, node, only_pod, parallel)


@dataclass(frozen=True)
class OutboundPart:
    """What a node's set of source classes decides, built once per set: nodes with the same set share it."""

    chains_json: memoryview  # the outbound listener's filter_chains and filter_chain_matcher, encoded
    chain_count: int
    clusters: list[str]  # the clusters it names
    clusters_json: bytes  # their CDS resources, comma-separated: one piece for every node's CDS response
    digests: _Digests  # of chains_json and clusters_json: the node's version hashes these, not the bytes
    class_parity: dict[ParityEntry, list[frozenset[str]]]
    views: parity.ClassViews
    described: list[str]
    sni_ports: set[int]  # destination ports the TLS inspector runs on
    sniffed_ports: set[int]  # destination ports the HTTP inspector runs on


# A node whose classes are at least this share of the cluster's gets the outbound chains of all of them.
CLUSTER_CHAINS_COVERAGE = 0.8


def _outbound_classes(ctx: CompileContext, local: list[SourceClass]) -> list[SourceClass]:
    """The classes the node's outbound chains serve: the node's; all the cluster's when the node has most of them.

    Chains name classes, never pods, so a node may carry chains for classes it has no pod of: their
    routes are never selected. Nodes that do (most nodes of a large cluster, where every node runs pods
    of most namespaces) share one build, at the cost of at most a quarter more class names in the
    route conditions. A node with a few of the cluster's classes gets chains for those alone.
    """
    everyone = cluster_classes(ctx)
    if not ctx.only_pod and len(local) >= CLUSTER_CHAINS_COVERAGE * len(everyone):
        return everyone
    return local


def _start_helper(ctx: CompileContext, parallel: bool | None) -> VhostHelper | None:
    """A helper building outbound HTTP virtual hosts alongside the rest of a state's first compile.

    It starts once the registry is built (it shares it) and before the state's checks, which it does not need:
    it finds the classes itself. Should the state be invalid, it fails or builds in vain, and the compile
    reports the checks' findings.
    """
    # Virtual hosts the classes may see, at most (a host hidden from all of them has none): cheap to count.
    count = sum(is_http(p.protocol) or h.sniffs(n) for h in ctx.registry.hosts.values() for n, p in h.ports.items())
    if not wanted(count, parallel):
        return None

    def builder() -> OutboundBuilder:  # in the helper
        classes = _outbound_classes(ctx, build_classes(ctx))
        return OutboundBuilder(ctx, ClusterCatalog.shared(ctx)).for_helper(classes)

    try:
        return VhostHelper(builder)
    except OSError:  # no fork here (a process or memory limit): compile alone
        return None


def _outbound_part(
    ctx: CompileContext, catalog: ClusterCatalog, classes: list[SourceClass], helper: VhostHelper | None
) -> OutboundPart:
    """The chains of `classes` (`_outbound_classes`), built once per set of classes."""
    key = ("outbound-part", tuple(c.name for c in classes))
    if key not in ctx.memo:
        builder = OutboundBuilder(ctx, catalog)
        body = builder.body(classes, helper)
        clusters = [name for name in builder.used_clusters if name in catalog.encoded]
        parity.collect_class_notes(ctx, classes)
        chains_json = memoryview(compact_json(body))[1:-1]  # not a copy: the node's file is joined from it
        clusters_json = b",".join([catalog.encoded[name] for name in clusters])
        ctx.memo[key] = OutboundPart(
            chains_json=chains_json,
            chain_count=len(body["filter_chains"]),
            clusters=clusters,
            clusters_json=clusters_json,
            digests=_Digests([chains_json, clusters_json]),
            class_parity=ctx.class_parity,
            views=parity.class_views(ctx.class_parity, [c.name for c in classes]),
            described=describe_listener({"name": "outbound", **body}, builder.described_vhosts),
            sni_ports=builder.sni_ports,
            sniffed_ports=builder.sniffed_ports,
        )
    part = ctx.memo[key]
    ctx.class_parity = part.class_parity
    return part


def _shared_steering_lines(ctx: CompileContext, steering: dict[str, Any]) -> dict[str, list[str]]:
    """The steering.json lines every node repeats (the Services, each other node), encoded once per state."""
    key = ("steering-services-lines",)
    if key not in ctx.memo:
        ctx.memo[key] = [report_item(s) for s in steering["services"]]
    remote = []
    for item in steering["remote_nodes"]:
        item_key = ("steering-remote-line", item["node"])
        if item_key not in ctx.memo:
            ctx.memo[item_key] = report_item(item)
        remote.append(ctx.memo[item_key])
    return {"services": ctx.memo[key], "remote_nodes": remote}


def _compile_node(
    state: ClusterState, mesh: MeshSettings, node: str, only_pod: str, parallel: bool | None
) -> NodeBundle:
    ctx, unchecked = _context(state, mesh, node, only_pod)
    helper = _start_helper(ctx, parallel) if unchecked else None  # later nodes reuse the first one's chains
    try:
        if unchecked:
            _check(ctx)
        ctx.diag.raise_if_errors()
        catalog = ClusterCatalog.shared(ctx)
        classes = build_classes(ctx)
        ctx.class_pods = {c.name: [p.meta.key for p in c.pods] for c in classes}
        outbound_classes = _outbound_classes(ctx, classes)
        if helper is not None:
            helper.expect([c.name for c in outbound_classes])
        bundle = _compile_rest(ctx, catalog, classes, outbound_classes, helper)
    finally:
        if helper is not None:
            helper.close()
    bundle.helper_vhosts = helper.taken if helper else 0
    return bundle


class _Digests:
    """The SHA-256 of each of some pieces, computed by a thread: hashing releases the interpreter lock, so the
    compile's Python work goes on meanwhile (tens of megabytes take a few hundredths of a second)."""

    def __init__(self, pieces: list[bytes | memoryview]):
        self._digests: list[bytes] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(pieces,), daemon=True)
        self._thread.start()

    def _run(self, pieces: list[bytes | memoryview]) -> None:
        try:
            self._digests = [hashlib.sha256(piece).digest() for piece in pieces]
        except BaseException as error:  # given to the caller by `get`
            self._error = error

    def get(self) -> list[bytes]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._digests


def _version(pieces: list[bytes | memoryview], outbound: OutboundPart) -> str:
    """The hash of what the node's files say: their pieces in order, with the two large pieces every node of a
    state shares (`OutboundPart`) replaced by their own hash, computed once."""
    large = (outbound.chains_json, outbound.clusters_json)
    shared = {id(piece): digest for piece, digest in zip(large, outbound.digests.get(), strict=True) if len(piece)}
    content = hashlib.sha256()
    for piece in pieces:
        content.update(shared.get(id(piece), piece))
    return content.hexdigest()[:16]


def _compile_rest(
    ctx: CompileContext,
    catalog: ClusterCatalog,
    classes: list[SourceClass],
    outbound_classes: list[SourceClass],
    helper: VhostHelper | None,
) -> NodeBundle:
    # Everything the outbound side does not decide comes first: a helper builds part of that side meanwhile.
    inbound_listener, inbound_clusters = build_inbound(ctx)
    parity.collect_pod_notes(ctx)
    steering = steering_model(ctx)
    steering["version"] = VERSION_SLOT
    steering_file = dump_report(steering, _shared_steering_lines(ctx, steering))
    inbound_json = encode_resource(LISTENER, inbound_listener)
    fixed = catalog.fixed_clusters()
    fixed_json = [encode_resource(CLUSTER, c) for c in fixed]
    inbound_clusters_json = [encode_resource(CLUSTER, c) for c in inbound_clusters]
    bootstrap_yaml = _dump(bootstrap(ctx))
    inbound_lines = describe_listener(inbound_listener)
    pod_parity = parity.pod_entries(ctx)

    outbound = _outbound_part(ctx, catalog, outbound_classes, helper)
    ctx.diag.raise_if_errors()
    head = compact_json(listener_head(ctx, classes, outbound.sni_ports, outbound.sniffed_ports))
    listeners: list[bytes | list[bytes]] = [[head[:-1], b",", outbound.chains_json, b"}"], inbound_json]
    files: dict[str, bytes] = {"envoy/bootstrap.yaml": bootstrap_yaml}
    # The version is the hash of what the files say (written once, with a slot for the version itself).
    lds = discovery_response_pieces(LISTENER, listeners, VERSION_SLOT)
    outbound_clusters = [outbound.clusters_json] if outbound.clusters else []
    cds = discovery_response_pieces(CLUSTER, fixed_json + outbound_clusters + inbound_clusters_json, VERSION_SLOT)
    listener_lines = outbound.described + inbound_lines
    cluster_lines = [describe_cluster(c) for c in fixed]
    cluster_lines += [catalog.described[name] for name in outbound.clusters]
    cluster_lines += [describe_cluster(c) for c in inbound_clusters]
    files["describe.txt"] = describe(listener_lines, cluster_lines, steering).encode()
    report = parity.report(ctx, outbound.views, pod_parity)
    files["parity.json"] = dump_resources(report)  # compact: parity.txt is the readable form
    files["parity.txt"] = parity.summary(report)
    version = _version([*lds, *cds, steering_file], outbound)
    files["envoy/lds.yaml"] = _with_version(lds, version)
    files["envoy/cds.yaml"] = _with_version(cds, version)
    slot = f'"version":"{VERSION_SLOT}"'.encode()
    assert slot in steering_file, "dump_report writes the version on a line of its own"
    files["steering.json"] = steering_file.replace(slot, f'"version":"{version}"'.encode(), 1)
    stats = {
        "classes": len(classes),
        "listeners": len(listeners),
        "filter_chains": outbound.chain_count + len(inbound_listener.get("filter_chains", [])),
        "clusters": len(fixed) + len(inbound_clusters) + len(outbound.clusters),
        "local_pods": len(ctx.local_pods),
    }
    manifest = {"node": ctx.node, "version": version, "stats": stats, "files": sorted([*files, "MANIFEST.json"])}
    files["MANIFEST.json"] = (json.dumps(manifest, indent=2) + "\n").encode()
    return NodeBundle(ctx.node, version, files, ctx.diag.warnings, stats)


__all__ = ["MeshSettings", "NodeBundle", "ProxyLayout", "compile_node", "compile_sidecar", "prepare"]
