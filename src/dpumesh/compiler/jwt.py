"""RequestAuthentication → Envoy's jwt_authn filter, per pod, as a sidecar gets it (Istio 1.24 semantics).

* A policy applies to the pods its selector picks in its namespace, to every pod of its namespace without a
  selector, and from the root namespace to every namespace's pods (a selector there still filters).
* A request that carries a token must carry a valid one from a listed issuer, or it is refused with 401; a
  request without a token passes, and AuthorizationPolicy decides (`requestPrincipals`, `request.auth.*`).
* The claims of a validated token are kept in the filter's metadata under `payload`, where the RBAC rules
  of `authz.py` read them (`request_principal`, `claim`).
* Keys come inline (`jwks`). For `jwksUri` istiod fetches the keys and hands them to the sidecar; dpumesh
  does not fetch at compile time, so such a rule is reported unsupported: its tokens are not validated,
  and requestPrincipals and request.auth.* never match them (authorization fails closed).
"""

from __future__ import annotations

import json
from typing import Any

from dpumesh.compiler.context import KEPT, UNSUPPORTED, CompileContext, typed
from dpumesh.state.model import IstioObject, Pod

KIND = "RequestAuthentication"
FILTER = "envoy.filters.http.jwt_authn"
PAYLOAD = "payload"  # metadata key of a validated token's claims
SPEC_FIELDS = {"selector", "targetRef", "targetRefs", "jwtRules"}
RULE_FIELDS = {
    "issuer",
    "audiences",
    "jwksUri",
    "jwks",
    "fromHeaders",
    "fromParams",
    "fromCookies",
    "outputPayloadToHeader",
    "forwardOriginalToken",
    "outputClaimToHeaders",
    "timeout",
}
NO_JWKS_URI = "keys from jwksUri are fetched by istiod for sidecars; dpumesh needs them inline (jwks)"


