"""Generate a synthetic cluster as a state directory `dpumesh compile --state` reads.

The same parameters and seed always give the same bytes. The cluster looks like a real one at scale:
services in meshed namespaces with http, grpc and tcp ports, several versions each, pods pinned to DPU
nodes (evenly, in a seeded shuffle), VirtualServices with header/prefix matches, weighted subsets,
retries, timeouts and faults, DestinationRules with subsets, connection pools, outlier detection and
ISTIO_MUTUAL, and in some namespaces a Sidecar egress scope, PeerAuthentications and AuthorizationPolicies.

    python -m benchmarks.generate --services 5000 --pods 20000 --nodes 100 \
        --virtual-services 1000 --destination-rules 1000 --seed 1 --out DIR
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dpumesh.bundle import write_tree

POD_NETWORK = ipaddress.ip_network("10.64.0.0/10")
FABRIC_NETWORK = ipaddress.ip_network("172.16.0.0/12")
ROOT_NAMESPACE = "istio-system"
WORDS = (
    "catalog", "cart", "checkout", "payments", "ledger", "invoices", "users", "profiles", "auth", "search",
    "ranking", "reviews", "ratings", "inventory", "shipping", "orders", "pricing", "quotes", "notifications",
    "email", "sms", "images", "thumbnails", "media", "billing", "accounts", "sessions", "recommendations", "ads",
    "metrics", "audit",
)  # fmt: skip
# (kind, port name, port number); a share of http services also expose a grpc admin port.
PORT_KINDS = (("http", "http", 8080), ("grpc", "grpc", 9090), ("tcp", "tcp-db", 5432))
PORT_WEIGHTS = (60, 25, 15)


@dataclass(frozen=True)
class Sizes:
    services: int
    pods: int
    nodes: int
    virtual_services: int
    destination_rules: int
    namespaces: int = 0  # 0: about one per 100 services
    seed: int = 1

    def validated(self) -> Sizes:
        namespaces = self.namespaces or max(1, round(self.services / 100))
        problems = [
            f"--{name.replace('_', '-')} must be at least {low} (got {value})"
            for name, value, low in (
                ("services", self.services, 1),
                ("pods", self.pods, 0),
                ("nodes", self.nodes, 1),
                ("virtual_services", self.virtual_services, 0),
                ("destination_rules", self.destination_rules, 0),
                ("namespaces", namespaces, 1),
            )
            if value < low
        ]
        for name, value in (("virtual_services", self.virtual_services), ("destination_rules", self.destination_rules)):
            if value > self.services:
                problems.append(f"--{name.replace('_', '-')} ({value}) cannot exceed --services ({self.services})")
        if namespaces > self.services:
            problems.append(f"--namespaces ({namespaces}) cannot exceed --services ({self.services})")
        if problems:
            raise ValueError("; ".join(problems))
        return Sizes(
            self.services,
            self.pods,
            self.nodes,
            self.virtual_services,
            self.destination_rules,
            namespaces,
            self.seed,
        )


@dataclass
class Svc:
    namespace: str
    name: str
    kind: str  # http, grpc or tcp
    ports: list[tuple[str, int]]
    versions: int
    pods: list[tuple[str, str, str]] = field(default_factory=list)  # (name, version, node)


def node_name(index: int) -> str:
    return f"node-{index + 1}"


def namespace_name(index: int) -> str:
    return f"team-{index:03d}"


def _pod_cidrs(nodes: int, pods_per_node: int) -> list[str]:
    """One pod CIDR per node, four times the pods it holds so hashed addresses rarely collide."""
    prefix = min(24, 32 - (4 * (pods_per_node + 2) - 1).bit_length())
    subnets = POD_NETWORK.subnets(new_prefix=prefix)
    return [str(next(subnets)) for _ in range(nodes)]


class Generator:
    def __init__(self, sizes: Sizes):
        self.sizes = sizes.validated()
        self.rng = random.Random(self.sizes.seed)
        self.namespaces = [namespace_name(i) for i in range(self.sizes.namespaces)]
        self.services = self._services()
        self._place_pods()
        order = list(range(len(self.services)))
        self.rng.shuffle(order)
        # DestinationRules and VirtualServices start from the same services, so most routed services have subsets.
        self.with_dr = {self.services[i].name for i in order[: self.sizes.destination_rules]}
        self.with_vs = [self.services[i] for i in sorted(order[: self.sizes.virtual_services])]

    # -- model ---------------------------------------------------------------------------------
    def _services(self) -> list[Svc]:
        services = []
        for index in range(self.sizes.services):
            kind, port_name, number = self.rng.choices(PORT_KINDS, weights=PORT_WEIGHTS)[0]
            ports = [(port_name, number)]
            if kind == "http" and self.rng.random() < 0.3:
                ports.append(("grpc-admin", 9901))
            name = f"{WORDS[index % len(WORDS)]}-{index}"
            versions = 1 if kind == "tcp" else self.rng.choice((2, 2, 2, 3))
            services.append(Svc(self.namespaces[index % len(self.namespaces)], name, kind, ports, versions))
        return services

    def _place_pods(self) -> None:
        """Every node gets the same number of pods (±1); services get theirs round-robin."""
        nodes = [node_name(i % self.sizes.nodes) for i in range(self.sizes.pods)]
        self.rng.shuffle(nodes)
        for index, node in enumerate(nodes):
            svc = self.services[index % len(self.services)]
            replica = index // len(self.services)
            version = f"v{replica % svc.versions + 1}"
            svc.pods.append((f"{svc.name}-{version}-{replica}", version, node))

    # -- objects -------------------------------------------------------------------------------
    def cluster_objects(self) -> list[dict[str, Any]]:
        per_node = -(-self.sizes.pods // self.sizes.nodes)
        cidrs = _pod_cidrs(self.sizes.nodes, per_node)
        objects: list[dict[str, Any]] = []
        for index, cidr in enumerate(cidrs):
            objects.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": node_name(index),
                        "labels": {"dpumesh.io/dpu": "true"},
                        "annotations": {"dpumesh.io/dpu-fabric-ip": str(FABRIC_NETWORK[index + 1])},
                    },
                    "spec": {"podCIDR": cidr},
                }
            )
        objects.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ROOT_NAMESPACE}})
        for ns in self.namespaces:
            objects.append(
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": ns, "labels": {"istio-injection": "enabled"}},
                }
            )
        # Mesh-wide strict mTLS, as most production meshes run.
        objects.append(
            {
                "apiVersion": "security.istio.io/v1",
                "kind": "PeerAuthentication",
                "metadata": {"name": "default", "namespace": ROOT_NAMESPACE},
                "spec": {"mtls": {"mode": "STRICT"}},
            }
        )
        return objects

    def namespace_objects(self, ns_index: int) -> list[dict[str, Any]]:
        ns = self.namespaces[ns_index]
        services = [s for s in self.services if s.namespace == ns]
        objects: list[dict[str, Any]] = []
        for svc in services:
            objects.append(_meta("v1", "ServiceAccount", ns, svc.name))
            objects.append(self.service(svc))
            objects.extend(self.pod(svc, *pod) for pod in svc.pods)
            if svc.name in self.with_dr:
                objects.append(self.destination_rule(svc))
        objects.extend(self.virtual_service(svc) for svc in self.with_vs if svc.namespace == ns)
        objects.extend(self.namespace_policies(ns_index, services))
        return objects

    def service(self, svc: Svc) -> dict[str, Any]:
        obj = _meta("v1", "Service", svc.namespace, svc.name, labels={"app": svc.name})
        obj["spec"] = {
            "selector": {"app": svc.name},
            "ports": [{"name": name, "port": number, "targetPort": name} for name, number in svc.ports],
        }
        return obj

    def pod(self, svc: Svc, name: str, version: str, node: str) -> dict[str, Any]:
        obj = _meta("v1", "Pod", svc.namespace, name, labels={"app": svc.name, "version": version})
        obj["spec"] = {
            "nodeName": node,
            "serviceAccountName": svc.name,
            "containers": [
                {
                    "name": "app",
                    "image": f"registry.example.net/{svc.namespace}/{svc.name}:{version[1:]}.0",
                    "ports": [{"name": port, "containerPort": number} for port, number in svc.ports],
                }
            ],
        }
        return obj

    def destination_rule(self, svc: Svc) -> dict[str, Any]:
        obj = _meta("networking.istio.io/v1", "DestinationRule", svc.namespace, svc.name)
        policy: dict[str, Any] = {
            "connectionPool": {
                "tcp": {"maxConnections": self.rng.choice((100, 500, 1000)), "connectTimeout": "2s"},
            },
            "outlierDetection": {
                "consecutive5xxErrors": self.rng.choice((3, 5, 7)),
                "interval": "10s",
                "baseEjectionTime": "30s",
                "maxEjectionPercent": 50,
            },
            "tls": {"mode": "ISTIO_MUTUAL"},
        }
        if svc.kind != "tcp":
            policy["connectionPool"]["http"] = {
                "http1MaxPendingRequests": 64,
                "http2MaxRequests": self.rng.choice((256, 1024)),
                "maxRetries": 3,
                "idleTimeout": "60s",
            }
            policy["loadBalancer"] = self.rng.choice(
                (
                    {"simple": "LEAST_REQUEST"},
                    {"simple": "ROUND_ROBIN"},
                    {"consistentHash": {"httpHeaderName": "x-user"}},
                )
            )
        subsets = [{"name": f"v{v}", "labels": {"version": f"v{v}"}} for v in range(1, svc.versions + 1)]
        if svc.versions > 1:
            subsets[-1]["trafficPolicy"] = {"loadBalancer": {"simple": "RANDOM"}}
        obj["spec"] = {"host": svc.name, "trafficPolicy": policy, "subsets": subsets}
        return obj

    def virtual_service(self, svc: Svc) -> dict[str, Any]:
        obj = _meta("networking.istio.io/v1", "VirtualService", svc.namespace, svc.name)
        subsets = svc.name in self.with_dr and svc.versions > 1

        def dest(version: int = 0, weight: int | None = None) -> dict[str, Any]:
            target: dict[str, Any] = {"destination": {"host": svc.name}}
            if version and subsets:
                target["destination"]["subset"] = f"v{version}"
            if weight is not None:
                target["weight"] = weight
            return target

        if svc.kind == "tcp":
            obj["spec"] = {"hosts": [svc.name], "tcp": [{"route": [dest()]}]}
            return obj
        canary = self.rng.choice((5, 10, 20, 50))
        routes: list[dict[str, Any]] = [
            {
                "name": "testers",
                "match": [{"headers": {"x-canary": {"exact": "always"}}}],
                "route": [dest(svc.versions)],
            },
        ]
        if svc.kind == "http":
            routes.append(
                {
                    "name": "api-v2",
                    "match": [{"uri": {"prefix": "/api/v2/"}}],
                    "rewrite": {"uri": "/api/"},
                    "route": [dest(2)],
                    "timeout": "5s",
                }
            )
        default: dict[str, Any] = {
            "name": "default",
            "route": [dest(1, 100 - canary), dest(2, canary)] if subsets else [dest()],
            "timeout": self.rng.choice(("1s", "3s", "10s")),
            "retries": {"attempts": self.rng.choice((2, 3)), "perTryTimeout": "500ms", "retryOn": "5xx,reset"},
        }
        if self.rng.random() < 0.2:
            default["fault"] = {
                "delay": {"fixedDelay": "100ms", "percentage": {"value": 1}},
                "abort": {"httpStatus": 503, "percentage": {"value": 0.1}},
            }
        routes.append(default)
        obj["spec"] = {"hosts": [svc.name], "http": routes}
        return obj

    def namespace_policies(self, ns_index: int, services: list[Svc]) -> list[dict[str, Any]]:
        ns = self.namespaces[ns_index]
        objects = []
        if ns_index % 3 == 1:
            # A Sidecar egress scope: this team only calls its own and two neighbouring namespaces.
            neighbours = sorted({self.namespaces[(ns_index + d) % len(self.namespaces)] for d in (1, 2)} - {ns})
            obj = _meta("networking.istio.io/v1", "Sidecar", ns, "default")
            obj["spec"] = {"egress": [{"hosts": ["./*", f"{ROOT_NAMESPACE}/*", *(f"{n}/*" for n in neighbours)]}]}
            objects.append(obj)
        if ns_index % 5 == 2:
            obj = _meta("security.istio.io/v1", "PeerAuthentication", ns, "default")
            obj["spec"] = {"mtls": {"mode": "PERMISSIVE"}}
            objects.append(obj)
        if ns_index % 2 == 0 and services:
            target = services[0]
            callers = [f"cluster.local/ns/{s.namespace}/sa/{s.name}" for s in services[1:4]]
            allow = _meta("security.istio.io/v1", "AuthorizationPolicy", ns, f"{target.name}-callers")
            allow["spec"] = {
                "selector": {"matchLabels": {"app": target.name}},
                "action": "ALLOW",
                "rules": [
                    {"from": [{"source": {"principals": callers or ["cluster.local/ns/default/sa/default"]}}]},
                    {"from": [{"source": {"namespaces": [ns]}}], "to": [{"operation": {"methods": ["GET"]}}]},
                ],
            }
            deny = _meta("security.istio.io/v1", "AuthorizationPolicy", ns, "deny-admin")
            deny["spec"] = {
                "action": "DENY",
                "rules": [{"to": [{"operation": {"paths": ["/admin", "/admin/*"]}}]}],
            }
            objects += [allow, deny]
        return objects

    # -- output --------------------------------------------------------------------------------
    def documents(self) -> dict[str, list[dict[str, Any]]]:
        """File name -> its objects. Starts its own random stream, so it returns the same on every call."""
        self.rng = random.Random(f"{self.sizes.seed}/objects")
        documents = {"00-cluster.yaml": self.cluster_objects()}
        for index, ns in enumerate(self.namespaces):
            documents[f"10-{ns}.yaml"] = self.namespace_objects(index)
        return documents

    def objects(self) -> list[dict[str, Any]]:
        return [obj for objects in self.documents().values() for obj in objects]

    def files(self) -> dict[str, bytes]:
        return {name: _dump_all(objects) for name, objects in self.documents().items()}


def _meta(api: str, kind: str, namespace: str, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        metadata["labels"] = labels
    return {"apiVersion": api, "kind": kind, "metadata": metadata}


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """Plain YAML without anchors: every document reads on its own."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _dump_all(objects: list[dict[str, Any]]) -> bytes:
    text = yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False, explicit_start=True, width=120)
    return text.encode()


