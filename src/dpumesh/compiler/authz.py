"""AuthorizationPolicy → Envoy RBAC filters, per pod, as a sidecar gets them.

Semantics kept from Istio:
* a policy applies to the pods its selector picks in its namespace; without a selector to the
  whole namespace; in the root namespace to every namespace (a selector there still filters);
* DENY is checked before ALLOW; when any ALLOW policy applies, a request no ALLOW rule matches
  is denied; `spec: {}` allows nothing and `rules: [{}]` allows everything;
* on TCP ports, an ALLOW rule that uses HTTP-only fields matches nothing, and a DENY rule drops
  those fields (so it denies more);
* CUSTOM (no extension providers here) denies what its rules match, as istiod does for an
  unknown provider; AUDIT changes no traffic and is reported unsupported.

requestPrincipals and request.auth.* read the claims of the token RequestAuthentication validated
(`jwt.py`); without a valid token they match nothing, as with a sidecar.

Conditions dpumesh cannot evaluate (path templates; experimental.*) are handled like HTTP-only
fields on TCP: an ALLOW rule using one never matches, a DENY rule ignores it. Each is reported in
the parity report.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from dpumesh.compiler.context import DIFFERENT, KEPT, UNSUPPORTED, CompileContext, typed
from dpumesh.compiler.jwt import claim, request_principal
from dpumesh.state.model import IstioObject, Pod

KIND = "AuthorizationPolicy"
ACTIONS = ("ALLOW", "DENY", "AUDIT", "CUSTOM")
SPEC_FIELDS = {"selector", "targetRef", "targetRefs", "action", "provider", "rules"}
SOURCE_FIELDS = (
    "principals",
    "notPrincipals",
    "requestPrincipals",
    "notRequestPrincipals",
    "namespaces",
    "notNamespaces",
    "ipBlocks",
    "notIpBlocks",
    "remoteIpBlocks",
    "notRemoteIpBlocks",
)
OPERATION_FIELDS = ("hosts", "notHosts", "ports", "notPorts", "methods", "notMethods", "paths", "notPaths")
SIMPLE_WHEN_KEYS = (
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "destination.ip",
    "destination.port",
    "connection.sni",
)
AUTH_WHEN = re.compile(r"request\.auth\.(principal|audiences|presenter|claims(\[[^\[\]]+\])+)$")
HEADER_WHEN = re.compile(r"request\.headers\[([^\[\]]+)\]$")
CLAIM_PATH = re.compile(r"\[([^\[\]]+)\]")
ADDRESS_DETAIL = (
    "matches the address the connection arrives from: the calling proxy's, not the client pod's, for meshed callers"
)
DENIED_BODY = "RBAC: access denied"  # Envoy's reply to a denied request, as a sidecar sends it


@dataclass
class Clause:
    """One field or condition: OR of `matchers`, maybe negated, on the principal or permission side."""

    path: str
    principal: bool
    matchers: list[dict[str, Any]]
    negate: bool = False
    http_only: bool = False
    unsupported: str = ""  # why dpumesh cannot evaluate it
    address: bool = False  # matches a connection address (see ADDRESS_DETAIL)


@dataclass
class Rule:
    index: int
    sources: list[list[Clause]] | None  # None: no `from` (any source)
    operations: list[list[Clause]] | None  # None: no `to` (any operation)
    conditions: list[Clause] = field(default_factory=list)

    def clauses(self) -> list[Clause]:
        nested = [c for group in (self.sources or []) + (self.operations or []) for c in group]
        return nested + self.conditions


@dataclass
class Policy:
    obj: IstioObject
    action: str
    labels: dict[str, str]
    rules: list[Rule]

    @property
    def ref(self) -> str:
        return f"{KIND}/{self.obj.meta.namespace}/{self.obj.meta.name}"


class _Parser:
    """Validates one AuthorizationPolicy and turns its rules into clauses."""

    def __init__(self, ctx: CompileContext, obj: IstioObject):
        self.ctx, self.obj, self.ok = ctx, obj, True

    def error(self, path: str, message: str) -> None:
        self.ok = False
        self.ctx.diag.error(KIND, self.obj.meta.namespace, self.obj.meta.name, path, message)

    def parse(self) -> Policy | None:
        spec = self.obj.spec
        for key in sorted(set(spec) - SPEC_FIELDS):
            self.error(f"spec.{key}", "is not an AuthorizationPolicy field")
        action = spec.get("action", "ALLOW")
        if action not in ACTIONS:
            self.error("spec.action", f"{action!r} is not one of {', '.join(ACTIONS)}")
        provider = spec.get("provider")
        if action == "CUSTOM" and not (isinstance(provider, dict) and isinstance(provider.get("name"), str)):
            self.error("spec.provider.name", "is required with action CUSTOM")
        if provider is not None and action != "CUSTOM":
            self.error("spec.provider", "is only used with action CUSTOM")
        labels = self.selector(spec)
        raw_rules = spec.get("rules")
        if raw_rules is not None and not isinstance(raw_rules, list):
            self.error("spec.rules", "must be a list")
            raw_rules = []
        rules = [r for r in (self.rule(i, raw) for i, raw in enumerate(raw_rules or [])) if r is not None]
        if not self.ok:
            return None
        return Policy(self.obj, action, labels, rules)

    def selector(self, spec: dict[str, Any]) -> dict[str, str]:
        selector = spec.get("selector")
        if selector is not None and ("targetRef" in spec or "targetRefs" in spec):
            self.error("spec.selector", "cannot be combined with targetRef/targetRefs")
        if selector is None:
            return {}
        match = selector.get("matchLabels") if isinstance(selector, dict) else None
        if not isinstance(selector, dict) or not isinstance(match or {}, dict):
            self.error("spec.selector.matchLabels", "must be a mapping of labels")
            return {}
        return {str(k): str(v) for k, v in (match or {}).items()}

    def rule(self, index: int, raw: Any) -> Rule | None:
        path = f"spec.rules[{index}]"
        if not isinstance(raw, dict):
            self.error(path, "must be a mapping")
            return None
        for key in sorted(set(raw) - {"from", "to", "when"}):
            self.error(f"{path}.{key}", "is not a rule field (from, to, when)")
        sources = self.groups(f"{path}.from", raw.get("from"), "source", SOURCE_FIELDS, self.source_clause)
        operations = self.groups(f"{path}.to", raw.get("to"), "operation", OPERATION_FIELDS, self.operation_clause)
        conditions = []
        when = raw.get("when")
        if when is not None and not isinstance(when, list):
            self.error(f"{path}.when", "must be a list")
            when = []
        for i, cond in enumerate(when or []):
            clause = self.condition(f"{path}.when[{i}]", cond)
            if clause is not None:
                conditions.append(clause)
        return Rule(index, sources, operations, conditions)

    def groups(self, path, raw, inner, fields, make) -> list[list[Clause]] | None:
        if raw is None:
            return None
        if not isinstance(raw, list):
            self.error(path, "must be a list")
            return None
        groups = []
        for i, item in enumerate(raw):
            where = f"{path}[{i}].{inner}"
            body = item.get(inner) if isinstance(item, dict) else None
            if not isinstance(body, dict) or not body:
                self.error(where, "must be a non-empty mapping")
                continue
            clauses = []
            for key in sorted(body):
                if key not in fields:
                    self.error(f"{where}.{key}", f"is not a {inner} field")
                    continue
                values = self.values(f"{where}.{key}", body[key])
                if values is not None:
                    clause = make(f"{where}.{key}", key, values)
                    if clause is not None:
                        clauses.append(clause)
            groups.append(clauses)
        return groups

    def values(self, path: str, raw: Any) -> list[str] | None:
        if not isinstance(raw, list) or not raw:
            self.error(path, "must be a non-empty list")
            return None
        values = []
        for i, value in enumerate(raw):
            if isinstance(value, int) and not isinstance(value, bool):
                value = str(value)  # ports are strings in the API; numbers are accepted as kubectl would coerce
            if not isinstance(value, str) or not value:
                self.error(f"{path}[{i}]", f"{value!r} is not a non-empty string")
                return None
            values.append(value)
        return values

    # -- field translation ------------------------------------------------------------------
    def source_clause(self, path: str, key: str, values: list[str]) -> Clause | None:
        negate = key.startswith("not")
        base = key[3].lower() + key[4:] if negate else key
        if base == "principals":
            return Clause(path, True, [_principal(v) for v in values], negate)
        if base == "namespaces":
            return Clause(path, True, [_namespace(v) for v in values], negate)
        if base == "requestPrincipals":
            return Clause(path, True, [request_principal(v) for v in values], negate, http_only=True)
        cidrs = self.cidrs(path, values)
        if cidrs is None:
            return None
        kind = "direct_remote_ip" if base == "ipBlocks" else "remote_ip"
        return Clause(path, True, [{kind: c} for c in cidrs], negate, address=True)

    def operation_clause(self, path: str, key: str, values: list[str]) -> Clause | None:
        negate = key.startswith("not")
        base = key[3].lower() + key[4:] if negate else key
        if base == "ports":
            ports = self.ports(path, values)
            return None if ports is None else Clause(path, False, [{"destination_port": p} for p in ports], negate)
        if base == "hosts":
            return Clause(path, False, [{"header": _host(v)} for v in values], negate, http_only=True)
        if base == "methods":
            matchers = [{"header": {"name": ":method", "string_match": {"exact": v}}} for v in values]
            return Clause(path, False, matchers, negate, http_only=True)
        if any("{" in v or "}" in v for v in values):
            return Clause(path, False, [], negate, http_only=True, unsupported="path templates are not supported")
        matchers = [{"url_path": {"path": _string_match(v)}} for v in values]
        return Clause(path, False, matchers, negate, http_only=True)

    def condition(self, path: str, raw: Any) -> Clause | None:
        if not isinstance(raw, dict) or not isinstance(raw.get("key"), str) or not raw.get("key"):
            self.error(f"{path}.key", "is required")
            return None
        key = raw["key"]
        lists = {}
        for name in ("values", "notValues"):
            if raw.get(name) is not None:
                lists[name] = self.values(f"{path}.{name}", raw[name])
                if lists[name] is None:
                    return None
        if not lists:
            self.error(path, f"condition {key!r} needs values or notValues")
            return None
        clauses = [self.condition_values(path, name, key, vals) for name, vals in lists.items()]
        if any(c is None for c in clauses):
            return None
        if len(clauses) == 1 or clauses[0].unsupported:
            return clauses[0]
        # values AND NOT notValues: one clause on the same side, all AND-ed via a nested matcher
        positive, negative = clauses
        side = "and_ids" if positive.principal else "and_rules"
        items = "ids" if positive.principal else "rules"
        combined = {side: {items: [_either(positive), _either(negative)]}}
        return Clause(
            path,
            positive.principal,
            [combined],
            http_only=positive.http_only,
            unsupported=positive.unsupported,
            address=positive.address,
        )

    def condition_values(self, path: str, list_name: str, key: str, values: list[str]) -> Clause | None:
        negate = list_name == "notValues"
        header = HEADER_WHEN.match(key)
        if header:
            matchers = [{"header": _header(header.group(1), v)} for v in values]
            return Clause(path, True, matchers, negate, http_only=True)
        auth = AUTH_WHEN.match(key)
        if auth:
            return Clause(path, True, [_auth_attribute(auth.group(1), v) for v in values], negate, http_only=True)
        if key.startswith("experimental.envoy.filters."):
            return Clause(path, False, [], negate, unsupported=f"{key} is not supported")
        if key not in SIMPLE_WHEN_KEYS:
            self.error(f"{path}.key", f"{key!r} is not a supported condition attribute")
            return None
        if key == "source.principal":
            return Clause(path, True, [_principal(v) for v in values], negate)
        if key == "source.namespace":
            return Clause(path, True, [_namespace(v) for v in values], negate)
        if key == "destination.port":
            ports = self.ports(f"{path}.{list_name}", values)
            return None if ports is None else Clause(path, False, [{"destination_port": p} for p in ports], negate)
        if key == "connection.sni":
            return Clause(path, False, [{"requested_server_name": _string_match(v)} for v in values], negate)
        cidrs = self.cidrs(f"{path}.{list_name}", values)
        if cidrs is None:
            return None
        if key == "destination.ip":
            return Clause(path, False, [{"destination_ip": c} for c in cidrs], negate)
        kind = "direct_remote_ip" if key == "source.ip" else "remote_ip"
        return Clause(path, True, [{kind: c} for c in cidrs], negate, address=True)

    def cidrs(self, path: str, values: list[str]) -> list[dict[str, Any]] | None:
        out = []
        for i, value in enumerate(values):
            try:
                net = ipaddress.ip_network(value, strict=False)
            except ValueError:
                self.error(f"{path}[{i}]", f"{value!r} is not an IP address or CIDR")
                return None
            out.append({"address_prefix": str(net.network_address), "prefix_len": net.prefixlen})
        return out

    def ports(self, path: str, values: list[str]) -> list[int] | None:
        out = []
        for i, value in enumerate(values):
            if not value.isdigit() or not 1 <= int(value) <= 65535:
                self.error(f"{path}[{i}]", f"{value!r} is not a port number (1-65535)")
                return None
            out.append(int(value))
        return out


def _string_match(value: str, prefix: str = "") -> dict[str, Any]:
    """Istio's value syntax: `*` any non-empty, `x*` prefix, `*x` suffix, else exact."""
    if value == "*":
        return {"safe_regex": {"regex": ".+"}}
    if value.startswith("*"):
        return {"suffix": value[1:]}
    if value.endswith("*"):
        return {"prefix": prefix + value[:-1]}
    return {"exact": prefix + value}