class RequestAuthentications:
    """Every valid RequestAuthentication of the state; the jwt_authn filter per pod on request."""

    def __init__(self, ctx: CompileContext):
        self.ctx = ctx
        self.policies: list[tuple[IstioObject, dict[str, str], list[dict[str, Any]]]] = []
        for obj in ctx.state.of_kind(KIND):
            parsed = self._parse(obj)
            if parsed is not None:
                self.policies.append((obj, *parsed))

    def _error(self, obj: IstioObject, path: str, message: str) -> None:
        self.ctx.diag.error(KIND, obj.meta.namespace, obj.meta.name, path, message)

    def _parse(self, obj: IstioObject) -> tuple[dict[str, str], list[dict[str, Any]]] | None:
        spec, ok = obj.spec, True
        for key in sorted(set(spec) - SPEC_FIELDS):
            self._error(obj, f"spec.{key}", "is not a RequestAuthentication field")
            ok = False
        if "targetRef" in spec or "targetRefs" in spec:
            self.ctx.diag.warn(KIND, obj.meta.namespace, obj.meta.name, "spec.targetRefs",
                               "targets gateways and waypoints, not sidecars: it applies to no pod here")  # fmt: skip
            return None
        selector = spec.get("selector")
        labels = selector.get("matchLabels") if isinstance(selector, dict) else None
        if selector is not None and not isinstance(labels or {}, dict):
            self._error(obj, "spec.selector.matchLabels", "must be a mapping of labels")
            ok = False
        rules = spec.get("jwtRules") or []
        if not isinstance(rules, list):
            self._error(obj, "spec.jwtRules", "must be a list")
            return None
        providers = []
        for i, rule in enumerate(rules):
            provider = self._provider(obj, f"spec.jwtRules[{i}]", rule)
            ok = ok and provider is not None
            providers.append(provider)
        if not ok:
            return None
        return {str(k): str(v) for k, v in (labels or {}).items()}, providers

    def _provider(self, obj: IstioObject, path: str, rule: Any) -> dict[str, Any] | None:
        """The Envoy provider of one jwtRule; {} for a rule dpumesh cannot check (jwksUri only)."""
        if not isinstance(rule, dict):
            self._error(obj, path, "must be a mapping")
            return None
        problems = [f"{path}.{key}" for key in sorted(set(rule) - RULE_FIELDS)]
        for where in problems:
            self._error(obj, where, "is not a jwtRule field")
        issuer = rule.get("issuer")
        if not isinstance(issuer, str) or not issuer:
            self._error(obj, f"{path}.issuer", "is required")
            return None
        provider: dict[str, Any] = {"issuer": issuer, "payload_in_metadata": PAYLOAD}
        if "jwks" in rule:
            keys = rule["jwks"]
            try:
                parsed = json.loads(keys) if isinstance(keys, str) else None
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict) or not isinstance(parsed.get("keys"), list):
                self._error(obj, f"{path}.jwks", 'must be a JSON Web Key Set: a JSON string with a "keys" list')
                return None
            if not parsed["keys"] or not all(isinstance(k, dict) and k.get("kty") for k in parsed["keys"]):
                self._error(obj, f"{path}.jwks", "must hold at least one key, each with its kty")
                return None
            provider["local_jwks"] = {"inline_string": keys}
        elif not isinstance(rule.get("jwksUri"), str) or not rule["jwksUri"]:
            self._error(obj, f"{path}.jwks", "is required (or jwksUri)")
            return None
        strings = self._strings(obj, path, rule)
        if strings is None or problems:
            return None
        audiences, params, cookies, headers = strings
        if audiences:
            provider["audiences"] = audiences
        if params:
            provider["from_params"] = params
        if cookies:
            provider["from_cookies"] = cookies
        if headers:
            provider["from_headers"] = headers
        provider["forward"] = bool(rule.get("forwardOriginalToken", False))
        if rule.get("outputPayloadToHeader"):
            provider["forward_payload_header"] = str(rule["outputPayloadToHeader"])
        claims = rule.get("outputClaimToHeaders") or []
        if claims:
            if not isinstance(claims, list) or not all(
                isinstance(c, dict) and c.get("header") and c.get("claim") for c in claims
            ):
                self._error(obj, f"{path}.outputClaimToHeaders", "must be a list of {header, claim}")
                return None
            provider["claim_to_headers"] = [{"header_name": c["header"], "claim_name": c["claim"]} for c in claims]
        return provider if "local_jwks" in provider else {}

    def _strings(self, obj: IstioObject, path: str, rule: dict[str, Any]) -> tuple | None:
        lists = {}
        for key in ("audiences", "fromParams", "fromCookies"):
            value = rule.get(key) or []
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                self._error(obj, f"{path}.{key}", "must be a list of non-empty strings")
                return None
            lists[key] = value
        headers = []
        for i, item in enumerate(rule.get("fromHeaders") or []):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
                self._error(obj, f"{path}.fromHeaders[{i}].name", "is required")
                return None
            header = {"name": item["name"]}
            if item.get("prefix"):
                header["value_prefix"] = str(item["prefix"])
            headers.append(header)
        return lists["audiences"], lists["fromParams"], lists["fromCookies"], headers

    # -- per pod ----------------------------------------------------------------------------
    def for_pod(self, pod: Pod) -> list[tuple[IstioObject, list[dict[str, Any]]]]:
        root = self.ctx.mesh.root_namespace
        return [
            (obj, providers)
            for obj, labels, providers in self.policies
            if obj.meta.namespace in (pod.namespace, root) and all(pod.labels.get(k) == v for k, v in labels.items())
        ]

    def http_filters(self, pod: Pod) -> list[dict[str, Any]]:
        """The pod's jwt_authn filter (none when no policy applies): a token, when present, must be valid."""
        providers = {}
        for obj, rules in self.for_pod(pod):
            for i, provider in enumerate(rules):
                if provider:
                    providers[f"{obj.meta.namespace}/{obj.meta.name}/{i}"] = provider
        if not providers:
            return []
        # A token of an issuer no provider names is refused, as a sidecar refuses it.
        requirements = [{"provider_name": name} for name in providers] + [{"allow_missing": {}}]
        requires = {"requires_any": {"requirements": requirements}}
        config = typed(
            "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            providers=providers,
            rules=[{"match": {"prefix": "/"}, "requires": requires}],
        )
        return [{"name": FILTER, "typed_config": config}]

    def note(self, pod: Pod) -> None:
        for obj, rules in self.for_pod(pod):
            for i, provider in enumerate(rules):
                feature = f"{KIND}/{obj.meta.namespace}/{obj.meta.name} jwtRules[{i}]"
                if provider:
                    self.ctx.note([pod], feature, KEPT, f"issuer {provider['issuer']}")
                else:
                    detail = f"{NO_JWKS_URI}; its tokens are not validated, and no request principal matches them"
                    self.ctx.note([pod], feature, UNSUPPORTED, detail)


