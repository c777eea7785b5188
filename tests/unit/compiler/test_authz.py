"""AuthorizationPolicy → Envoy RBAC: applicability, actions, TCP rules, field translation, validation."""

from __future__ import annotations

from dpumesh.compiler.authz import AuthorizationPolicies
from dpumesh.compiler.context import DIFFERENT, KEPT, UNSUPPORTED
from tests.support.state import context, errors, pod, warnings

PODS = (
    pod("web", "10.244.1.5", "app: web")
    + pod("api", "10.244.1.6", "app: api")
    + pod("db", "10.244.1.7", namespace="other")
)


def ap(name: str, namespace: str, body: str) -> str:
    return f"""
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: {namespace}}}
spec: {body}
"""


def rbac(text: str, pod_name: str = "web", http: bool = True):
    ctx = context(PODS + text)
    policies = AuthorizationPolicies(ctx)
    target = next(p for p in ctx.state.pods if p.name == pod_name)
    return policies.rbac(target, http), ctx, policies, target


def only_policy(rules: list) -> dict:
    [(_, config)] = rules
    [policy] = config["policies"].values()
    return policy


def test_no_policy_no_filter():
    assert rbac("")[0] == []


def test_allow_nothing_when_spec_is_empty():
    rules, *_ = rbac(ap("nothing", "default", "{}"))
    assert rules == [("ALLOW", {"action": "ALLOW", "policies": {}})]


def test_empty_rule_allows_everything():
    rules, *_ = rbac(ap("all", "default", "{rules: [{}]}"))
    assert rules == [
        (
            "ALLOW",
            {
                "action": "ALLOW",
                "policies": {
                    "ns[default]-policy[all]-rule[0]": {"permissions": [{"any": True}], "principals": [{"any": True}]}
                },
            },
        )
    ]


def test_deny_without_rules_denies_nothing():
    assert rbac(ap("deny", "default", "{action: DENY}"))[0] == []


def test_deny_comes_before_allow():
    text = ap("allow", "default", "{rules: [{}]}") + ap("deny", "default", "{action: DENY, rules: [{}]}")
    assert [action for action, _ in rbac(text)[0]] == ["DENY", "ALLOW"]


def test_selectors_namespaces_and_root_namespace():
    text = (
        ap("web-only", "default", "{selector: {matchLabels: {app: web}}, rules: [{}]}")
        + ap("mesh-wide", "istio-system", "{action: DENY, rules: [{to: [{operation: {ports: ['1']}}]}]}")
        + ap("mesh-api", "istio-system", "{selector: {matchLabels: {app: api}}, action: DENY, rules: [{}]}")
    )
    _, ctx, policies, _ = rbac(text)
    names = {p.name: sorted(x.obj.meta.name for x in policies.for_pod(p)) for p in ctx.state.pods}
    assert names == {"web": ["mesh-wide", "web-only"], "api": ["mesh-api", "mesh-wide"], "db": ["mesh-wide"]}


def test_source_fields_translation():
    body = """{rules: [{from: [{source: {
        principals: [cluster.local/ns/default/sa/client, "*", "cluster.local/ns/team*", "*/sa/bot"],
        notNamespaces: ["kube-*"], ipBlocks: [10.1.2.3, 10.2.0.0/16], notRemoteIpBlocks: [192.168.0.0/24]}}]}]}"""
    policy = only_policy(rbac(ap("p", "default", body))[0])
    assert policy["permissions"] == [{"any": True}]
    [principal] = policy["principals"]
    ids = principal["and_ids"]["ids"]
    assert {"not_id": {"remote_ip": {"address_prefix": "192.168.0.0", "prefix_len": 24}}} in ids
    assert {
        "or_ids": {
            "ids": [
                {"direct_remote_ip": {"address_prefix": "10.1.2.3", "prefix_len": 32}},
                {"direct_remote_ip": {"address_prefix": "10.2.0.0", "prefix_len": 16}},
            ]
        }
    } in ids
    assert {"not_id": {"authenticated": {"principal_name": {"safe_regex": {"regex": ".*/ns/kube\\-.*/.*"}}}}} in ids
    names = next(i for i in ids if "or_ids" in i and "authenticated" in i["or_ids"]["ids"][0])["or_ids"]["ids"]
    assert [n["authenticated"]["principal_name"] for n in names] == [
        {"exact": "spiffe://cluster.local/ns/default/sa/client"},
        {"safe_regex": {"regex": ".+"}},
        {"prefix": "spiffe://cluster.local/ns/team"},
        {"suffix": "/sa/bot"},
    ]


