"""Validate one component's Kubernetes objects and, in render mode, write them into a directory.

Validation (dpumesh.k8s.validate, every object against each Kubernetes version) is the costly part of
rendering. Each render records a fingerprint of its inputs next to the files (the file contents, the
versions, and the validator's own code and libraries). When the recorded fingerprint is this run's and the
directory holds exactly these files, the same objects passed the same validator before: the check is
dpumesh_k8s_render_dir's verify_only comparison (in this process when the target is the controller), and
nothing is validated or written. A changed input, a
changed validator, a missing, edited or extra file, or check mode takes the full path (validate, then
write with diff). Without ``path`` the objects are only validated (apply mode).
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from importlib import metadata
from pathlib import Path

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from dpumesh.inprocess import is_controller, module_file

RENDER_MODULE = "dpumesh_k8s_render_dir"


@cache
def validator_digest() -> str:
    """The dpumesh.k8s sources and the versions of the libraries validation uses."""
    import dpumesh.k8s

    digest = hashlib.sha256()
    for source in sorted(Path(dpumesh.k8s.__file__).parent.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
    for library in ("kubernetes-validate", "jsonschema", "PyYAML"):
        digest.update(f"{library}={metadata.version(library)}\0".encode())
    return digest.hexdigest()


def fingerprint(files: list[dict[str, str]], versions: list[str]) -> str:
    inputs = {"files": files, "versions": versions, "validator": validator_digest()}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


class ActionModule(ActionBase):
    _VALID_ARGS = frozenset(("component", "objects", "kubernetes_versions", "path"))

    def run(self, tmp=None, task_vars=None):
        from dpumesh.k8s.manifests import plain, render_files

        result = super().run(tmp, task_vars)
        args = plain(dict(self._task.args))  # plain types: the YAML dumper refuses Ansible's tagged strings
        component, objects = args.get("component"), args.get("objects")
        versions = [str(v) for v in args.get("kubernetes_versions") or []]
        if not component or not isinstance(objects, list) or not versions:
            raise AnsibleActionFail(
                "dpumesh_k8s_manifests: 'component', 'objects' (a list) and 'kubernetes_versions' are required"
            )
        result["component"] = component
        files = render_files(objects) if args.get("path") else []
        render = {"path": args.get("path"), "files": files, "fingerprint": fingerprint(files, versions)}
        if args.get("path") and not self._task.check_mode:
            verified = self._verify(render, task_vars)
            if verified.get("failed") or verified.get("verified"):
                return {**result, **verified, "validated": False}
        from dpumesh.k8s.validate import validate_manifests  # the schemas' libraries: only once a check needs them

        problems = validate_manifests(objects, versions)
        if problems:
            result.update(failed=True, msg=f"{component}: rendered manifests are invalid:\n- " + "\n- ".join(problems))
            return result
        if not args.get("path"):
            return {**result, "changed": False, "validated": True}
        written = self._execute_module(RENDER_MODULE, render, task_vars=task_vars)
        return {**result, **written, "validated": True}

    def _verify(self, render: dict, task_vars) -> dict:
        """The render module's verify_only result. A target that is the controller itself (local connection,
        no become) is checked in this process with the module's own function: starting a module costs more
        than the check."""
        if not is_controller(self._connection.transport, self._play_context.become):
            return self._execute_module(RENDER_MODULE, {**render, "verify_only": True}, task_vars=task_vars)
        module = module_file(self._shared_loader_obj.module_loader.find_plugin(RENDER_MODULE))
        return module.verify(render["path"], render["files"], render["fingerprint"])