def _auth_attribute(attribute: str, value: str) -> dict[str, Any]:
    """request.auth.<attribute> of the validated token: principal, audiences, presenter or claims[a][b]…"""
    if attribute == "principal":
        return request_principal(value)
    path = {"audiences": ["aud"], "presenter": ["azp"]}.get(attribute) or CLAIM_PATH.findall(attribute)
    return claim(path, value, _string_match(value))


def _principal(value: str) -> dict[str, Any]:
    return {"authenticated": {"principal_name": _string_match(value, "spiffe://")}}


def _namespace(value: str) -> dict[str, Any]:
    pattern = ".*".join(re.escape(part) for part in value.split("*"))
    return {"authenticated": {"principal_name": {"safe_regex": {"regex": f".*/ns/{pattern}/.*"}}}}


def _header(name: str, value: str) -> dict[str, Any]:
    if value == "*":
        return {"name": name, "present_match": True}
    return {"name": name, "string_match": _string_match(value)}


def _host(value: str) -> dict[str, Any]:
    if value == "*":
        return {"name": ":authority", "present_match": True}
    return {"name": ":authority", "string_match": {**_string_match(value), "ignore_case": True}}


def _either(clause: Clause) -> dict[str, Any]:
    """The clause as one Envoy principal/permission: OR of its matchers, negated if needed."""
    if clause.principal:
        one = clause.matchers[0] if len(clause.matchers) == 1 else {"or_ids": {"ids": clause.matchers}}
        return {"not_id": one} if clause.negate else one
    one = clause.matchers[0] if len(clause.matchers) == 1 else {"or_rules": {"rules": clause.matchers}}
    return {"not_rule": one} if clause.negate else one


