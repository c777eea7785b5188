"""Each source pod presents its own certificate, also when it shares a class with pods of other identities.

State: tests/behaviour/states/outbound. open/open-client-0 (service account `default`)
and open/open-auditor-0 (service account `auditor`) have the same view, so they share
one class and every cluster; the class chain names each connection's certificate and
the node's SDS service hands it to the proxy. open/whoami is meshed and on the same
node, so each call goes out through the outbound listener with Istio mTLS and back in
through the inbound listener, whose XFCC header shows the identity it verified.
"""

from __future__ import annotations

import re

import pytest
from support.compiled import Compiled

pytestmark = [pytest.mark.envoy, pytest.mark.netns]

CLIENTS = {"open/open-client-0": "default", "open/open-auditor-0": "auditor"}
WHOAMI_CONNECTIONS = "cluster.outbound|7070||whoami.open.svc.cluster.local.upstream_cx_total"


def class_of(lab, pod: str) -> str:
    return Compiled(lab.bundle, lab.state).class_of(lab.pod(pod).ip)


def peer_identity(reply) -> str:
    xfcc = reply.json()["headers"]["x-forwarded-client-cert"]
    return re.search(r"URI=([^;,]+)", xfcc).group(1)


def test_two_identities_of_one_class_share_the_class(outbound_lab):
    assert class_of(outbound_lab, "open/open-client-0") == class_of(outbound_lab, "open/open-auditor-0")


def test_each_pod_presents_its_own_certificate_and_never_borrows_a_connection(outbound_lab):
    before = outbound_lab.counter(WHOAMI_CONNECTIONS)
    # Interleaved, so that a connection pooled for one identity would be reused by the other if pools were shared.
    for _ in range(4):
        for pod, account in CLIENTS.items():
            reply = outbound_lab.call(pod, "open/whoami", path="/whoami")[0]
            assert reply.status == 200, reply
            assert peer_identity(reply) == f"spiffe://cluster.local/ns/open/sa/{account}"
    # At least one upstream connection per identity (the proxy keeps them alive between requests).
    assert outbound_lab.counter(WHOAMI_CONNECTIONS) - before >= len(CLIENTS)
