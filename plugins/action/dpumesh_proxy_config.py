"""Send a node's compiled shared dpu-proxy config to its DPU SoC and activate it there.

The config is compiled beforehand, for the whole play batch at once, by the dpumesh_compile action (over the
dpumesh package); this plugin only moves one bundle of that build: a tar.gz to the target, then the
dpumesh_activate module.
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

from dpumesh.inprocess import is_controller


def _read_bundle(path: str) -> tuple[dict, dict[str, bytes]]:
    """The manifest and files of a bundle directory dpumesh_compile wrote."""
    try:
        with open(os.path.join(path, "MANIFEST.json"), encoding="utf-8") as handle:
            manifest = json.load(handle)
        files = {}
        for rel in manifest["files"]:
            with open(os.path.join(path, rel), "rb") as handle:
                files[rel] = handle.read()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AnsibleActionFail(f"dpumesh_proxy_config: {path} is not a bundle dpumesh_compile wrote: {exc}") from None
    return manifest, files


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
    _VALID_ARGS = frozenset(("bundle", "root", "keep", "validate_command", "health"))

    def run(self, tmp=None, task_vars=None):
        from dpumesh.bridges import CDS, LDS, bridges

        result = super().run(tmp, task_vars)
        args = json.loads(json.dumps(dict(self._task.args)))
        for required in ("bundle", "root"):
            if not args.get(required):
                raise AnsibleActionFail(f"dpumesh_proxy_config: '{required}' is required")
        health = _health_args(args.get("health") or {})
        root = args["root"]
        manifest, files = _read_bundle(args["bundle"])
        node, version = manifest["node"], manifest["version"]
        result.update(node=node, version=version, stats=manifest.get("stats", {}))
        # The version is the hash of the config: the same version active on the target means nothing to send
        # (dpumesh_activate would change nothing either), so an unchanged node costs one remote call.
        if self._remote_version(root, task_vars) == version:
            result.update(changed=False, current=version)
            return result
        before = self._remote_text(f"{root}/current/describe.txt", task_vars)
        after = files["describe.txt"].decode()
        if self._task.diff and before != after:
            result["diff"] = {
                "before": before,
                "after": after,
                "before_header": f"{root}/current",
                "after_header": f"version {version}",
            }
        # Make before break: the target's current listeners and clusters decide the bridges (see dpumesh.bridges).
        served = {rel: self._remote_text(f"{root}/current/{rel}", task_vars).encode() for rel in (LDS, CDS)}
        steps = bridges(served, files, version) if all(served.values()) else []
        tmp_dir = self._make_tmp_path()
        archives = {"bundle.tar.gz": files}
        archives |= {f"{step}.tar.gz": {rel: step_files[rel] for rel in (LDS, CDS)} for step, step_files in steps}
        local = {}
        try:
            for name, content in archives.items():
                with tempfile.NamedTemporaryFile(suffix=".tar.gz", delete=False) as handle:
                    handle.write(_archive(content))
                local[name] = handle.name
            remote = {name: self._connection._shell.join_path(tmp_dir, name) for name in archives}
            if not self._task.check_mode:
                for name in archives:
                    self._transfer_file(local[name], remote[name])
                self._fixup_perms2((tmp_dir, *remote.values()))
            module_args = {
                "root": root,
                "archive": remote["bundle.tar.gz"],
                "version": version,
                "keep": args.get("keep", 5),
                "validate_command": args.get("validate_command") or [],
                "bridges": [{"version": step, "archive": remote[f"{step}.tar.gz"]} for step, _ in steps],
                **health,
            }
            activated = self._execute_module("dpumesh_activate", module_args=module_args, task_vars=task_vars)
        finally:
            for path in local.values():
                os.unlink(path)
            self._remove_tmp_path(tmp_dir)
        if activated.get("failed"):
            reason = activated.get("msg") or activated.get("module_stderr") or activated.get("module_stdout")
            result.update(failed=True, msg=f"node {node}: activating on the target failed: {reason}")
            result.update(changed=activated.get("changed", False), rolled_back=activated.get("rolled_back", False))
            return result
        result.update(changed=activated.get("changed", False), current=activated.get("current"))
        return result

    def _remote_version(self, root: str, task_vars) -> str | None:
        """The version `current` points at on the target (as dpumesh_activate reads it), or None. A target that
        is the controller itself (local connection, no become) is read in this process: starting a module costs
        more than reading a symlink."""
        if is_controller(self._connection.transport, self._play_context.become):
            current = os.path.join(root, "current")
            return os.path.basename(os.readlink(current)) if os.path.islink(current) else None
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