def _all(items: list[dict[str, Any]], principal: bool) -> dict[str, Any]:
    if not items:
        return {"any": True}
    if len(items) == 1:
        return items[0]
    return {"and_ids": {"ids": items}} if principal else {"and_rules": {"rules": items}}


def _any(items: list[dict[str, Any]], principal: bool) -> dict[str, Any]:
    if len(items) == 1:
        return items[0]
    return {"or_ids": {"ids": items}} if principal else {"or_rules": {"rules": items}}


def _dropped(clause: Clause, http: bool) -> bool:
    return bool(clause.unsupported) or (clause.http_only and not http)


def envoy_policy(rule: Rule, allow: bool, http: bool) -> dict[str, Any] | None:
    """One rule as an Envoy RBAC policy; None when it can never match (ALLOW with dropped fields)."""
    if allow and any(_dropped(c, http) for c in rule.clauses()):
        return None

    def keep(clauses: list[Clause]) -> list[Clause]:
        return [c for c in clauses if not _dropped(c, http)]

    principals = [_either(c) for c in keep([c for c in rule.conditions if c.principal])]
    permissions = [_either(c) for c in keep([c for c in rule.conditions if not c.principal])]
    if rule.sources is not None:
        principals.insert(0, _any([_all([_either(c) for c in keep(g)], True) for g in rule.sources], True))
    if rule.operations is not None:
        permissions.insert(0, _any([_all([_either(c) for c in keep(g)], False) for g in rule.operations], False))
    return {"permissions": [_all(permissions, False)], "principals": [_all(principals, True)]}