def test_operation_and_when_translation():
    body = """{rules: [{
        to: [{operation: {methods: [GET, HEAD], paths: [/api/*, "*.png", /exact], notPorts: ["9000"],
                          hosts: [Web.Example]}}],
        when: [{key: "request.headers[x-tenant]", values: ["a*"], notValues: [admin]},
               {key: destination.port, values: ["8080"]}, {key: source.namespace, values: [default]}]}]}"""
    policy = only_policy(rbac(ap("p", "default", body))[0])
    [permission] = policy["permissions"]
    operation, port = permission["and_rules"]["rules"]
    assert port == {"destination_port": 8080}
    rules = operation["and_rules"]["rules"]
    assert {"header": {"name": ":authority", "string_match": {"exact": "Web.Example", "ignore_case": True}}} in rules
    assert {"not_rule": {"destination_port": 9000}} in rules
    paths = next(r for r in rules if "or_rules" in r and "url_path" in r["or_rules"]["rules"][0])
    assert [p["url_path"]["path"] for p in paths["or_rules"]["rules"]] == [
        {"prefix": "/api/"},
        {"suffix": ".png"},
        {"exact": "/exact"},
    ]
    [principal] = policy["principals"]
    header, namespace = principal["and_ids"]["ids"]
    assert header == {
        "and_ids": {
            "ids": [
                {"header": {"name": "x-tenant", "string_match": {"prefix": "a"}}},
                {"not_id": {"header": {"name": "x-tenant", "string_match": {"exact": "admin"}}}},
            ]
        }
    }
    assert namespace == {"authenticated": {"principal_name": {"safe_regex": {"regex": ".*/ns/default/.*"}}}}


def test_allow_rule_with_http_fields_matches_nothing_on_tcp():
    body = "{rules: [{to: [{operation: {methods: [GET]}}]}, {from: [{source: {namespaces: [default]}}]}]}"
    rules, *_ = rbac(ap("p", "default", body), http=False)
    [(_, config)] = rules
    assert list(config["policies"]) == ["ns[default]-policy[p]-rule[1]"]


def test_deny_rule_drops_http_fields_on_tcp():
    body = "{action: DENY, rules: [{to: [{operation: {methods: [POST], ports: ['5432']}}]}]}"
    tcp = only_policy(rbac(ap("p", "default", body), http=False)[0])
    assert tcp == {"permissions": [{"destination_port": 5432}], "principals": [{"any": True}]}
    http = only_policy(rbac(ap("p", "default", body))[0])
    assert {"header": {"name": ":method", "string_match": {"exact": "POST"}}} in http["permissions"][0]["and_rules"][
        "rules"
    ]


def test_request_principals_and_claims_read_the_validated_token():
    """requestPrincipals and request.auth.* match the claims jwt_authn keeps for a valid token; none without one."""
    allow = ap("jwt", "default", "{rules: [{from: [{source: {requestPrincipals: ['*']}}]}]}")
    deny = ap("nojwt", "default", "{action: DENY, rules: [{when: [{key: 'request.auth.claims[iss]', values: [x]}]}]}")
    rules, ctx, policies, web = rbac(allow + deny)
    token_claim = {"filter": "envoy.filters.http.jwt_authn", "path": [{"key": "payload"}, {"key": "iss"}]}
    assert rules == [
        (
            "DENY",
            {
                "action": "DENY",
                "policies": {
                    "ns[default]-policy[nojwt]-rule[0]": {
                        "permissions": [{"any": True}],
                        "principals": [
                            {
                                "or_ids": {
                                    "ids": [
                                        {"metadata": {**token_claim, "value": {"string_match": {"exact": "x"}}}},
                                        {
                                            "metadata": {
                                                **token_claim,
                                                "value": {"list_match": {"one_of": {"string_match": {"exact": "x"}}}},
                                            }
                                        },
                                    ]
                                }
                            }
                        ],
                    }
                },
            },
        ),
        (
            "ALLOW",
            {
                "action": "ALLOW",
                "policies": {
                    "ns[default]-policy[jwt]-rule[0]": {
                        "permissions": [{"any": True}],
                        "principals": [{"metadata": {**token_claim, "value": {"present_match": True}}}],
                    }
                },
            },
        ),
    ]
    policies.note(web)
    statuses = {e.feature: e.status for e in ctx.parity["default/web"]}
    assert UNSUPPORTED not in statuses.values()