def claim(path: list[str], value: str, string_match: dict[str, Any]) -> dict[str, Any]:
    """An RBAC principal: the validated token's claim at `path` is `value`, or is a list holding it."""
    keys = [{"key": PAYLOAD}, *({"key": k} for k in path)]
    if value == "*":
        return {"metadata": {"filter": FILTER, "path": keys, "value": {"present_match": True}}}
    as_string = {"metadata": {"filter": FILTER, "path": keys, "value": {"string_match": string_match}}}
    in_list = {
        "metadata": {
            "filter": FILTER,
            "path": keys,
            "value": {"list_match": {"one_of": {"string_match": string_match}}},
        }
    }
    return {"or_ids": {"ids": [as_string, in_list]}}


def request_principal(value: str) -> dict[str, Any]:
    """An RBAC principal for Istio's request principal `<iss>/<sub>` with its `*`, `x*`, `*x` forms.

    The filter keeps `iss` and `sub` apart, and issuers hold slashes themselves, so the joined form is
    matched by every way `value` can be split at a slash.
    """

    def both(iss: dict[str, Any], sub: dict[str, Any]) -> dict[str, Any]:
        return {"and_ids": {"ids": [_claim_is("iss", iss), _claim_is("sub", sub)]}}

    def cut(text: str) -> list[tuple[str, str]]:
        return [(text[:k], text[k + 1 :]) for k, ch in enumerate(text) if ch == "/"]

    def part(kind: str, text: str) -> dict[str, Any]:
        return {kind: text} if text else {"present": True}  # an empty prefix or suffix: any value

    if value == "*":
        options = [_claim_is("iss", {"present": True})]
    elif value.endswith("*"):  # <iss>/<sub> starts with head
        head = value[:-1]
        options = [both({"prefix": head}, {"present": True})]
        options += [both({"exact": iss}, part("prefix", sub)) for iss, sub in cut(head) if iss]
    elif value.startswith("*"):  # <iss>/<sub> ends with tail
        tail = value[1:]
        options = [both({"present": True}, {"suffix": tail})]
        options += [both(part("suffix", iss), {"exact": sub}) for iss, sub in cut(tail) if sub]
    else:
        options = [both({"exact": iss}, {"exact": sub}) for iss, sub in cut(value) if iss and sub]
    if not options:
        return {"not_id": {"any": True}}  # no slash: no token's `iss/sub` can be this
    return options[0] if len(options) == 1 else {"or_ids": {"ids": options}}


def _claim_is(name: str, match: dict[str, Any]) -> dict[str, Any]:
    keys = [{"key": PAYLOAD}, {"key": name}]
    if match.get("present"):
        value: dict[str, Any] = {"present_match": True}
    else:
        value = {"string_match": match}
    return {"metadata": {"filter": FILTER, "path": keys, "value": value}}
