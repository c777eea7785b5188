"""Mesh-wide settings (istiod's MeshConfig equivalents) and the proxy's fixed layout."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from dpumesh.errors import InputError, InputProblem

OUTBOUND_POLICIES = ("ALLOW_ANY", "REGISTRY_ONLY")
NETWORK_MODES = ("underlay", "overlay")
ISTIO_SEMANTICS = "1.24"  # defaults (retries, timeouts, auto mTLS) follow this Istio release


@dataclass(frozen=True)
class ProxyLayout:
    """Ports, marks and paths shared by the compiler, the dataplane and the roles."""

    outbound_port: int = 15001
    inbound_port: int = 15006
    admin_port: int = 15000
    capture_mark: int = 1  # proxy outbound connections: may loop into the inbound listener
    bypass_mark: int = 2  # proxy inbound connections: straight to the pod's VF
    route_table: int = 100
    # Versions live in <watch_dir>/versions/<id>; <watch_dir>/current is a symlink swapped atomically,
    # and Envoy reloads LDS/CDS when `current` moves in the watched directory.
    watch_dir: str = "/etc/dpumesh/proxy"
    config_dir: str = "/etc/dpumesh/proxy/current/envoy"  # bootstrap.yaml, lds.yaml, cds.yaml, sds/
    cert_dir: str = "/etc/dpumesh/certs"  # per-identity key/cert files and the root CA
    sds_socket: str = "/run/dpumesh/sds.sock"  # `dpumesh sds`: client certificates chosen per connection

    def under(self, root: str, cert_dir: str = "") -> ProxyLayout:
        """This layout with the versions under `root`, as a SoC (or a lab node) keeps them; the certificates
        in `cert_dir`, by default next to `root`."""
        return replace(
            self, watch_dir=root, config_dir=f"{root}/current/envoy", cert_dir=cert_dir or f"{root}/../certs"
        )


@dataclass(frozen=True)
class MeshSettings:
    trust_domain: str = "cluster.local"
    root_namespace: str = "istio-system"
    outbound_traffic_policy: str = "ALLOW_ANY"
    cluster_domain: str = "cluster.local"
    service_cidr: str = "10.96.0.0/16"
    network_mode: str = "underlay"
    tunnel_vni: int = 4242
    node_fabric_ips: dict[str, str] = field(default_factory=dict)
    strict: bool = False  # warnings Istio would only warn about become errors
    proxy: ProxyLayout = field(default_factory=ProxyLayout)

    def validate(self) -> MeshSettings:
        problems = []

        def bad(fld: str, msg: str) -> None:
            problems.append(InputProblem("MeshSettings", "", "mesh", fld, msg))

        if self.outbound_traffic_policy not in OUTBOUND_POLICIES:
            bad("outbound_traffic_policy", f"{self.outbound_traffic_policy!r} is not one of {OUTBOUND_POLICIES}")
        if self.network_mode not in NETWORK_MODES:
            bad("network_mode", f"{self.network_mode!r} is not one of {NETWORK_MODES}")
        if not self.trust_domain or "/" in self.trust_domain:
            bad("trust_domain", f"{self.trust_domain!r} is not a trust domain")
        if not 1 <= self.tunnel_vni < 2**24:
            bad("tunnel_vni", f"{self.tunnel_vni} is not a VXLAN VNI (1..16777215)")
        if problems:
            raise InputError(problems)
        return self

    def shared_key(self) -> str:
        """What the parts of a compile shared between nodes depend on: every setting but where the proxy keeps its
        files, which only each node's bootstrap names. Hosts whose roots differ share one build."""
        return repr(replace(self, proxy=replace(self.proxy, watch_dir="", config_dir="", cert_dir="", sds_socket="")))

    def spiffe(self, namespace: str, service_account: str) -> str:
        return f"spiffe://{self.trust_domain}/ns/{namespace}/sa/{service_account}"