def test_custom_denies_its_matches_and_audit_changes_nothing():
    custom = ap(
        "ext", "default", "{action: CUSTOM, provider: {name: opa}, rules: [{to: [{operation: {paths: [/admin*]}}]}]}"
    )
    audit = ap("audit", "default", "{action: AUDIT, rules: [{}]}")
    rules, ctx, policies, web = rbac(custom + audit)
    assert [a for a, _ in rules] == ["DENY"]
    policies.note(web)
    status = {e.feature: e.status for e in ctx.parity["default/web"]}
    assert status["AuthorizationPolicy/default/ext"] == DIFFERENT
    assert status["AuthorizationPolicy/default/audit"] == UNSUPPORTED


def test_parity_for_kept_policies_and_address_matches():
    text = ap("p", "default", "{rules: [{from: [{source: {ipBlocks: [10.0.0.0/8]}}]}]}")
    _, ctx, policies, web = rbac(text)
    policies.note(web)
    status = {e.feature: e.status for e in ctx.parity["default/web"]}
    assert status == {
        "AuthorizationPolicy/default/p": KEPT,
        "AuthorizationPolicy/default/p rules[0].from[0].source.ipBlocks": DIFFERENT,
    }


def test_target_refs_do_not_apply_to_sidecars():
    text = ap(
        "gw", "default", "{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}], rules: [{}]}"
    )
    rules, ctx, *_ = rbac(text)
    assert rules == []
    assert any("targets gateways and waypoints" in w for w in warnings(ctx))


def test_validation_errors_name_policy_and_field():
    text = (
        ap("a", "default", "{action: AUDITLOG}")
        + ap("b", "default", "{rules: [{from: [{source: {ipBlocks: [not-an-ip]}}]}]}")
        + ap("c", "default", "{rules: [{when: [{key: request.time, values: [x]}]}]}")
        + ap("d", "default", "{rules: [{to: [{operation: {methods: GET}}]}]}")
        + ap("e", "default", "{rules: [{to: [{operation: {ports: ['8080'], paths: ['']}}]}]}")
        + ap("f", "default", "{rules: [{from: [{}]}]}")
        + ap("g", "default", "{selector: {matchLabels: {app: web}}, targetRef: {kind: Service, name: x}}")
        + ap("h", "default", "{rules: [{when: [{key: source.ip, notValues: [300.1.1.1]}]}]}")
        + ap("i", "default", "{rules: [{what: []}]}")
    )
    _, ctx, *_ = rbac(text)
    expected = {
        "a": "spec.action: 'AUDITLOG' is not one of ALLOW, DENY, AUDIT, CUSTOM",
        "b": "spec.rules[0].from[0].source.ipBlocks[0]: 'not-an-ip' is not an IP address or CIDR",
        "c": "spec.rules[0].when[0].key: 'request.time' is not a supported condition attribute",
        "d": "spec.rules[0].to[0].operation.methods: must be a non-empty list",
        "e": "spec.rules[0].to[0].operation.paths[0]: '' is not a non-empty string",
        "f": "spec.rules[0].from[0].source: must be a non-empty mapping",
        "g": "spec.selector: cannot be combined with targetRef/targetRefs",
        "h": "spec.rules[0].when[0].notValues[0]: '300.1.1.1' is not an IP address or CIDR",
        "i": "spec.rules[0].what: is not a rule field (from, to, when)",
    }
    assert sorted(errors(ctx)) == sorted(f"AuthorizationPolicy default/{name}: {msg}" for name, msg in expected.items())
