"""VirtualService routing, faults, timeouts and retries, seen by a meshed client through the real Envoy.

State: tests/behaviour/states/outbound. The client is meshed (its TCP is TPROXYed
into the outbound listener); the servers are not, so what they log is exactly
what the dpu-proxy sent them.
"""

from __future__ import annotations

import math
import secrets
from collections import Counter

import pytest

pytestmark = [pytest.mark.envoy, pytest.mark.netns]

CLIENT = "shop/shop-client-0"
REVIEWS = "apps/reviews"
RATINGS = "apps/ratings"


def token() -> str:
    return secrets.token_hex(4)


def pods_of(replies) -> Counter:
    return Counter(r.json()["pod"] for r in replies)


def test_requests_go_through_the_proxy(outbound_lab):
    replies = outbound_lab.call(CLIENT, RATINGS, path=f"/plain-{token()}")
    assert [r.status for r in replies] == [200], replies
    seen = replies[0].json()
    # The server sees the proxy's connection (from the DPU gateway) and the headers Envoy adds.
    assert seen["source"].split(":")[0] == outbound_lab.steering.gateway_ip
    assert "x-request-id" in seen["headers"]
    assert seen["headers"]["host"] == "ratings.apps.svc.cluster.local"


def test_header_match_routes_jason_to_v2(outbound_lab):
    replies = outbound_lab.call(CLIENT, REVIEWS, headers={"end-user": "jason"}, count=30)
    assert {r.status for r in replies} == {200}
    assert pods_of(replies) == Counter({"reviews-v2-0": 30})


def test_weighted_split_80_20(outbound_lab):
    total = 400
    replies = outbound_lab.call(CLIENT, REVIEWS, headers={"end-user": "mary"}, count=total)
    assert {r.status for r in replies} == {200}
    counts = pods_of(replies)
    assert set(counts) <= {"reviews-v1-0", "reviews-v2-0"}
    # Binomial(400, 0.2): mean 80, sigma 8; 4 sigma leaves a 1-in-15,000 chance of a false failure.
    mean, sigma = total * 0.2, math.sqrt(total * 0.2 * 0.8)
    assert abs(counts["reviews-v2-0"] - mean) <= 4 * sigma, counts


def test_subset_no_destination_rule_defines_is_503(outbound_lab):
    path = f"/subset-v3-{token()}"
    replies = outbound_lab.call(CLIENT, REVIEWS, path=path, headers={"x-subset": "v3"}, count=3)
    assert [r.status for r in replies] == [503] * 3, replies
    assert outbound_lab.requests_seen("apps/reviews-v1-0", path) == []
    assert outbound_lab.requests_seen("apps/reviews-v2-0", path) == []


def test_fault_abort_answers_without_calling_the_server(outbound_lab):
    path = f"/abort-{token()}"
    replies = outbound_lab.call(CLIENT, RATINGS, path=path, headers={"x-case": "abort"}, count=10)
    assert [r.status for r in replies] == [503] * 10, replies
    assert all(r.body == "fault filter abort" for r in replies), replies[0].body
    assert outbound_lab.requests_seen("apps/ratings-0", path) == []


def test_fault_delay_holds_each_request(outbound_lab):
    path = f"/delay-{token()}"
    delayed = outbound_lab.call(CLIENT, RATINGS, path=path, headers={"x-case": "delay"}, count=2)
    assert [r.status for r in delayed] == [200, 200], delayed
    # Envoy's timers have millisecond granularity and can fire up to ~1 ms before the client's clock says 1 s.
    assert min(r.elapsed for r in delayed) >= 0.995, [r.elapsed for r in delayed]
    assert len(outbound_lab.requests_seen("apps/ratings-0", path)) == 2
    undelayed = outbound_lab.call(CLIENT, RATINGS, path=path)
    assert undelayed[0].status == 200
    assert undelayed[0].elapsed < 0.5


def test_route_timeout_gives_504(outbound_lab):
    path = f"/sleep/2/{token()}"
    replies = outbound_lab.call(CLIENT, RATINGS, path=path, headers={"x-case": "timeout"})
    assert replies[0].status == 504, replies
    assert replies[0].body == "upstream request timeout"
    assert 0.45 <= replies[0].elapsed < 1.5, replies[0].elapsed
    assert len(outbound_lab.requests_seen("apps/ratings-0", path, kind="sleep")) == 1  # sent, then given up on


def test_no_timeout_unless_the_virtual_service_sets_one(outbound_lab):
    replies = outbound_lab.call(CLIENT, RATINGS, path=f"/sleep/1.2/{token()}")
    assert replies[0].status == 200, replies
    assert replies[0].elapsed >= 1.2


def test_default_retries_recover_from_two_503s(outbound_lab):
    path = f"/fail/2/{token()}"
    replies = outbound_lab.call(CLIENT, RATINGS, path=path)
    assert replies[0].status == 200, replies
    assert [r["status"] for r in outbound_lab.requests_seen("apps/ratings-0", path)] == [503, 503, 200]


def test_default_retries_give_up_after_three_attempts(outbound_lab):
    path = f"/fail/3/{token()}"
    replies = outbound_lab.call(CLIENT, RATINGS, path=path)
    assert replies[0].status == 503, replies
    assert replies[0].body == "failing on purpose\n"  # the server's own answer, passed on
    assert [r["status"] for r in outbound_lab.requests_seen("apps/ratings-0", path)] == [503, 503, 503]


def test_zero_retry_attempts_pass_the_first_503_on(outbound_lab):
    path = f"/fail/2/{token()}"
    replies = outbound_lab.call(CLIENT, RATINGS, path=path, headers={"x-case": "no-retry"})
    assert replies[0].status == 503, replies
    assert [r["status"] for r in outbound_lab.requests_seen("apps/ratings-0", path)] == [503]
