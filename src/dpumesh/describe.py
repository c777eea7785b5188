"""A readable, line-per-decision summary of a compiled bundle, for reviews and `--diff`."""

from __future__ import annotations

from typing import Any


def _routes(vhost: dict[str, Any]) -> list[str]:
    lines = []
    for r in vhost.get("routes", []):
        match = r.get("match", {})
        what = match.get("path") or match.get("prefix") or (match.get("safe_regex") or {}).get("regex", "")
        extra = " ".join(
            f"{h['name']}={next(iter((h.get('string_match') or {'present': ''}).values()))}"
            for h in match.get("headers", [])
        )
        action = r.get("route", {})
        if "weighted_clusters" in action:
            target = ", ".join(f"{c['name']} {c['weight']}%" for c in action["weighted_clusters"]["clusters"])
        elif "cluster" in action:
            target = action["cluster"]
        elif "redirect" in r:
            target = f"redirect {r['redirect']}"
        else:
            target = f"direct {r.get('direct_response', {}).get('status')}"
        knobs = [f"timeout={action['timeout']}"] if action.get("timeout") not in (None, "0s") else []
        knobs += [f"retries={action['retry_policy']['num_retries']}"] if "retry_policy" in action else []
        knobs += sorted(r.get("typed_per_filter_config", {}))
        lines.append(f"      route {r.get('name', '')}: {what} {extra} -> {target} {' '.join(knobs)}".rstrip())
    return lines


def describe_vhost(vhost: dict[str, Any]) -> list[str]:
    return [f"    vhost {vhost['name']}", *_routes(vhost)]


def describe_listener(listener: dict[str, Any], encoded: dict[int, str] | None = None) -> list[str]:
    """`encoded`: the lines (joined) of virtual hosts that are in the listener already encoded, by their id."""
    out = [f"listener {listener['name']}"]
    for chain in listener.get("filter_chains", []):
        out.append(f"  chain {chain['name']}")
        for f in chain.get("filters", []):
            cfg = f.get("typed_config", {})
            for vh in (cfg.get("route_config") or {}).get("virtual_hosts", []):
                lines = encoded.get(id(vh)) if encoded else None
                if lines is None:
                    out.extend(describe_vhost(vh))
                else:
                    out.append(lines)
            if "cluster" in cfg:
                out.append(f"    tcp -> {cfg['cluster']}")
    return out


def describe_cluster(c: dict[str, Any]) -> str:
    eps = [
        f"{e['endpoint']['address']['socket_address']['address']}:{e['endpoint']['address']['socket_address']['port_value']}"
        for group in (c.get("load_assignment") or {}).get("endpoints", [])
        for e in group.get("lb_endpoints", [])
    ]
    tls = "mtls" if "transport_socket" in c else ("auto-mtls" if "transport_socket_matches" in c else "plain")
    return f"cluster {c['name']} {c.get('type', '')} {c.get('lb_policy', '')} {tls} [{' '.join(eps)}]"


def describe(listener_lines: list[str], cluster_lines: list[str], steering: dict[str, Any]) -> str:
    """The bundle's summary from its listeners' and clusters' lines (`describe_listener`, `describe_cluster`)."""
    out = [*listener_lines, *cluster_lines]
    for pod in steering["pods"]:
        state = "meshed" if pod["meshed"] else "bypass"
        out.append(f"pod {pod['namespace']}/{pod['name']} {pod['ip']} {pod['vf']['representor']} {state}")
    for remote in steering["remote_nodes"]:
        out.append(f"remote {remote['node']} via {remote['fabric_ip']} ({len(remote['pod_ips'])} pods)")
    return "\n".join(out) + "\n"
