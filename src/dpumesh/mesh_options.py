"""Mesh settings on the command line: the options `compile` and `lab apply` share."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from dpumesh.errors import DpumeshError


def add_mesh_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mesh-config", metavar="FILE", help="YAML of mesh settings (trust_domain, network_mode, ...)")
    parser.add_argument("--trust-domain")
    parser.add_argument("--outbound-traffic-policy", choices=["ALLOW_ANY", "REGISTRY_ONLY"])
    parser.add_argument("--network-mode", choices=["underlay", "overlay"])
    parser.add_argument("--root-namespace")
    parser.add_argument("--cluster-domain")
    parser.add_argument("--strict", action="store_true", help="treat what Istio only warns about as errors")
    parser.add_argument("--no-validate", action="store_true", help="skip `envoy --mode validate`")


def mesh_settings_from(args: argparse.Namespace):
    from dpumesh.compiler.settings import MeshSettings

    values: dict = {}
    if args.mesh_config:
        try:
            values = yaml.safe_load(Path(args.mesh_config).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise DpumeshError(f"cannot read mesh settings {args.mesh_config}: {exc}") from exc
        known = set(MeshSettings.__dataclass_fields__) - {"proxy"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise DpumeshError(f"{args.mesh_config}: unknown mesh settings {unknown} (known: {sorted(known)})")
    for key in ("trust_domain", "outbound_traffic_policy", "network_mode", "root_namespace", "cluster_domain"):
        if getattr(args, key, None):
            values[key] = getattr(args, key)
    if args.strict:
        values["strict"] = True
    return MeshSettings(**values)