def generate(sizes: Sizes) -> dict[str, bytes]:
    """The files (relative name -> bytes) of the synthetic cluster."""
    return Generator(sizes).files()


def write_state(sizes: Sizes, out: str | Path) -> Path:
    """Write the cluster to `out`, swapped in as a whole (never left half written)."""
    write_tree(out, generate(sizes))
    return Path(out)


def add_size_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--services", type=int, default=500)
    parser.add_argument("--pods", type=int, default=2000)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--virtual-services", type=int, default=100)
    parser.add_argument("--destination-rules", type=int, default=100)
    parser.add_argument("--namespaces", type=int, default=0, help="default: about one per 100 services")
    parser.add_argument("--seed", type=int, default=1)


def sizes_from(args: argparse.Namespace) -> Sizes:
    return Sizes(
        args.services,
        args.pods,
        args.nodes,
        args.virtual_services,
        args.destination_rules,
        args.namespaces,
        args.seed,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_size_arguments(parser)
    parser.add_argument("--out", required=True, help="state directory to (re)create")
    args = parser.parse_args(argv)
    try:
        sizes = sizes_from(args).validated()
    except ValueError as exc:
        parser.error(str(exc))
    out = write_state(sizes, args.out)
    print(
        f"{out}: {sizes.services} services in {sizes.namespaces} namespaces, {sizes.pods} pods on "
        f"{sizes.nodes} nodes, {sizes.virtual_services} VirtualServices, {sizes.destination_rules} DestinationRules"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
