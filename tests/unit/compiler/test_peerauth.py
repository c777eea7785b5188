"""PeerAuthentication resolution: levels, inheritance, port-level modes, conflicts, validation."""

from __future__ import annotations

from dpumesh.compiler.context import KEPT
from dpumesh.compiler.peerauth import PeerAuthentications
from tests.support.state import context, errors, pod, warnings

PODS = pod("web", "10.244.1.5", "app: web") + pod("api", "10.244.1.6", "app: api")


def pa(name: str, namespace: str, body: str, created: str = "") -> str:
    stamp = f", creationTimestamp: '{created}'" if created else ""
    return f"""
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: {name}, namespace: {namespace}{stamp}}}
spec: {body}
"""


def resolve(text: str, pod_name: str = "web"):
    ctx = context(PODS + text)
    policies = PeerAuthentications(ctx)
    target = next(p for p in ctx.state.pods if p.name == pod_name)
    return policies.for_pod(target), ctx


def test_default_is_permissive():
    resolved, ctx = resolve("")
    assert resolved.mode == "PERMISSIVE"
    assert resolved.for_port(8080) == "PERMISSIVE"
    assert not ctx.diag.errors


def test_workload_beats_namespace_beats_mesh():
    mesh = pa("mesh", "istio-system", "{mtls: {mode: STRICT}}")
    namespace = pa("ns", "default", "{mtls: {mode: PERMISSIVE}}")
    workload = pa("web", "default", "{selector: {matchLabels: {app: web}}, mtls: {mode: DISABLE}}")
    assert resolve(mesh)[0].mode == "STRICT"
    assert resolve(mesh + namespace)[0].mode == "PERMISSIVE"
    assert resolve(mesh + namespace + workload)[0].mode == "DISABLE"
    assert resolve(mesh + namespace + workload, "api")[0].mode == "PERMISSIVE"


def test_unset_inherits_from_the_level_below():
    mesh = pa("mesh", "istio-system", "{mtls: {mode: STRICT}}")
    namespace = pa("ns", "default", "{mtls: {mode: UNSET}}")
    workload = pa("web", "default", "{selector: {matchLabels: {app: web}}}")
    assert resolve(mesh + namespace + workload)[0].mode == "STRICT"


def test_policy_of_another_namespace_does_not_apply():
    assert resolve(pa("ns", "other", "{mtls: {mode: STRICT}}"))[0].mode == "PERMISSIVE"


def test_port_level_modes_and_their_inheritance():
    namespace = pa("ns", "default", "{mtls: {mode: STRICT}}")
    workload = pa(
        "web",
        "default",
        "{selector: {matchLabels: {app: web}}, mtls: {mode: PERMISSIVE},"
        " portLevelMtls: {8080: {mode: DISABLE}, '9090': {mode: UNSET}}}",
    )
    resolved, ctx = resolve(namespace + workload)
    assert resolved.mode == "PERMISSIVE"
    assert resolved.for_port(8080) == "DISABLE"
    assert resolved.for_port(9090) == "PERMISSIVE"  # UNSET: the workload's resolved mode
    assert resolved.for_port(7000) == "PERMISSIVE"
    assert not ctx.diag.errors


def test_port_level_with_unset_workload_mode_inherits_namespace():
    namespace = pa("ns", "default", "{mtls: {mode: STRICT}}")
    workload = pa("web", "default", "{selector: {matchLabels: {app: web}}, portLevelMtls: {8080: {mode: DISABLE}}}")
    resolved, _ = resolve(namespace + workload)
    assert (resolved.mode, resolved.for_port(8080)) == ("STRICT", "DISABLE")


def test_oldest_policy_of_a_level_wins_with_a_warning():
    newer = pa("b-newer", "default", "{mtls: {mode: DISABLE}}", "2024-05-01T00:00:00Z")
    older = pa("a-older", "default", "{mtls: {mode: STRICT}}", "2024-01-01T00:00:00Z")
    resolved, ctx = resolve(newer + older)
    assert resolved.mode == "STRICT"
    assert any(
        "PeerAuthentication default/b-newer" in w and "PeerAuthentication/default/a-older" in w for w in warnings(ctx)
    )


def test_same_creation_time_falls_back_to_input_order():
    first = pa("first", "default", "{mtls: {mode: DISABLE}}")
    second = pa("second", "default", "{mtls: {mode: STRICT}}")
    assert resolve(first + second)[0].mode == "DISABLE"


def test_root_namespace_policy_with_selector_is_ignored():
    root_selected = pa("odd", "istio-system", "{selector: {matchLabels: {app: web}}, mtls: {mode: STRICT}}")
    resolved, ctx = resolve(root_selected)
    assert resolved.mode == "PERMISSIVE"
    assert any("root-namespace policy with a selector is ignored" in w for w in warnings(ctx))


def test_empty_match_labels_is_namespace_level():
    resolved, _ = resolve(pa("ns", "default", "{selector: {matchLabels: {}}, mtls: {mode: STRICT}}"), "api")
    assert resolved.mode == "STRICT"


def test_parity_names_the_deciding_policies():
    namespace = pa("ns", "default", "{mtls: {mode: STRICT}}")
    workload = pa("web", "default", "{selector: {matchLabels: {app: web}}, portLevelMtls: {8080: {mode: DISABLE}}}")
    resolved, ctx = resolve(namespace + workload)
    web = next(p for p in ctx.state.pods if p.name == "web")
    PeerAuthentications(ctx).note(web, resolved)
    entries = {e.feature: e for e in ctx.parity["default/web"]}
    assert entries["PeerAuthentication/default/ns mtls"].status == KEPT
    assert entries["PeerAuthentication/default/web mtls"].detail == "mode UNSET, port 8080: DISABLE"


def test_validation_errors_name_policy_and_field():
    bad = (
        pa("mode", "default", "{mtls: {mode: STRICTER}}")
        + pa("ports", "default", "{selector: {matchLabels: {app: web}}, portLevelMtls: {0: {mode: STRICT}}}")
        + pa("nosel", "default", "{portLevelMtls: {8080: {mode: STRICT}}}")
        + pa("extra", "default", "{mtls: {mode: STRICT}, ports: [1]}")
    )
    _, ctx = resolve(bad)
    assert errors(ctx) == [
        "PeerAuthentication default/mode: spec.mtls.mode: 'STRICTER' is not one of UNSET, DISABLE, PERMISSIVE, STRICT",
        "PeerAuthentication default/ports: spec.portLevelMtls[0]: 0 is not a port number (1-65535)",
        "PeerAuthentication default/nosel: spec.portLevelMtls: needs a workload selector (spec.selector.matchLabels)",
        "PeerAuthentication default/extra: spec.ports: is not a PeerAuthentication field",
    ]
