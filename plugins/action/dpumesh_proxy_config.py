"""Compile a node's shared dpu-proxy config on the controller and activate it on the DPU SoC.

The compiler is the dpumesh package (one implementation); this plugin only
moves its output: a tar.gz to the target, then the dpumesh_activate module.
"""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile
import tempfile
import time

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

_STATE_CACHE: dict[tuple, object] = {}


def _load_state(state_dir: str | None, kubeconfig: str | None, service_cidr: str):
    from dpumesh.state import load_live_state, load_state

    if kubeconfig:
        return load_live_state(kubeconfig, service_cidr)
    stamp = max((os.stat(os.path.join(d, f)).st_mtime for d, _, fs in os.walk(state_dir) for f in fs), default=0)
    key = (state_dir, stamp, service_cidr)
    if key not in _STATE_CACHE:  # one load per play, not per host
        _STATE_CACHE.clear()
        _STATE_CACHE[key] = load_state(state_dir, service_cidr)
    return _STATE_CACHE[key]


def _archive(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for rel in sorted(files):
            info = tarfile.TarInfo(rel)
            info.size, info.mtime, info.mode = len(files[rel]), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(files[rel]))
    return buf.getvalue()


def _health_args(health: dict) -> dict:
    """The dpumesh_activate options of the post-swap health check (see its documentation)."""
    unknown = sorted(set(health) - {"enabled", "admin_url", "netns", "probe_command", "timeout"})
    if unknown:
        raise AnsibleActionFail(f"dpumesh_proxy_config: health has unknown keys {unknown}")
    out = {"health_check": bool(health.get("enabled", False))}
    for key, option in (("admin_url", "admin_url"), ("netns", "netns"), ("probe_command", "probe_command")):
        if health.get(key):
            out[option] = health[key]
    if health.get("timeout"):
        out["health_timeout"] = float(health["timeout"])
    return out


class ActionModule(ActionBase):
    TRANSFERS_FILES = True
    _VALID_ARGS = frozenset(
        ("node", "state_dir", "kubeconfig", "mesh", "root", "cert_dir", "keep", "validate_command", "health")
    )

    def run(self, tmp=None, task_vars=None):
        from dpumesh.bridges import CDS, LDS, bridges
        from dpumesh.compiler import MeshSettings, ProxyLayout, compile_node
        from dpumesh.errors import DpumeshError, InputError

        result = super().run(tmp, task_vars)
        # Plain Python types: the compiler dumps YAML, which refuses Ansible's tagged strings.
        args = json.loads(json.dumps(dict(self._task.args)))
        for required in ("node", "root"):
            if not args.get(required):
                raise AnsibleActionFail(f"dpumesh_proxy_config: '{required}' is required")
        if bool(args.get("state_dir")) == bool(args.get("kubeconfig")):
            raise AnsibleActionFail("dpumesh_proxy_config: give exactly one of state_dir or kubeconfig")
        health = _health_args(args.get("health") or {})
        try:
            root = args["root"]
            layout = ProxyLayout(
                watch_dir=root, config_dir=f"{root}/current/envoy", cert_dir=args.get("cert_dir") or f"{root}/../certs"
            )
            mesh = MeshSettings(**(args.get("mesh") or {}), proxy=layout)
            state = _load_state(args.get("state_dir"), args.get("kubeconfig"), mesh.service_cidr)
            bundle = compile_node(state, mesh, args["node"])
        except InputError as exc:
            raise AnsibleActionFail("the cluster state has problems, nothing was pushed:\n" + str(exc)) from None
        except (DpumeshError, TypeError) as exc:
            raise AnsibleActionFail(f"dpumesh_proxy_config: {exc}") from None

        result.update(version=bundle.version, stats=bundle.stats, warnings=[str(w) for w in bundle.warnings])
        # The version is the hash of the config: the same version active on the target means nothing to send
        # (dpumesh_activate would change nothing either), so an unchanged node costs one remote call.
        if self._remote_version(root, task_vars) == bundle.version:
            result.update(changed=False, current=bundle.version)
            return result
        before = self._remote_text(f"{root}/current/describe.txt", task_vars)
        after = bundle.files["describe.txt"].decode()
        if self._task.diff and before != after:
            result["diff"] = {
                "before": before,
                "after": after,
                "before_header": f"{root}/current",
                "after_header": f"version {bundle.version}",
            }
        # Make before break: the target's current listeners and clusters decide the bridges (see dpumesh.bridges).
        served = {rel: self._remote_text(f"{root}/current/{rel}", task_vars).encode() for rel in (LDS, CDS)}
        steps = bridges(served, bundle.files, bundle.version) if all(served.values()) else []
        tmp_dir = self._make_tmp_path()
        archives = {"bundle.tar.gz": bundle.files}
        archives |= {f"{version}.tar.gz": {rel: files[rel] for rel in (LDS, CDS)} for version, files in steps}
        local = {}
        try:
            for name, files in archives.items():
                with tempfile.NamedTemporaryFile(suffix=".tar.gz", delete=False) as handle:
                    handle.write(_archive(files))
                local[name] = handle.name
            remote = {name: self._connection._shell.join_path(tmp_dir, name) for name in archives}
            if not self._task.check_mode:
                for name in archives:
                    self._transfer_file(local[name], remote[name])
                self._fixup_perms2((tmp_dir, *remote.values()))
            module_args = {
                "root": root,
                "archive": remote["bundle.tar.gz"],
                "version": bundle.version,
                "keep": args.get("keep", 5),
                "validate_command": args.get("validate_command") or [],
                "bridges": [{"version": version, "archive": remote[f"{version}.tar.gz"]} for version, _ in steps],
                **health,
            }
            activated = self._execute_module("dpumesh_activate", module_args=module_args, task_vars=task_vars)
        finally:
            for path in local.values():
                os.unlink(path)
            self._remove_tmp_path(tmp_dir)
        if activated.get("failed"):
            reason = activated.get("msg") or activated.get("module_stderr") or activated.get("module_stdout")
            result.update(failed=True, msg=f"node {args['node']}: activating on the target failed: {reason}")
            result.update(changed=activated.get("changed", False), rolled_back=activated.get("rolled_back", False))
            return result
        result.update(changed=activated.get("changed", False), current=activated.get("current"))
        return result

    def _remote_version(self, root: str, task_vars) -> str | None:
        """The version `current` points at on the target (as dpumesh_activate reads it), or None."""
        found = self._execute_module(
            "ansible.builtin.stat",
            module_args={"path": f"{root}/current", "get_checksum": False, "get_mime": False, "get_attributes": False},
            task_vars=task_vars,
        )
        stat = found.get("stat") or {}
        return os.path.basename(stat["lnk_target"]) if stat.get("islnk") and stat.get("lnk_target") else None

    def _remote_text(self, path: str, task_vars) -> str:
        slurped = self._execute_module("ansible.builtin.slurp", module_args={"src": path}, task_vars=task_vars)
        if slurped.get("failed"):
            return ""
        return base64.b64decode(slurped["content"]).decode()
