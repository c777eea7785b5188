"""Compile the shared dpu-proxy config of every node of a play batch once, on the controller.

Ansible runs each host's action in a worker process of its own, so compiling per host pays the state load
and the first node's validation on every host. Run once for the batch (run_once), this action loads each
state once, compiles every node through the package's compile_node (nodes with the same mesh settings share
the compiler's per-state cache), and writes each bundle into a private build directory that the per-host
dpumesh_proxy_config step sends from. A problem in the state fails it before any node received anything.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import tempfile
from collections import defaultdict

from ansible import constants as C
from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

BUILD_PREFIX = "dpumesh-build-"
_TARGET_KEYS = frozenset(("host", "node", "state_dir", "kubeconfig", "mesh", "root", "cert_dir"))


def _check_target(target: object) -> None:
    if not isinstance(target, dict):
        raise AnsibleActionFail(f"dpumesh_compile: each target is a dict, got {target!r}")
    host = target.get("host") or "?"
    unknown = sorted(set(target) - _TARGET_KEYS)
    if unknown:
        raise AnsibleActionFail(f"dpumesh_compile: target {host}: unknown keys {unknown}")
    for required in ("host", "node", "root"):
        if not target.get(required):
            raise AnsibleActionFail(f"dpumesh_compile: target {host}: '{required}' is required")
    if os.sep in host or host.startswith("."):  # the host's bundle directory is named after it
        raise AnsibleActionFail(f"dpumesh_compile: target {host}: a host name cannot hold '/' or start with '.'")
    if bool(target.get("state_dir")) == bool(target.get("kubeconfig")):
        raise AnsibleActionFail(f"dpumesh_compile: target {host}: give exactly one of state_dir or kubeconfig")


def _mesh_settings(target: dict):
    """The compiler's settings for one target: its mesh options and its SoC's paths."""
    from dataclasses import fields

    from dpumesh.compiler import MeshSettings, ProxyLayout
    from dpumesh.errors import InputError

    options = target.get("mesh") or {}
    known = {f.name for f in fields(MeshSettings)} - {"proxy"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise AnsibleActionFail(
            f"dpumesh_compile: target {target['host']}: unknown mesh settings {unknown} (known: {sorted(known)})"
        )
    layout = ProxyLayout().under(target["root"], target.get("cert_dir") or "")
    try:
        return MeshSettings(**options, proxy=layout).validate()
    except (InputError, TypeError) as exc:  # TypeError: a value of the wrong type, e.g. a string for a number
        raise AnsibleActionFail(f"dpumesh_compile: target {target['host']}: mesh settings: {exc}") from None


def _load(source: tuple[str, str], service_cidr: str):
    from dpumesh.gcpause import keep_what_is_built
    from dpumesh.state import load_live_state, load_state

    kind, where = source
    keep_what_is_built()  # as the CLI does: this worker process ends once the batch is compiled
    return load_live_state(where, service_cidr) if kind == "kubeconfig" else load_state(where, service_cidr)


def _source(target: dict) -> tuple[str, str]:
    return ("kubeconfig", target["kubeconfig"]) if target.get("kubeconfig") else ("state_dir", target["state_dir"])


def compile_batch(targets: list[dict], build: str) -> dict:
    """Compile every target into build/<host>; returns what the result reports. Raises DpumeshError."""
    from dpumesh.bundle import write_tree
    from dpumesh.compiler import compile_node
    from dpumesh.errors import DpumeshError, InputError

    # state source -> mesh settings -> targets: one load per state, one compiler cache per settings group.
    groups: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for target in targets:
        mesh = _mesh_settings(target)
        groups[(_source(target), mesh.service_cidr)][mesh.shared_key()].append((target, mesh))
    bundles, warnings = {}, {}
    for (source, service_cidr), by_settings in groups.items():
        problems = f"the cluster state ({source[0]} {source[1]}) has problems:"
        try:
            state = _load(source, service_cidr)
        except InputError as exc:
            raise DpumeshError(f"{problems}\n{exc}") from None
        for index, members in enumerate(by_settings.values()):
            if index:
                # The compiler's cache of the settings group before is never read again; it is cyclic, so
                # only a collection frees it: memory stays one group's worth, not one per group.
                state.derived.clear()
                gc.unfreeze()  # what the last group built was frozen with the state (keep_what_is_built)
                gc.collect()
            for target, mesh in members:
                try:
                    bundle = compile_node(state, mesh, target["node"])
                except InputError as exc:
                    raise DpumeshError(f"{problems}\n{exc}") from None
                except DpumeshError as exc:
                    raise DpumeshError(f"{target['host']} (node {target['node']}): {exc}") from None
                write_tree(os.path.join(build, target["host"]), bundle.files)
                bundles[target["host"]] = {"node": bundle.node, "version": bundle.version, "stats": bundle.stats}
                warnings |= dict.fromkeys(str(w) for w in bundle.warnings)
        del state  # a later state group does not hold this one in memory too
    return {
        "bundles": bundles,
        "state_loads": len(groups),
        "setting_groups": sum(len(by_settings) for by_settings in groups.values()),
        "warnings": list(warnings),
    }


def _remove(path: str) -> None:
    """Remove a build directory this run made, and nothing else."""
    real = os.path.realpath(path)
    if os.path.dirname(real) != os.path.realpath(C.DEFAULT_LOCAL_TMP) or not os.path.basename(real).startswith(
        BUILD_PREFIX
    ):
        raise AnsibleActionFail(f"dpumesh_compile: {path} is not a build directory of this run")
    shutil.rmtree(real, ignore_errors=True)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False  # everything happens on the controller
    _VALID_ARGS = frozenset(("targets", "remove"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        # Plain Python types: the compiler dumps YAML, which refuses Ansible's tagged strings.
        args = json.loads(json.dumps(dict(self._task.args)))
        if bool(args.get("targets")) == bool(args.get("remove")):
            raise AnsibleActionFail("dpumesh_compile: give exactly one of targets (a non-empty list) or remove")
        result["changed"] = False  # the build directory is the controller's scratch space, no managed state
        if args.get("remove"):
            _remove(args["remove"])
            return result
        # Failures are a result, not a raise, so that failed_when sees them (the role fails every host with it).
        try:
            result.update(self._build(args["targets"]))
        except AnsibleActionFail as exc:
            result.update(failed=True, msg=str(exc))
        return result

    def _build(self, targets: object) -> dict:
        from dpumesh.errors import DpumeshError

        if not isinstance(targets, list):
            raise AnsibleActionFail("dpumesh_compile: targets is a list of dicts")
        for target in targets:
            _check_target(target)
        hosts = [t["host"] for t in targets]
        if len(set(hosts)) != len(hosts):
            raise AnsibleActionFail(f"dpumesh_compile: hosts named twice in targets: {hosts}")
        # Built under a temporary name (mode 0700) and renamed once every node is written: a build
        # directory handed out is complete. Inside Ansible's local tmp, so even an aborted run removes it.
        staging = tempfile.mkdtemp(prefix=f".{BUILD_PREFIX}", dir=C.DEFAULT_LOCAL_TMP)
        try:
            done = compile_batch(targets, staging)
            build = os.path.join(os.path.dirname(staging), os.path.basename(staging)[1:])
            os.rename(staging, build)
        except DpumeshError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise AnsibleActionFail(
                f"{exc}\nnothing was pushed to any node of this batch ({', '.join(hosts)})"
            ) from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        for host, bundle in done["bundles"].items():
            bundle["path"] = os.path.join(build, host)
        return {"build_dir": build, **done}
