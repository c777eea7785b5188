"""The `dpumesh` command."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dpumesh import __version__
from dpumesh.errors import DpumeshError, InputError
from dpumesh.gcpause import keep_what_is_built
from dpumesh.lab.cli import add_lab_parser
from dpumesh.mesh_options import add_mesh_arguments, mesh_settings_from

EXIT_INPUT = 2


def load(args: argparse.Namespace, service_cidr: str):
    from dpumesh.state import load_live_state, load_state

    keep_what_is_built()  # the state and the compiled nodes live until the command ends
    return load_live_state(args.kubeconfig, service_cidr) if args.kubeconfig else load_state(args.state, service_cidr)


def cmd_compile(args: argparse.Namespace) -> int:
    from dpumesh.bundle import validate_with_envoy, write_trees
    from dpumesh.compiler import compile_node, compile_sidecar

    mesh = mesh_settings_from(args)
    state = load(args, mesh.service_cidr)
    if args.sidecar:
        bundles = [compile_sidecar(state, mesh, pod) for pod in args.sidecar]
        names = args.sidecar
    else:
        nodes = sorted(n.name for n in state.nodes.values() if n.has_dpu) if args.all_nodes else args.node
        bundles = [compile_node(state, mesh, node) for node in nodes]  # every node compiles before anything is written
        if not nodes:
            raise DpumeshError("the cluster state has no node labelled dpumesh.io/dpu=true")
        names = [b.node for b in bundles]
    out = Path(args.out)
    targets = {name: out / name if len(bundles) > 1 or args.all_nodes else out for name in names}

    def check(staged: Path) -> None:
        validate_with_envoy(staged, mesh.proxy.config_dir)

    # Envoy checks every node (side by side, one per core) before any directory is replaced.
    trees = {targets[name]: bundle.files for name, bundle in zip(names, bundles, strict=True)}
    changed = write_trees(trees, None if args.no_validate else check, os.cpu_count() or 1)
    for name, bundle in zip(names, bundles, strict=True):
        for warning in bundle.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        state_word = "written" if changed[targets[name]] else "unchanged"
        print(
            f"{name}: version {bundle.version} {state_word} in {targets[name]} "
            f"({bundle.stats['local_pods']} pods, {bundle.stats['classes']} classes, "
            f"{bundle.stats['filter_chains']} filter chains, {bundle.stats['clusters']} clusters)"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dpumesh", description="Sidecar-less Istio on DPUs.")
    parser.add_argument("--version", action="version", version=f"dpumesh {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    comp = sub.add_parser("compile", help="compile one node's shared dpu-proxy config")
    source = comp.add_mutually_exclusive_group(required=True)
    source.add_argument("--state", metavar="DIR", help="directory of Kubernetes + Istio YAML manifests")
    source.add_argument("--kubeconfig", metavar="FILE", help="read the state from a live cluster")
    which = comp.add_mutually_exclusive_group(required=True)
    which.add_argument("--node", action="append", metavar="NAME", help="node to compile (repeatable)")
    which.add_argument("--all-nodes", action="store_true", help="every node that carries a DPU")
    which.add_argument(
        "--sidecar",
        action="append",
        metavar="NS/POD",
        help="the config that pod's own Istio sidecar would need (a baseline to compare with; repeatable)",
    )
    comp.add_argument("--out", required=True, metavar="DIR", help="output directory (one subdirectory per node)")
    add_mesh_arguments(comp)
    comp.set_defaults(func=cmd_compile)

    images = sub.add_parser("images", help="list every image and chart to mirror for an air-gapped site")
    images.add_argument("--mirror", default="", help="registry mirror that rewrites every reference")
    images.add_argument("--format", choices=["text", "refs"], default="text", help="table, or one reference per line")
    images.add_argument(
        "--vars",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="inventory variables file whose downloads_overrides, dpumesh_registry_mirror and "
        "dpumesh_require_image_digests apply (repeatable; later files win)",
    )
    images.set_defaults(func=cmd_images)

    sds = sub.add_parser("sds", help="serve workload certificates to the node's dpu-proxy (SDS over gRPC)")
    sds.add_argument("--socket", required=True, metavar="PATH", help="Unix socket the proxy's bootstrap names")
    sds.add_argument("--cert-dir", required=True, metavar="DIR", help="certificate layout of the node (dpumesh.certs)")
    sds.add_argument("--poll-interval", type=float, default=1.0, metavar="S", help="how often to look for new files")
    sds.set_defaults(func=cmd_sds)

    add_lab_parser(sub)
    return parser


def cmd_sds(args: argparse.Namespace) -> int:
    from dpumesh import sds

    return sds.run(args.socket, args.cert_dir, args.poll_interval)


def cmd_images(args: argparse.Namespace) -> int:
    from dpumesh.k8s import images_report

    print(images_report(args.mirror, args.format, var_files=args.vars), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except InputError as exc:
        print(f"dpumesh: {len(exc.problems)} problem(s) in the input, nothing written:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_INPUT
    except DpumeshError as exc:
        print(f"dpumesh: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
