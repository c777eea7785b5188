"""Node-independent checks of Istio networking objects.

Run once over the whole state so a mistake is reported whichever node is
compiled, and before anything is written.
"""

from __future__ import annotations

import re
from typing import Any

from dpumesh.compiler.context import CompileContext
from dpumesh.compiler.registry import port_protocol
from dpumesh.compiler.routes import RouteBuilder
from dpumesh.compiler.views import destination_rule_groups
from dpumesh.state.model import IstioObject


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def validate_virtual_service(ctx: CompileContext, vs: IstioObject) -> None:
    where = ("VirtualService", vs.meta.namespace, vs.meta.name)
    hosts = vs.spec.get("hosts")
    if not _is_str_list(hosts) or not hosts:
        ctx.diag.error(*where, "spec.hosts", "must be a non-empty list of host names")
        return
    for section in ("http", "tcp", "tls"):
        if vs.spec.get(section) is not None and not isinstance(vs.spec.get(section), list):
            ctx.diag.error(*where, f"spec.{section}", "must be a list")
            return
    if "exportTo" in vs.spec and not _is_str_list(vs.spec["exportTo"]):
        ctx.diag.error(*where, "spec.exportTo", "must be a list of namespaces, '.' or '*'")
    builder = RouteBuilder(ctx.diag, vs)
    for ri, route in enumerate(vs.spec.get("http") or []):
        builder.http_route(ri, route, 0, lambda d, p: "", lambda mi, m: True)
        for dest in _destinations(route):
            check_subset(ctx, vs, dest)
    for section in ("tcp", "tls"):
        for ri, route in enumerate(vs.spec.get(section) or []):
            if not isinstance(route, dict):
                ctx.diag.error(*where, f"spec.{section}[{ri}]", "must be a mapping")
                continue
            builder.destinations(f"spec.{section}[{ri}].route", route)
            if section == "tls":
                for mi, match in enumerate(route.get("match") or []):
                    if not _is_str_list((match or {}).get("sniHosts")):
                        ctx.diag.error(*where, f"spec.tls[{ri}].match[{mi}].sniHosts", "is required for TLS routes")
    for raw in hosts:
        fqdn = ctx.registry.resolve(raw, vs.meta.namespace)
        if "*" not in fqdn and fqdn not in ctx.registry.hosts:
            ctx.diag.warn(*where, "spec.hosts", f"{fqdn} is not a Service or ServiceEntry host; it gets no route")


def _destinations(route: Any) -> list[dict[str, Any]]:
    if not isinstance(route, dict):
        return []
    dests = [d.get("destination") for d in route.get("route") or [] if isinstance(d, dict)]
    if isinstance(route.get("mirror"), dict):
        dests.append(route["mirror"])
    return [d for d in dests if isinstance(d, dict) and isinstance(d.get("host"), str)]


def _defined_subsets(ctx: CompileContext) -> set[tuple[str, Any]]:
    """(resolved host, subset name) of every subset any DestinationRule defines, collected once."""
    key = ("defined-subsets",)
    if key not in ctx.memo:
        ctx.memo[key] = {
            (ctx.registry.resolve(str(dr.spec.get("host")), dr.meta.namespace), s.get("name"))
            for dr in ctx.state.of_kind("DestinationRule")
            for s in dr.spec.get("subsets") or []
            if isinstance(s, dict)
        }
    return ctx.memo[key]


def check_subset(ctx: CompileContext, vs: IstioObject, dest: dict[str, Any]) -> None:
    """A subset no DestinationRule defines gives 503 at request time (as in Istio); warn, or fail with --strict."""
    subset = dest.get("subset")
    if not subset:
        return
    fqdn = ctx.registry.resolve(dest["host"], vs.meta.namespace)
    if (fqdn, subset) in _defined_subsets(ctx):
        return
    report = ctx.diag.error if ctx.mesh.strict else ctx.diag.warn
    report(
        "VirtualService",
        vs.meta.namespace,
        vs.meta.name,
        "destination.subset",
        f"subset {subset!r} of {fqdn} is defined by no DestinationRule: requests get 503",
    )


def validate_destination_rule(ctx: CompileContext, dr: IstioObject, catalog) -> None:
    where = ("DestinationRule", dr.meta.namespace, dr.meta.name)
    if not isinstance(dr.spec.get("host"), str) or not dr.spec.get("host"):
        ctx.diag.error(*where, "spec.host", "is required")
        return
    names = set()
    for i, subset in enumerate(dr.spec.get("subsets") or []):
        if not isinstance(subset, dict) or not isinstance(subset.get("name"), str) or not subset.get("name"):
            ctx.diag.error(*where, f"spec.subsets[{i}].name", "is required")
            continue
        if subset["name"] in names:
            ctx.diag.error(*where, f"spec.subsets[{i}].name", f"subset {subset['name']!r} is defined twice")
        names.add(subset["name"])
        if not isinstance(subset.get("labels") or {}, dict):
            ctx.diag.error(*where, f"spec.subsets[{i}].labels", "must be a mapping")
    policies = [dr.spec.get("trafficPolicy") or {}] + [
        (s.get("trafficPolicy") or {}) for s in dr.spec.get("subsets") or [] if isinstance(s, dict)
    ]
    for policy in policies:
        if not isinstance(policy, dict):
            ctx.diag.error(*where, "spec.trafficPolicy", "must be a mapping")
            continue
        layers = [policy] + [p for p in policy.get("portLevelSettings") or [] if isinstance(p, dict)]
        for layer in layers:
            scratch: dict[str, Any] = {
                "circuit_breakers": {"thresholds": [{}]},
                "common_lb_config": {},
                "connect_timeout": "10s",
            }
            catalog.apply_load_balancer(scratch, layer.get("loadBalancer"), where, True)
            catalog.apply_connection_pool(scratch, layer.get("connectionPool"), where, "HTTP")
            catalog.apply_outlier(scratch, layer.get("outlierDetection"), where)
            mode = (layer.get("tls") or {}).get("mode")
            if layer.get("tls") and mode not in ("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"):
                ctx.diag.error(*where, "spec.trafficPolicy.tls.mode", f"{mode!r} is not a TLS mode")


