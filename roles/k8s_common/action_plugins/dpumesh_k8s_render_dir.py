"""Run the dpumesh_k8s_render_dir module, unless the target is the controller itself and nothing would change.

On a target that is the controller (local connection, no become) the directory is compared in this process
with the module's own functions, after the module's own argument checks: when it already holds exactly the
files (and the fingerprint, when one is given), the result is the module's "unchanged" answer and no module
starts (starting one costs more than the comparison). Anything to write or remove, and every other target,
runs the module.
"""

from __future__ import annotations

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

from dpumesh.inprocess import is_controller, module_file

MODULE = "dpumesh_k8s_render_dir"


class ActionModule(ActionBase):
    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if is_controller(self._connection.transport, self._play_context.become):
            module = module_file(self._shared_loader_obj.module_loader.find_plugin(MODULE))
            checked = ArgumentSpecValidator(module.ARGUMENT_SPEC).validate(dict(self._task.args))
            if checked.error_messages:
                return {**result, "failed": True, "msg": f"{MODULE}: " + "; ".join(checked.error_messages)}
            params = checked.validated_parameters
            path, fingerprint, prune_glob = params["path"], params["fingerprint"], params["prune_glob"]
            try:
                wanted = module.wanted_files(params["files"])
            except ValueError as exc:
                return {**result, "failed": True, "msg": str(exc)}
            if params["verify_only"]:
                return {**result, **module.verify(path, params["files"], fingerprint, prune_glob)}
            done = module.unchanged(path, wanted, fingerprint, prune_glob)
            if done is not None:
                return {**result, **done}
        return {**result, **self._execute_module(MODULE, task_vars=task_vars)}
