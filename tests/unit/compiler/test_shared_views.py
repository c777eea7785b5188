"""Sharing one View of a host between classes must give each class what its own namespace would get.

`views.host_dependence` decides which classes may share the routes and chains of a host. These tests
check that decision against the plain one: the routes and chains built for the class's own namespace and
sourceLabels matches, for every class, host and port of several states, including a generated cluster with
client-namespace DestinationRules, exportTo, Sidecars and sourceLabels.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.generate import Sizes, write_state
from dpumesh.compiler import MeshSettings, prepare
from dpumesh.compiler.clusters import ClusterCatalog
from dpumesh.compiler.outbound import OutboundBuilder
from dpumesh.compiler.registry import is_http
from dpumesh.compiler.views import ANY_NAMESPACE, View, build_classes, sees, view_of
from dpumesh.state import load_state

STATES = Path(__file__).parent / "states"


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    sizes = Sizes(services=120, pods=240, nodes=3, virtual_services=60, destination_rules=60, namespaces=6)
    return write_state(sizes.validated(), tmp_path_factory.mktemp("generated") / "state")


def _states(generated: Path) -> list[Path]:
    return [STATES / "basic", STATES / "features", generated]


def test_every_shared_view_builds_what_the_class_would_build_alone(generated):
    compared = shared = 0
    for state_dir in _states(generated):
        state = load_state(state_dir)
        mesh = MeshSettings()
        for node in sorted(n for n, info in state.nodes.items() if info.has_dpu):
            ctx = prepare(state, mesh, node)
            builder = OutboundBuilder(ctx, ClusterCatalog.shared(ctx))
            for cls in build_classes(ctx):
                own = View(cls.namespace, cls.source_matches)
                for host in ctx.registry.hosts.values():
                    if not sees(ctx, cls, host):
                        continue
                    view = view_of(ctx, cls, host)
                    shared += view.namespace == ANY_NAMESPACE
                    for port, hp in host.ports.items():
                        if is_http(hp.protocol):
                            got = builder._build_http_routes(view, port, host).value
                            want = builder._build_http_routes(own, port, host).value
                        else:
                            got = builder._build_tcp_chain(view, port, host).value["filters"]
                            want = builder._build_tcp_chain(own, port, host).value["filters"]
                        assert got == want, (state_dir.name, node, cls.name, host.fqdn, port)
                        compared += 1
    # most hosts really are shared, some are not, and every one was checked
    assert compared > 1000 and compared // 2 < shared < compared


def test_a_destination_rule_in_the_client_namespace_singles_that_namespace_out():
    state = load_state(STATES / "features")
    ctx = prepare(state, MeshSettings(), "node-1")
    classes = {c.namespace: c for c in build_classes(ctx)}
    reviews = ctx.registry.hosts["reviews.shop.svc.cluster.local"]
    # `other` has its own DestinationRule for reviews: its view is its own; shop's is the shared one.
    assert view_of(ctx, classes["other"], reviews).namespace == "other"
    assert view_of(ctx, classes["shop"], reviews).namespace in (ANY_NAMESPACE, "shop")
