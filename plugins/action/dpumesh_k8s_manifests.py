"""Validate Kubernetes objects, component by component, and in render mode write each into its directory.

Arguments: ``components`` (a list of ``{component, objects}``), ``kubernetes_versions`` and, in render mode,
``render_dir`` (each component is written into ``<render_dir>/<component>``; without it, apply mode, the
objects are only validated). Every component that is not verified is validated before any is written, so an
invalid one leaves the others as they were. The result gives each component's own result under
``components`` and their diffs together.

Validation (dpumesh.k8s.validate, every object against each Kubernetes version) is the costly part of
rendering. Each render records a fingerprint of its inputs next to the files (the file contents, the
versions, and the validator's own code and libraries). When the recorded fingerprint is this run's and the
directory holds exactly these files, the same objects passed the same validator before: the check is
dpumesh_k8s_render_dir's verify_only comparison (in this process when the target is the controller), and
nothing is validated or written. A changed input, a changed validator, a missing, edited or extra file, or
check mode takes the full path (validate, then write with diff).
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
    _VALID_ARGS = frozenset(("components", "kubernetes_versions", "render_dir"))

    def run(self, tmp=None, task_vars=None):
        from dpumesh.k8s.manifests import plain

        result = super().run(tmp, task_vars)
        args = plain(dict(self._task.args))  # plain types: the YAML dumper refuses Ansible's tagged strings
        versions = [str(v) for v in args.get("kubernetes_versions") or []]
        components, render_dir = args.get("components"), args.get("render_dir")
        if (
            not isinstance(components, list)
            or not versions
            or not all(
                isinstance(c, dict) and c.get("component") and isinstance(c.get("objects"), list) for c in components
            )
        ):
            raise AnsibleActionFail(
                "dpumesh_k8s_manifests: 'components' (a list of {component, objects (a list)}) and "
                "'kubernetes_versions' are required"
            )
        components = [{**c, "path": f"{render_dir}/{c['component']}" if render_dir else None} for c in components]
        done = self._components(components, versions, task_vars)
        failed = [d for d in done if d.get("failed")]
        return {
            **result,
            "changed": any(d.get("changed") for d in done),
            "components": [{k: v for k, v in d.items() if k != "diff"} for d in done],
            "diff": [diff for d in done for diff in _diffs(d.get("diff"))],
            **({"failed": True, "msg": "\n".join(d["msg"] for d in failed)} if failed else {}),
        }

    def _components(self, components: list[dict], versions: list[str], task_vars) -> list[dict]:
        """Each component's result: verified (render mode, unchanged), invalid, or validated and written."""
        from dpumesh.k8s.manifests import render_files

        done: list[dict] = []
        pending = []
        for entry in components:
            component, objects, path = entry["component"], entry["objects"], entry.get("path")
            files = render_files(objects) if path else []
            render = {"path": path, "files": files, "fingerprint": fingerprint(files, versions)}
            if path and not self._task.check_mode:
                verified = self._verify(render, task_vars)
                if verified.get("failed") or verified.get("verified"):
                    done.append({"component": component, **verified, "validated": False})
                    continue
            done.append({"component": component})
            pending.append((done[-1], objects, render))
        if pending:
            from dpumesh.k8s.validate import validate_manifests  # the schemas' libraries: only once a check needs them

        invalid = False
        for entry, objects, _ in pending:
            problems = validate_manifests(objects, versions)
            if problems:
                invalid = True
                msg = f"{entry['component']}: rendered manifests are invalid:\n- " + "\n- ".join(problems)
                entry.update(failed=True, msg=msg)
        if invalid or any(d.get("failed") for d in done):
            return done
        for entry, _, render in pending:
            if not render["path"]:
                entry.update(changed=False, validated=True)
                continue
            written = self._execute_module(RENDER_MODULE, render, task_vars=task_vars)
            entry.update({**written, "validated": True})
            if written.get("failed"):
                break
        return done

    def _verify(self, render: dict, task_vars) -> dict:
        """The render module's verify_only result. A target that is the controller itself (local connection,
        no become) is checked in this process with the module's own function: starting a module costs more
        than the check."""
        if not is_controller(self._connection.transport, self._play_context.become):
            return self._execute_module(RENDER_MODULE, {**render, "verify_only": True}, task_vars=task_vars)
        module = module_file(self._shared_loader_obj.module_loader.find_plugin(RENDER_MODULE))
        return module.verify(render["path"], render["files"], render["fingerprint"])


def _diffs(diff) -> list:
    if not diff:
        return []
    return diff if isinstance(diff, list) else [diff]