def parse(ctx: CompileContext, obj: IstioObject) -> Policy | None:
    return _Parser(ctx, obj).parse()


class AuthorizationPolicies:
    """Every valid AuthorizationPolicy of the state; RBAC filters per pod on request."""

    def __init__(self, ctx: CompileContext):
        self.ctx = ctx
        self.policies = []
        for obj in ctx.state.of_kind(KIND):
            policy = parse(ctx, obj)
            if policy is None:
                continue
            if "targetRef" in obj.spec or "targetRefs" in obj.spec:
                ctx.diag.warn(
                    KIND, obj.meta.namespace, obj.meta.name, "spec.targetRefs",
                    "targets gateways and waypoints, not sidecars: it applies to no pod here",
                )  # fmt: skip
                continue
            self.policies.append(policy)
        self._filters: dict[tuple[str, bool], list[dict[str, Any]]] = {}

    def for_pod(self, pod: Pod) -> list[Policy]:
        root = self.ctx.mesh.root_namespace
        return [
            p
            for p in self.policies
            if p.obj.meta.namespace in (pod.namespace, root)
            and all(pod.labels.get(k) == v for k, v in p.labels.items())
        ]

    def rbac(self, pod: Pod, http: bool) -> list[tuple[str, dict[str, Any]]]:
        """[(action, Envoy RBAC rules)] in evaluation order: DENY (with CUSTOM) then ALLOW."""
        policies = self.for_pod(pod)
        deny: dict[str, Any] = {}
        allow: dict[str, Any] = {}
        for policy in policies:
            if policy.action == "AUDIT":
                continue
            target = allow if policy.action == "ALLOW" else deny
            meta = policy.obj.meta
            for rule in policy.rules:
                envoy = envoy_policy(rule, policy.action == "ALLOW", http)
                if envoy is not None:
                    target[f"ns[{meta.namespace}]-policy[{meta.name}]-rule[{rule.index}]"] = envoy
        out = []
        if deny:
            out.append(("DENY", {"action": "DENY", "policies": deny}))
        if any(p.action == "ALLOW" for p in policies):
            out.append(("ALLOW", {"action": "ALLOW", "policies": allow}))
        return out

    def http_filters(self, pod: Pod) -> list[dict[str, Any]]:
        return [
            {
                "name": "envoy.filters.http.rbac",
                "typed_config": typed("envoy.extensions.filters.http.rbac.v3.RBAC", rules=r),
            }
            for _, r in self.rbac(pod, True)
        ]

    def network_filters(self, pod: Pod) -> list[dict[str, Any]]:
        return [
            {
                "name": "envoy.filters.network.rbac",
                "typed_config": typed("envoy.extensions.filters.network.rbac.v3.RBAC", rules=r, stat_prefix="tcp."),
            }
            for _, r in self.rbac(pod, False)
        ]

    def note(self, pod: Pod) -> None:
        """Parity entries for every policy (and every field dpumesh treats differently) on `pod`."""
        for policy in self.for_pod(pod):
            if policy.action == "AUDIT":
                self.ctx.note([pod], policy.ref, UNSUPPORTED, "AUDIT: no audit log entries; traffic is unaffected")
                continue
            if policy.action == "CUSTOM":
                detail = "no extension providers: requests its rules match are denied (istiod: unknown provider)"
                self.ctx.note([pod], policy.ref, DIFFERENT, detail)
            else:
                self.ctx.note([pod], policy.ref, KEPT, f"action {policy.action}, {len(policy.rules)} rule(s)")
            for rule in policy.rules:
                for clause in rule.clauses():
                    feature = f"{policy.ref} {clause.path.removeprefix('spec.')}"
                    if clause.unsupported:
                        effect = "the rule never matches" if policy.action == "ALLOW" else "the rule ignores it"
                        self.ctx.note([pod], feature, UNSUPPORTED, f"{clause.unsupported}; {effect}")
                    elif clause.address:
                        self.ctx.note([pod], feature, DIFFERENT, ADDRESS_DETAIL)
