"""RequestAuthentication → Envoy's jwt_authn filter, per pod, as a sidecar gets it (Istio 1.24 semantics).

* A policy applies to the pods its selector picks in its namespace, to every pod of its namespace without a
  selector, and from the root namespace to every namespace's pods (a selector there still filters).
* A request that carries a token must carry a valid one from a listed issuer, or it is refused with 401; a
  request without a token passes, and AuthorizationPolicy decides (`requestPrincipals`, `request.auth.*`).
* The claims of a validated token are kept in the filter's metadata under `payload`, where the RBAC rules
  of `authz.py` read them (`request_principal`, `claim`).
* Keys come inline (`jwks`), or from `jwksUri`. For a sidecar istiod fetches those keys and hands them over
  inline; here the proxy fetches them itself (Envoy's remote JWKS, through a cluster of its own per URI
  host), before the inbound listener takes traffic, and again every 20 minutes, istiod's refresh interval.
  The config stays the same when the keys rotate. A fetch that fails leaves tokens of that issuer refused
  with 401, as istiod's placeholder keys refuse them.
"""

from __future__ import annotations

import ipaddress
import json
import urllib.parse
from typing import Any

from dpumesh.compiler import tls
from dpumesh.compiler.clusters import upstream_mark
from dpumesh.compiler.context import DIFFERENT, KEPT, CompileContext, typed
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
JWKS_REFRESH = "1200s"  # istiod's PILOT_JWT_PUB_KEY_REFRESH_INTERVAL default
JWKS_TIMEOUT = "5s"  # one fetch of a key set, as istiod's


class RequestAuthentications:
    """Every valid RequestAuthentication of the state; the jwt_authn filter per pod on request."""

    def __init__(self, ctx: CompileContext):
        self.ctx = ctx
        self.policies: list[tuple[IstioObject, dict[str, str], list[dict[str, Any]]]] = []
        self.jwks_clusters: dict[str, dict[str, Any]] = {}  # the clusters that fetch jwksUri keys, by name
        self._used_clusters: set[str] = set()
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
        """The Envoy provider of one jwtRule."""
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
        else:
            cluster = self._jwks_cluster(obj, f"{path}.jwksUri", rule["jwksUri"])
            if cluster is None:
                return None
            provider["remote_jwks"] = {
                "http_uri": {"uri": rule["jwksUri"], "cluster": cluster, "timeout": JWKS_TIMEOUT},
                "cache_duration": JWKS_REFRESH,
                # Fetched before the listener takes traffic (a failed fetch ends the wait too, and is retried).
                "async_fetch": {},
            }
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
        return provider

    def _jwks_cluster(self, obj: IstioObject, path: str, uri: str) -> str | None:
        """The name of the cluster that fetches a jwksUri: one per scheme, host and port."""
        parts = urllib.parse.urlsplit(uri)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self._error(obj, path, f"{uri!r} is not an http or https URL")
            return None
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port == 0:
            self._error(obj, path, f"{uri!r} names no port 1-65535")
            return None
        host, https = parts.hostname, parts.scheme == "https"
        port = port or (443 if https else 80)
        name = f"jwks|{port}|{parts.scheme}|{host}"
        if name in self.jwks_clusters:
            return name
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        address = {"socket_address": {"address": host, "port_value": port}}
        cluster: dict[str, Any] = {
            "name": name,
            "type": "STATIC" if literal else "STRICT_DNS",
            "connect_timeout": JWKS_TIMEOUT,
            # The proxy's own outbound connection, steered as the PassthroughCluster's are.
            "upstream_bind_config": upstream_mark(self.ctx.mesh.proxy.capture_mark),
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
            },
        }
        if https:
            # Verified against the system CA bundle, for the URI's host, as istiod's own fetch is (no SNI for an
            # address).
            settings = {"mode": "SIMPLE", "subjectAltNames": [host], **({} if literal else {"sni": host})}
            where = (KIND, obj.meta.namespace, obj.meta.name)
            cluster["transport_socket"] = tls.simple_client_transport_socket(self.ctx, settings, where)
        self.jwks_clusters[name] = cluster
        return name

    def clusters(self) -> list[dict[str, Any]]:
        """The jwksUri clusters the pods' filters (`http_filters`) name."""
        return [self.jwks_clusters[name] for name in sorted(self._used_clusters)]

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
                providers[f"{obj.meta.namespace}/{obj.meta.name}/{i}"] = provider
                if "remote_jwks" in provider:
                    self._used_clusters.add(provider["remote_jwks"]["http_uri"]["cluster"])
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
                detail = f"issuer {provider['issuer']}"
                if "remote_jwks" in provider:
                    uri = provider["remote_jwks"]["http_uri"]["uri"]
                    detail += f"; the proxy fetches the keys from {uri} itself, where istiod fetches them for sidecars"
                    self.ctx.note([pod], feature, DIFFERENT, detail)
                else:
                    self.ctx.note([pod], feature, KEPT, detail)


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
