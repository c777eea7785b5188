"""The parity report's outbound views: features most classes have once, then per class what differs, or, for a
class with few of them (a Sidecar scoping it to a few namespaces), its own full list."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

from dpumesh.compiler.context import DIFFERENT, KEPT, UNSUPPORTED, ParityEntry
from dpumesh.compiler.parity import class_views, features_of, report, summary

ALL = frozenset("abcd")
ABC = frozenset("abc")
EVERYWHERE = ParityEntry("VirtualService/shop/everywhere", KEPT, "")
MOST_1 = ParityEntry("VirtualService/shop/most-1", KEPT, "")
MOST_2 = ParityEntry("protocol of most.shop:80", DIFFERENT, "detected")
ONLY_D = ParityEntry("VirtualService/ops/only-d", KEPT, "")
ONLY_A = ParityEntry("EnvoyFilter/shop/only-a", UNSUPPORTED, "")


def _views():
    class_parity = {
        EVERYWHERE: [ALL],
        MOST_1: [ABC, ABC],  # noted twice for the same classes
        MOST_2: [frozenset("ab"), frozenset("c")],  # noted for two groups: their union
        ONLY_D: [frozenset("d")],
        ONLY_A: [frozenset("a")],
    }
    return class_views(class_parity, sorted(ALL))


def test_common_features_and_what_each_class_adds_or_lacks():
    views = _views()
    assert views.common == [EVERYWHERE, MOST_1, MOST_2]
    assert views.alone == {"d"}, "d has one of the three common features: fewer than half"
    assert views.extra["a"] == [ONLY_A] and views.missing["a"] == []
    assert views.extra["b"] == [] and views.missing["b"] == []
    assert views.extra["d"] == [EVERYWHERE, ONLY_D], "the common features d has, then its own"
    assert views.missing["d"] == []
    assert views.counts["a"] == Counter({KEPT: 2, DIFFERENT: 1, UNSUPPORTED: 1})
    assert views.counts["d"] == Counter({KEPT: 2})


def test_a_view_that_lacks_a_common_feature_says_so():
    class_parity = {EVERYWHERE: [ALL], MOST_1: [ABC], MOST_2: [ALL]}
    views = class_views(class_parity, sorted(ALL))
    assert views.alone == frozenset(), "d has two of the three common features"
    assert views.missing["d"] == [MOST_1] and views.missing["a"] == []
    assert views.counts["d"] == Counter({KEPT: 1, DIFFERENT: 1})


def test_a_feature_common_with_two_statuses_is_lacked_one_at_a_time():
    """One feature name, kept for some classes and unsupported for others: a class lacking one keeps the other."""
    sniffed = ParityEntry("protocol of db.shop:5432", KEPT, "detected")
    plain = ParityEntry("protocol of db.shop:5432", UNSUPPORTED, "")
    views = class_views({EVERYWHERE: [ALL], sniffed: [ABC], plain: [frozenset("bcd")]}, sorted(ALL))
    ctx = SimpleNamespace(node="node-1", class_pods={"a": ["shop/a-0"], "d": ["ops/d-0"]})
    pods = {
        "shop/a-0": ({"meshed": True, "view": "a", "features": []}, Counter()),
        "ops/d-0": ({"meshed": True, "view": "d", "features": []}, Counter()),
    }
    parity = report(ctx, views, pods)
    assert parity["views"]["a"]["missing"] == [{"feature": plain.feature, "status": UNSUPPORTED, "detail": ""}]
    statuses = {
        name: [f["status"] for f in features_of(parity, pod) if f["feature"] == plain.feature]
        for name, pod in (("a", "shop/a-0"), ("d", "ops/d-0"))
    }
    assert statuses == {"a": [KEPT], "d": [UNSUPPORTED]}
    assert f"  [does not apply] [{UNSUPPORTED}] {plain.feature}" in summary(parity).decode()


def test_each_pod_gets_its_view_whole_in_the_report_and_the_summary():
    views = _views()
    own = ParityEntry("PeerAuthentication/ops/strict", KEPT, "")
    ctx = SimpleNamespace(node="node-1", class_pods={"a": ["shop/web-0"], "d": ["ops/tool-0"]})
    pods = {
        "shop/web-0": ({"meshed": True, "view": "a", "features": []}, Counter()),
        "ops/tool-0": (
            {"meshed": True, "view": "d", "features": [{"feature": own.feature, "status": KEPT, "detail": ""}]},
            Counter({KEPT: 1}),
        ),
    }
    parity = report(ctx, views, pods)
    assert parity["views"]["d"] == {
        "pods": ["ops/tool-0"],
        "alone": True,
        "features": [
            {"feature": EVERYWHERE.feature, "status": KEPT, "detail": ""},
            {"feature": ONLY_D.feature, "status": KEPT, "detail": ""},
        ],
    }
    assert parity["views"]["a"]["missing"] == []
    assert [f["feature"] for f in features_of(parity, "ops/tool-0")] == [
        EVERYWHERE.feature,
        ONLY_D.feature,
        own.feature,
    ]
    assert [f["feature"] for f in features_of(parity, "shop/web-0")] == [
        EVERYWHERE.feature,
        MOST_1.feature,
        MOST_2.feature,
        ONLY_A.feature,
    ]
    assert parity["totals"] == {KEPT: 2 + 3, DIFFERENT: 1, UNSUPPORTED: 1}
    text = summary(parity).decode()
    assert "Outbound view d (ops/tool-0), all its features:\n  [kept] VirtualService/shop/everywhere\n" in text
    assert f"  [{DIFFERENT}] protocol of most.shop:80 — detected" in text
    assert "does not apply" not in text
