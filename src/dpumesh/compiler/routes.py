"""VirtualService HTTP routes → Envoy routes, with Istio's defaults.

Functions take `cluster_of(destination, port) -> name` so the same code both
validates a VirtualService (once, node-independently) and compiles it for a
source class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dpumesh.compiler.context import typed
from dpumesh.compiler.durations import envoy_duration, parse_duration
from dpumesh.compiler.regex import re2_problem
from dpumesh.errors import Diagnostics
from dpumesh.state.model import IstioObject

ClusterOf = Callable[[dict[str, Any], int], str]

# Istio 1.24's retry policy when a route sets none.
DEFAULT_RETRY = {
    "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
    "num_retries": 2,
    "retriable_status_codes": [503],
    "retry_host_predicate": [
        {
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": typed("envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"),
        }
    ],
    "host_selection_retry_max_attempts": "5",
}
RETRY_ON = {
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
}
REDIRECT_CODES = {
    301: "MOVED_PERMANENTLY",
    302: "FOUND",
    303: "SEE_OTHER",
    307: "TEMPORARY_REDIRECT",
    308: "PERMANENT_REDIRECT",
}
STRING_MATCH_KINDS = {"exact": "exact", "prefix": "prefix", "regex": "safe_regex"}


class RouteBuilder:
    def __init__(self, diag: Diagnostics, vs: IstioObject):
        self.diag = diag
        self.vs = vs

    def error(self, field_: str, message: str) -> None:
        self.diag.error("VirtualService", self.vs.meta.namespace, self.vs.meta.name, field_, message)

    def warn(self, field_: str, message: str) -> None:
        self.diag.warn("VirtualService", self.vs.meta.namespace, self.vs.meta.name, field_, message)

    # -- matching -------------------------------------------------------------------------
    def string_match(self, fld: str, raw: Any) -> dict[str, Any] | None:
        if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in STRING_MATCH_KINDS:
            self.error(fld, f"must be one of exact/prefix/regex, got {raw!r}")
            return None
        kind, value = next(iter(raw.items()))
        if kind == "regex":
            problem = re2_problem(value)
            if problem:
                self.error(f"{fld}.regex", problem)
                return None
            return {"safe_regex": {"regex": value}}
        if not isinstance(value, str):
            self.error(f"{fld}.{kind}", f"{value!r} is not a string")
            return None
        return {kind: value}

    def route_match(self, fld: str, match: dict[str, Any]) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        uri = match.get("uri")
        if uri is None:
            out["prefix"] = "/"
        else:
            sm = self.string_match(f"{fld}.uri", uri)
            if sm is None:
                return None
            out.update({"path": sm["exact"]} if "exact" in sm else sm)
        if match.get("ignoreUriCase"):
            out["case_sensitive"] = False
        headers = []
        for name, raw in (match.get("headers") or {}).items():
            sm = self.string_match(f"{fld}.headers[{name}]", raw) if raw else {"present_match": True}
            if sm is not None:
                headers.append(_header_matcher(name, sm))
        for name, raw in (match.get("withoutHeaders") or {}).items():
            sm = self.string_match(f"{fld}.withoutHeaders[{name}]", raw) if raw else {"present_match": True}
            if sm is not None:
                headers.append({**_header_matcher(name, sm), "invert_match": True})
        for key, header in (("method", ":method"), ("authority", ":authority"), ("scheme", ":scheme")):
            if key in match:
                sm = self.string_match(f"{fld}.{key}", match[key])
                if sm is not None:
                    headers.append(_header_matcher(header, sm))
        if headers:
            out["headers"] = headers
        params = []
        for name, raw in (match.get("queryParams") or {}).items():
            if raw and "prefix" in raw:
                self.error(f"{fld}.queryParams[{name}]", "only exact and regex are supported by Istio")
                continue
            sm = self.string_match(f"{fld}.queryParams[{name}]", raw) if raw else None
            params.append({"name": name, "string_match": sm} if sm else {"name": name, "present_match": True})
        if params:
            out["query_parameters"] = params
        return out

    # -- destinations ---------------------------------------------------------------------
    def destinations(self, fld: str, route: dict[str, Any]) -> list[dict[str, Any]]:
        dests = route.get("route")
        if not isinstance(dests, list) or not dests:
            self.error(fld, "must list at least one destination")
            return []
        good = []
        for i, d in enumerate(dests):
            dest = (d or {}).get("destination") if isinstance(d, dict) else None
            if not isinstance(dest, dict) or not isinstance(dest.get("host"), str) or not dest.get("host"):
                self.error(f"{fld}[{i}].destination.host", "is required")
                continue
            weight = d.get("weight", 0 if len(dests) > 1 else 100)
            if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 100:
                self.error(f"{fld}[{i}].weight", f"{weight!r} is not an integer 0-100")
                continue
            subset = dest.get("subset", "")
            if not isinstance(subset, str):
                self.error(f"{fld}[{i}].destination.subset", f"{subset!r} is not a string")
                continue
            port = (dest.get("port") or {}).get("number")
            if port is not None and (not isinstance(port, int) or not 1 <= port <= 65535):
                self.error(f"{fld}[{i}].destination.port.number", f"{port!r} is not a port number")
                continue
            good.append({**d, "weight": weight})
        if len(good) == len(dests) and len(dests) > 1 and sum(d["weight"] for d in good) != 100:
            total = sum(d["weight"] for d in good)
            self.error(f"{fld}[*].weight", f"weights sum to {total}, they must sum to 100")
            return []
        return good

    # -- actions --------------------------------------------------------------------------
    def retry_policy(self, fld: str, retries: Any) -> dict[str, Any] | None:
        if retries is None:
            return dict(DEFAULT_RETRY)
        if not isinstance(retries, dict):
            self.error(fld, "must be a mapping")
            return None
        attempts = retries.get("attempts", 2)
        if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 0:
            self.error(f"{fld}.attempts", f"{attempts!r} is not a non-negative integer")
            return None
        if attempts == 0:
            return None
        policy = dict(DEFAULT_RETRY, num_retries=attempts)
        if "retryOn" in retries:
            conditions, codes = [], []
            for item in str(retries["retryOn"]).split(","):
                item = item.strip()
                if item.isdigit():
                    codes.append(int(item))
                elif item in RETRY_ON:
                    conditions.append(item)
                elif item:
                    self.error(f"{fld}.retryOn", f"{item!r} is not a retry condition")
            if codes and "retriable-status-codes" not in conditions:
                conditions.append("retriable-status-codes")
            policy["retry_on"] = ",".join(conditions)
            if codes:
                policy["retriable_status_codes"] = codes
            else:
                policy.pop("retriable_status_codes", None)
        if "perTryTimeout" in retries:
            seconds = parse_duration(retries["perTryTimeout"])
            if seconds is None:
                self.error(f"{fld}.perTryTimeout", f"{retries['perTryTimeout']!r} is not a duration")
            else:
                policy["per_try_timeout"] = envoy_duration(seconds)
        return policy

    def percentage(self, fld: str, raw: Any, legacy: Any = None) -> dict[str, Any] | None:
        value = (raw or {}).get("value") if isinstance(raw, dict) else None
        if value is None:
            value = legacy if legacy is not None else 100
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 100:
            self.error(fld, f"{value!r} is not a percentage 0-100")
            return None
        return {"numerator": round(value * 10000), "denominator": "MILLION"}

    def fault(self, fld: str, fault: Any) -> dict[str, Any] | None:
        if not isinstance(fault, dict):
            self.error(fld, "must be a mapping")
            return None
        out: dict[str, Any] = {}
        delay = fault.get("delay")
        if delay is not None:
            seconds = parse_duration((delay or {}).get("fixedDelay"))
            if seconds is None:
                self.error(f"{fld}.delay.fixedDelay", f"{(delay or {}).get('fixedDelay')!r} is not a duration")
            pct = self.percentage(f"{fld}.delay.percentage", delay.get("percentage"), delay.get("percent"))
            if seconds is not None and pct:
                out["delay"] = {"fixed_delay": envoy_duration(seconds), "percentage": pct}
        abort = fault.get("abort")
        if abort is not None:
            status = (abort or {}).get("httpStatus")
            if not isinstance(status, int) or not 200 <= status <= 599:
                self.error(f"{fld}.abort.httpStatus", f"{status!r} is not an HTTP status (200-599)")
            pct = self.percentage(f"{fld}.abort.percentage", abort.get("percentage"))
            if isinstance(status, int) and 200 <= status <= 599 and pct:
                out["abort"] = {"http_status": status, "percentage": pct}
        if not out:
            return None
        return typed("envoy.extensions.filters.http.fault.v3.HTTPFault", **out)

    def header_ops(self, fld: str, raw: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if raw is None:
            return out
        if not isinstance(raw, dict):
            self.error(fld, "must be a mapping")
            return out
        for side in ("request", "response"):
            ops = raw.get(side) or {}
            adds = []
            for op, action in (("set", "OVERWRITE_IF_EXISTS_OR_ADD"), ("add", "APPEND_IF_EXISTS_OR_ADD")):
                for name, value in (ops.get(op) or {}).items():
                    adds.append({"header": {"key": name, "value": str(value)}, "append_action": action})
            if adds:
                out[f"{side}_headers_to_add"] = adds
            remove = ops.get("remove") or []
            if not isinstance(remove, list):
                self.error(f"{fld}.{side}.remove", "must be a list of header names")
            elif remove:
                out[f"{side}_headers_to_remove"] = [str(r) for r in remove]
        return out

    def cors(self, fld: str, raw: Any) -> dict[str, Any] | None:
        if not isinstance(raw, dict):
            self.error(fld, "must be a mapping")
            return None
        policy: dict[str, Any] = {}
        origins = []
        for i, origin in enumerate(raw.get("allowOrigins") or []):
            sm = self.string_match(f"{fld}.allowOrigins[{i}]", origin)
            if sm is not None:
                origins.append(sm)
        if origins:
            policy["allow_origin_string_match"] = origins
        for key, target in (("allowMethods", "allow_methods"), ("allowHeaders", "allow_headers")):
            if raw.get(key):
                policy[target] = ",".join(raw[key])
        if raw.get("exposeHeaders"):
            policy["expose_headers"] = ",".join(raw["exposeHeaders"])
        if "maxAge" in raw:
            seconds = parse_duration(raw["maxAge"])
            if seconds is None:
                self.error(f"{fld}.maxAge", f"{raw['maxAge']!r} is not a duration")
            else:
                policy["max_age"] = str(int(seconds))
        if "allowCredentials" in raw:
            policy["allow_credentials"] = bool(raw["allowCredentials"])
        return typed("envoy.extensions.filters.http.cors.v3.CorsPolicy", **policy)

    def redirect(self, fld: str, raw: Any) -> dict[str, Any] | None:
        if not isinstance(raw, dict):
            self.error(fld, "must be a mapping")
            return None
        out: dict[str, Any] = {}
        if "uri" in raw:
            out["path_redirect"] = str(raw["uri"])
        if "authority" in raw:
            out["host_redirect"] = str(raw["authority"])
        if "port" in raw:
            out["port_redirect"] = raw["port"]
        if "scheme" in raw:
            out["scheme_redirect"] = str(raw["scheme"])
        code = raw.get("redirectCode", 301)
        if code not in REDIRECT_CODES:
            self.error(f"{fld}.redirectCode", f"{code!r} is not one of {sorted(REDIRECT_CODES)}")
            return None
        out["response_code"] = REDIRECT_CODES[code]
        return out

    def rewrite(self, fld: str, raw: Any, action: dict[str, Any]) -> None:
        if not isinstance(raw, dict):
            self.error(fld, "must be a mapping")
            return
        if "uri" in raw:
            action["prefix_rewrite"] = str(raw["uri"])
        if "uriRegexRewrite" in raw:
            rx = raw["uriRegexRewrite"] or {}
            problem = re2_problem(rx.get("match"))
            if problem:
                self.error(f"{fld}.uriRegexRewrite.match", problem)
            else:
                action["regex_rewrite"] = {
                    "pattern": {"regex": rx["match"]},
                    "substitution": str(rx.get("rewrite", "")),
                }
        if "authority" in raw:
            action["host_rewrite_literal"] = str(raw["authority"])

    # -- one HTTP route -------------------------------------------------------------------
    def http_route(
        self,
        ri: int,
        route: dict[str, Any],
        port: int,
        cluster_of: ClusterOf,
        match_applies: Callable[[int, dict[str, Any]], bool],
    ) -> list[dict[str, Any]]:
        """Envoy routes (one per applicable match) for `http[ri]` of this VirtualService."""
        fld = f"spec.http[{ri}]"
        if not isinstance(route, dict):
            self.error(fld, "must be a mapping")
            return []
        matches = route.get("match") or [{}]
        if not isinstance(matches, list):
            self.error(f"{fld}.match", "must be a list")
            return []
        has_redirect, has_direct = "redirect" in route, "directResponse" in route
        if sum(bool(x) for x in (has_redirect, has_direct, "route" in route)) != 1:
            self.error(fld, "needs exactly one of route, redirect or directResponse")
            return []
        common: dict[str, Any] = {}
        per_filter: dict[str, Any] = {}
        if "fault" in route:
            fault = self.fault(f"{fld}.fault", route["fault"])
            if fault:
                per_filter["envoy.filters.http.fault"] = fault
        if "corsPolicy" in route:
            cors = self.cors(f"{fld}.corsPolicy", route["corsPolicy"])
            if cors:
                per_filter["envoy.filters.http.cors"] = cors
        if per_filter:
            common["typed_per_filter_config"] = per_filter
        common.update(self.header_ops(f"{fld}.headers", route.get("headers")))
        if has_redirect:
            redirect = self.redirect(f"{fld}.redirect", route["redirect"])
            if redirect is None:
                return []
            common["redirect"] = redirect
        elif has_direct:
            direct = route["directResponse"] or {}
            status = direct.get("status")
            if not isinstance(status, int) or not 200 <= status <= 599:
                self.error(f"{fld}.directResponse.status", f"{status!r} is not an HTTP status")
                return []
            body = (direct.get("body") or {}).get("string")
            common["direct_response"] = {"status": status, **({"body": {"inline_string": body}} if body else {})}
        else:
            action = self.route_action(fld, route, port, cluster_of)
            if action is None:
                return []
            common["route"] = action
        out = []
        for mi, match in enumerate(matches):
            if not isinstance(match, dict):
                self.error(f"{fld}.match[{mi}]", "must be a mapping")
                continue
            envoy_match = self.route_match(f"{fld}.match[{mi}]", match)
            if envoy_match is None or not match_applies(mi, match):
                continue
            name = route.get("name") or f"{self.vs.meta.key}/{ri}"
            out.append({"name": str(name), "match": envoy_match, **common})
        return out

    def route_action(self, fld: str, route: dict[str, Any], port: int, cluster_of: ClusterOf) -> dict[str, Any] | None:
        dests = self.destinations(f"{fld}.route", route)
        if not dests:
            return None
        action: dict[str, Any] = {}
        if len(dests) == 1:
            action["cluster"] = cluster_of(dests[0]["destination"], port)
        else:
            clusters = []
            for d in dests:
                if d["weight"] == 0:
                    continue
                entry = {"name": cluster_of(d["destination"], port), "weight": d["weight"]}
                entry.update(self.header_ops(f"{fld}.route[].headers", d.get("headers")))
                clusters.append(entry)
            action["weighted_clusters"] = {"clusters": clusters}
        timeout = route.get("timeout")
        if timeout is None:
            action["timeout"] = "0s"  # Istio: no timeout unless the VirtualService sets one
        else:
            seconds = parse_duration(timeout)
            if seconds is None:
                self.error(f"{fld}.timeout", f"{timeout!r} is not a duration")
                return None
            action["timeout"] = envoy_duration(seconds)
        retry = self.retry_policy(f"{fld}.retries", route.get("retries"))
        if retry:
            action["retry_policy"] = retry
        mirrors = list(route.get("mirrors") or [])
        if route.get("mirror"):
            mirrors.append({"destination": route["mirror"], "percentage": route.get("mirrorPercentage")})
        policies = []
        for i, mirror in enumerate(mirrors):
            dest = (mirror or {}).get("destination") or {}
            if not isinstance(dest.get("host"), str):
                self.error(f"{fld}.mirror[{i}].host", "is required")
                continue
            pct = self.percentage(f"{fld}.mirrorPercentage", mirror.get("percentage"))
            if pct:
                policies.append({"cluster": cluster_of(dest, port), "runtime_fraction": {"default_value": pct}})
        if policies:
            action["request_mirror_policies"] = policies
        if "rewrite" in route:
            self.rewrite(f"{fld}.rewrite", route["rewrite"], action)
        return action


def _header_matcher(name: str, sm: dict[str, Any]) -> dict[str, Any]:
    if "present_match" in sm:
        return {"name": name, "present_match": True}
    return {"name": name, "string_match": sm}


def default_route(cluster: str) -> dict[str, Any]:
    """The route Istio gives a host that no VirtualService covers."""
    return {
        "name": "default",
        "match": {"prefix": "/"},
        "route": {"cluster": cluster, "timeout": "0s", "retry_policy": dict(DEFAULT_RETRY)},
    }
