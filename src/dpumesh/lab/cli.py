"""`dpumesh lab ...`: apply, status, exec, logs, down (and the supervisor daemon)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from dpumesh.errors import DpumeshError
from dpumesh.lab import paths
from dpumesh.mesh_options import add_mesh_arguments, mesh_settings_from


def add_lab_parser(subparsers: Any) -> None:
    lab = subparsers.add_parser("lab", help="the emulated DPU lab on this machine (needs root)")
    sub = lab.add_subparsers(dest="lab_command", required=True)

    apply = sub.add_parser("apply", help="make the lab match a state directory (create, remove, re-place, push)")
    apply.add_argument("state_dir", nargs="?", help="directory of Kubernetes + Istio YAML (default: the last one)")
    add_mesh_arguments(apply)
    apply.add_argument(
        "--envoy",
        metavar="PATH",
        help="Envoy binary for the dpu-proxies (default: the one they run, else the venv's); a new one takes over "
        "side by side, with hot restart",
    )
    apply.add_argument("--status", action="store_true", help="print `dpumesh lab status` afterwards")
    apply.set_defaults(func=cmd_apply)

    status = sub.add_parser("status", help="nodes, pods, VFs, proxy health and config versions")
    status.add_argument("--json", action="store_true", help="machine-readable: nodes, proxies, pods, mode")
    status.set_defaults(func=cmd_status)

    execute = sub.add_parser("exec", help="run a command in a pod's network namespace, with its name resolution")
    execute.add_argument("pod", metavar="NS/POD")
    execute.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ...")
    execute.set_defaults(func=cmd_exec)

    logs = sub.add_parser("logs", help="the request log of a pod's workload")
    logs.add_argument("pod", metavar="NS/POD")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.set_defaults(func=cmd_logs)

    down = sub.add_parser("down", help="remove everything the lab created (idempotent)")
    down.add_argument(
        "--all",
        action="store_true",
        help="also remove every dpumesh-* network namespace and /etc/netns/dpumesh-* directory, recorded or not "
        "(a lab whose runtime directory is lost; namespaces of others named so go too)",
    )
    down.set_defaults(func=cmd_down)

    supervise = sub.add_parser("supervise", help=argparse.SUPPRESS)
    supervise.set_defaults(func=cmd_supervise)


def _pod_ref(text: str) -> tuple[str, str]:
    namespace, _, name = text.partition("/")
    if not namespace or not name:
        raise DpumeshError(f"{text!r}: name the pod as NAMESPACE/POD")
    from dpumesh.lab.apply import read_lab_state

    if f"{namespace}/{name}" not in read_lab_state().get("pods", {}):
        raise DpumeshError(f"pod {namespace}/{name} is not in the lab (see `dpumesh lab status`)")
    return namespace, name


def cmd_apply(args: argparse.Namespace) -> int:
    from dpumesh.lab.apply import lab_apply, read_lab_state

    previous = read_lab_state()
    state_dir = args.state_dir or previous.get("state_dir")
    if not state_dir:
        raise DpumeshError("name the state directory: dpumesh lab apply DIR")
    if not args.network_mode and not args.mesh_config and previous.get("network_mode"):
        args.network_mode = previous["network_mode"]
    mesh = mesh_settings_from(args)
    started = time.monotonic()
    envoy = os.path.abspath(args.envoy) if args.envoy else None
    result = lab_apply(state_dir, mesh, validate=not args.no_validate, envoy=envoy)
    for change in result.changes:
        print(f"changed: {change}")
    versions = ", ".join(f"{node} {version}" for node, version in sorted(result.versions.items()))
    word = "changed" if result.changes else "unchanged"
    print(f"lab {word}; proxies serve {versions} ({time.monotonic() - started:.1f} s)")
    if args.status:
        print()
        return cmd_status(argparse.Namespace(json=False))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from dpumesh.lab.status import print_status

    return print_status(as_json=args.json)


def cmd_exec(args: argparse.Namespace) -> int:
    namespace, name = _pod_ref(args.pod)
    command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not command:
        raise DpumeshError("give the command to run after --")
    netns = paths.pod_netns(namespace, name)
    sys.stdout.flush()
    os.execvp("ip", ["ip", "netns", "exec", netns, *command])  # replaces this process: nothing left behind
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    namespace, name = _pod_ref(args.pod)
    log = paths.logs_dir() / "pods" / namespace / f"{name}.log"
    if not log.is_file():
        raise DpumeshError(f"no log yet for {namespace}/{name} ({log})")
    if args.follow:
        os.execvp("tail", ["tail", "-n", "+1", "-F", str(log)])
    sys.stdout.write(log.read_text(errors="replace"))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from dpumesh.lab.apply import lab_down

    removed = lab_down(every_lab_namespace=args.all)
    for item in removed:
        print(f"removed: {item}" if not item.startswith("removed") else item)
    print("lab is down" if removed else "lab was already down")
    return 0


def cmd_supervise(args: argparse.Namespace) -> int:
    from dpumesh.lab.supervisor import run_supervisor

    return run_supervisor()