def check_merged_destination_rules(ctx: CompileContext) -> None:
    """Warn where DestinationRules for one host in one namespace are merged and part of a newer one is dropped,
    as istiod does (and warns): its traffic policy when an older one has one, a subset whose name is taken."""
    for rules in destination_rule_groups(ctx).values():
        taken: dict[str, str] = {}
        policy_from = ""
        for dr in rules:
            where = ("DestinationRule", dr.meta.namespace, dr.meta.name)
            if dr.spec.get("trafficPolicy"):
                if policy_from:
                    ctx.diag.warn(*where, "spec.trafficPolicy", f"ignored: DestinationRule {policy_from} is older and "
                                  f"sets one for the same host; the two are merged")  # fmt: skip
                else:
                    policy_from = dr.meta.key
            for i, subset in enumerate(dr.spec.get("subsets") or []):
                name = subset.get("name") if isinstance(subset, dict) else None
                if name in taken and taken[name] != dr.meta.key:
                    ctx.diag.warn(*where, f"spec.subsets[{i}]", f"ignored: subset {name!r} is defined by the older "
                                  f"DestinationRule {taken[name]} for the same host")  # fmt: skip
                elif isinstance(name, str):
                    taken.setdefault(name, dr.meta.key)


def validate_sidecar(ctx: CompileContext, sc: IstioObject) -> None:
    where = ("Sidecar", sc.meta.namespace, sc.meta.name)
    for i, egress in enumerate(sc.spec.get("egress") or []):
        hosts = (egress or {}).get("hosts")
        if not _is_str_list(hosts):
            ctx.diag.error(*where, f"spec.egress[{i}].hosts", "must be a list of 'namespace/host' entries")
            continue
        for h in hosts:
            if "/" not in h:
                ctx.diag.error(*where, f"spec.egress[{i}].hosts", f"{h!r} is not of the form namespace/host")
    mode = (sc.spec.get("outboundTrafficPolicy") or {}).get("mode")
    if mode is not None and mode not in ("ALLOW_ANY", "REGISTRY_ONLY"):
        ctx.diag.error(*where, "spec.outboundTrafficPolicy.mode", f"{mode!r} is not ALLOW_ANY or REGISTRY_ONLY")
    _validate_sidecar_ingress(ctx, where, sc.spec.get("ingress"))


# What `defaultEndpoint` may be besides unix://<path>: loopback or the instance IP (also an empty host), and a port.
_DEFAULT_ENDPOINT = re.compile(r"^(127\.0\.0\.1|0\.0\.0\.0|\[::1\]|\[::\]|):([0-9]{1,5})$")


def _validate_sidecar_ingress(ctx: CompileContext, where: tuple[str, str, str], ingress: Any) -> None:
    if ingress is None:
        return
    if not isinstance(ingress, list) or not all(isinstance(item, dict) for item in ingress):
        ctx.diag.error(*where, "spec.ingress", "must be a list of ingress listeners")
        return
    numbers: dict[int, int] = {}
    for i, item in enumerate(ingress):
        port = item.get("port")
        number = port.get("number") if isinstance(port, dict) else None
        if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= 65535:
            ctx.diag.error(*where, f"spec.ingress[{i}].port.number", f"{number!r} is not a port number (1-65535)")
            continue
        if number in numbers:
            earlier = f"ingress[{numbers[number]}]"
            ctx.diag.error(*where, f"spec.ingress[{i}].port.number", f"port {number} is {earlier}'s too")
        numbers.setdefault(number, i)
        protocol = port.get("protocol")
        if protocol and not port_protocol("", str(protocol))[1]:
            ctx.diag.error(*where, f"spec.ingress[{i}].port.protocol", f"{protocol!r} is not a protocol Istio knows")
        endpoint = item.get("defaultEndpoint")
        if endpoint in (None, "") or (isinstance(endpoint, str) and endpoint.startswith("unix://")):
            continue  # unset (empty is unset too): the connection goes where it was sent
        found = _DEFAULT_ENDPOINT.match(endpoint) if isinstance(endpoint, str) else None
        if found is None or not 1 <= int(found[2]) <= 65535:
            ctx.diag.error(*where, f"spec.ingress[{i}].defaultEndpoint", f"{endpoint!r} is not 127.0.0.1:PORT, "
                           ":PORT, 0.0.0.0:PORT, [::1]:PORT, [::]:PORT or unix:///path")  # fmt: skip


def check_port_conflicts(ctx: CompileContext) -> None:
    """Two hosts on one VIP:port, or one port number named for two protocols across a Service's ports."""
    for svc in ctx.state.services:
        seen: dict[int, str] = {}
        for i, sp in enumerate(svc.ports):
            key = sp.target_port if isinstance(sp.target_port, int) else None
            if key is None:
                continue
            protocol = port_protocol(sp.name, sp.app_protocol)[0]
            if key in seen and seen[key] != protocol:
                ctx.diag.error(
                    "Service",
                    svc.namespace,
                    svc.name,
                    f"spec.ports[{i}]",
                    f"targetPort {key} is used as {seen[key]} and as {protocol}",
                )
            seen[key] = protocol
